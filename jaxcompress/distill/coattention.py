"""DMAD co-attention distillation and discriminator-feature distillation.

DMAD (Li et al., "Learning Efficient GANs for Image Translation via Differentiable Masks and
co-Attention Distillation", arXiv 2011.08382, co-attention distillation) fine-tunes a pruned
generator against a pretrained full model. The student's spatial attention at a generator layer is
matched to a target mixing the teacher generator's attention at the same layer with the attention of
the teacher discriminator on the student's own output (official `SJLeo/DMAD`, `models/CycleGAN.py`
`distill_attention_loss`, `utils/util.py` `attention_loss` / `mixup_attention`).

Official CycleGAN use (what `co_attention_loss` is one term of): the plain sum (weight 1 per
term, no averaging) over the 4 hooked generator layers (after the second downsampling ReLU and
after residual blocks 3, 6, 9: taps "down2", "res3", "res6", "res9" of
`jaxcompress.models.cyclegan.ResnetGenerator`) and both directions of
`co_attention_loss(S_AtoB[l], T_AtoB[l], D_A) + co_attention_loss(S_BtoA[l], T_BtoA[l], D_B)`,
where D_A is the teacher discriminator's feature after its second conv's LeakyReLU ("hidden1")
on the student's fake B; the total is weighted by 100 (CycleGAN) or 10 (Pix2Pix).

Example:
  >>> f = jnp.ones((2, 8, 8, 4))
  >>> co_attention_loss(f, f, f)   # 0.0
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcompress.distill.attention import normalize_rows

Array = jax.Array


def spatial_attention(f: jax.typing.ArrayLike) -> Array:
  """Spatial attention of an NHWC feature, not normalised (official `f.pow(2).mean(1)`).

  Args:
    f: features of shape (N, H, W, C).

  Returns:
    `mean_c f**2` of shape (N, H, W), dtype of `f`.

  Raises:
    ValueError: when `f` is not 4-D.
  """
  f = jnp.asarray(f)
  if f.ndim != 4:
    raise ValueError(f"spatial_attention expects NHWC features (4-D), got shape {f.shape}.")
  return jnp.mean(jnp.square(f), axis=-1)


def co_attention_loss(student_f: jax.typing.ArrayLike, teacher_f: jax.typing.ArrayLike,
                      disc_f: jax.typing.ArrayLike, normalize: bool = True) -> Array:
  """DMAD co-attention loss of one generator layer (arXiv 2011.08382, co-attention distillation).

  Target `T = 0.5 A(teacher_f) + 0.5 A(disc_f)` (official `mixup_attention` with weights 0.5,
  0.5), student map `S = A(student_f)`, `A = spatial_attention`. With `normalize` (the official
  default `attention_normal`), T and S are flattened per sample row-major over (H, W) and each
  divided by `max(||row||_2, 1e-12)` (`F.normalize`, as `attention_map`); the loss is the mean
  over N*H*W of the squared difference. Without it, the mean of `(T - S)**2`.

  Nothing is stopped here: the gradient reaches `student_f` and `disc_f`. The official target's
  discriminator half is not detached, so the gradient runs through the frozen teacher
  discriminator into the student generator that produced the fake; detaching it changes the
  method. Callers pass `jax.lax.stop_gradient(teacher_f)`.

  Args:
    student_f: student generator features (N, H, W, Cs).
    teacher_f: teacher generator features at the same layer (N, H, W, Ct).
    disc_f: teacher discriminator features on the student's output (N, H, W, Cd).
    normalize: L2-normalise each sample's maps before comparing them.

  Returns:
    A scalar in the promoted dtype of the features.

  Raises:
    ValueError: when the features are not 4-D or do not share N, H and W.
  """
  maps = [spatial_attention(f) for f in (student_f, teacher_f, disc_f)]
  shapes = [m.shape for m in maps]
  if len(set(shapes)) != 1:
    raise ValueError(
        "co_attention_loss: student, teacher and discriminator features must share N, H, W "
        f"(channels may differ); got (N, H, W) = {shapes[0]}, {shapes[1]}, {shapes[2]}. Tap the "
        "discriminator at a layer with the generator feature's resolution (CycleGAN: 64x64 "
        "after the discriminator's second conv on 256x256 inputs) or resize the features.")
  s, t, d = maps
  target = 0.5 * t + 0.5 * d
  if normalize:
    return jnp.mean(jnp.square(normalize_rows(target) - normalize_rows(s)))
  return jnp.mean(jnp.square(target - s))


def disc_distill_loss(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> Array:
  """DMAD discriminator distillation: `||a - b||_2` over all elements (Frobenius norm).

  Official `models/CycleGAN.py` `distill_discriminator_loss`: `torch.norm(a - b, 2)` between the
  teacher discriminator's last hidden feature (after its last hidden LeakyReLU, "hidden3" of
  `NLayerDiscriminator`) on the student's fake and on the teacher's fake; not squared, not
  averaged, summed over both directions and weighted by 1e-4 (CycleGAN).

  Args:
    a: features of any shape.
    b: features of the same shape.

  Returns:
    A scalar in the promoted dtype of `a` and `b`; its gradient is zero (not NaN) when a == b,
    as torch's norm backward.

  Raises:
    ValueError: when the shapes differ.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"disc_distill_loss: shapes differ, {a.shape} vs {b.shape}; tap both "
                     "features at the same discriminator layer.")
  sq = jnp.sum(jnp.square(a - b))
  # sqrt's slope is infinite at 0; the double where keeps the value and gives a zero gradient.
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0).astype(sq.dtype)
