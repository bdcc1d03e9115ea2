"""Adversarial losses of the image-to-image GANs (CycleGAN, Pix2Pix and their DMAD students).

`GANLoss(mode)(prediction, target_is_real, for_discriminator=True)` follows the official
`GANLoss` of junyanz/pytorch-CycleGAN-and-pix2pix (`models/networks.py`) and its hinge extension
in SJLeo/DMAD (`models/GANLoss.py`):

  * "lsgan" (Mao et al., arXiv 1611.04076): mean((D(x) - target)^2), target 1 for real and 0 for
    fake (`nn.MSELoss` against a constant map); CycleGAN's default.
  * "vanilla" (Goodfellow et al. 2014; pix2pix, arXiv 1611.07004 Eq. 1): binary cross-entropy on
    logits (`nn.BCEWithLogitsLoss`): mean(softplus(-D(x))) for real, mean(softplus(D(x))) for fake.
  * "hinge" (Lim & Ye, arXiv 1705.02894; DMAD's Pix2Pix, `--gan_mode hinge` in its edges2shoes and
    cityscapes scripts): the discriminator minimises mean(relu(1 - D(real))) and
    mean(relu(1 + D(fake))) (DMAD writes them as -mean(min(D - 1, 0)) and -mean(min(-D - 1, 0)));
    the generator minimises -mean(D(fake)).

For "lsgan" and "vanilla" the generator form is the real-target loss (`for_discriminator` has no
effect), as in the official code. Every loss is a mean over all elements of the PatchGAN map,
computed in float32.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError

MODES = ("lsgan", "vanilla", "hinge")


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def lsgan_loss(prediction: jax.Array, target_is_real: bool) -> jax.Array:
  """Least-squares GAN loss: mean((D(x) - t)^2), t = 1 (real) or 0 (fake).

  Official `GANLoss('lsgan')` (`nn.MSELoss` against `real_label` 1.0 / `fake_label` 0.0).

  Args:
    prediction: discriminator output (any shape).
    target_is_real: the target label.

  Returns:
    The scalar loss.
  """
  target = 1.0 if target_is_real else 0.0
  return jnp.mean(jnp.square(_f32(prediction) - target))


def vanilla_loss(prediction: jax.Array, target_is_real: bool) -> jax.Array:
  """The original GAN cross-entropy on logits: BCE(sigmoid(D(x)), t), t = 1 (real) or 0 (fake).

  Official `GANLoss('vanilla')` (`nn.BCEWithLogitsLoss`): -log sigmoid(z) = softplus(-z) for a real
  target and -log(1 - sigmoid(z)) = softplus(z) for a fake one; softplus keeps it finite for large
  logits.

  Args:
    prediction: discriminator logits.
    target_is_real: the target label.

  Returns:
    The scalar loss.
  """
  z = _f32(prediction)
  return jnp.mean(jax.nn.softplus(-z if target_is_real else z))


def hinge_loss(prediction: jax.Array, target_is_real: bool,
               for_discriminator: bool = True) -> jax.Array:
  """Hinge GAN loss (SJLeo/DMAD `models/GANLoss.py`, mode 'hinge').

  Discriminator: mean(relu(1 - D(x))) for real, mean(relu(1 + D(x))) for fake. Generator:
  -mean(D(G(z))) (only defined for a real target, as DMAD asserts).

  Args:
    prediction: discriminator output.
    target_is_real: the target label.
    for_discriminator: the discriminator's form (True) or the generator's (False).

  Returns:
    The scalar loss.

  Raises:
    ValueError: the generator form with a fake target.
  """
  z = _f32(prediction)
  if not for_discriminator:
    if not target_is_real:
      raise ValueError("The generator's hinge loss is defined for target_is_real=True only.")
    return -jnp.mean(z)
  return jnp.mean(jax.nn.relu(1.0 - z if target_is_real else 1.0 + z))


@dataclasses.dataclass(frozen=True)
class GANLoss:
  """The official `GANLoss(gan_mode)` as a function object.

  Attributes:
    mode: "lsgan", "vanilla" or "hinge".
  """
  mode: str = "lsgan"

  def __post_init__(self):
    if self.mode not in MODES:
      raise ConfigError(f"Unknown GAN loss {self.mode!r}; set gan.gan_mode to one of "
                        f"{', '.join(MODES)}.")

  def __call__(self, prediction: jax.Array, target_is_real: bool,
               for_discriminator: bool = True) -> jax.Array:
    """The loss of `prediction` against the real or fake target.

    Args:
      prediction: discriminator output.
      target_is_real: the target label.
      for_discriminator: the discriminator's form; the generator's form (False) differs only for
        "hinge".

    Returns:
      The scalar loss.
    """
    if self.mode == "lsgan":
      return lsgan_loss(prediction, target_is_real)
    if self.mode == "vanilla":
      return vanilla_loss(prediction, target_is_real)
    return hinge_loss(prediction, target_is_real, for_discriminator)

  def discriminator(self, pred_real: jax.Array, pred_fake: jax.Array) -> jax.Array:
    """The discriminator's loss 0.5 * (L(D(real), real) + L(D(fake), fake)).

    Official `backward_D_basic` (CycleGAN) and `backward_D` (Pix2Pix): the sum is halved "to
    slow down the rate at which D learns relative to G" (CycleGAN paper, Sec. 7.1).
    """
    return 0.5 * (self(pred_real, True) + self(pred_fake, False))

  def generator(self, pred_fake: jax.Array) -> jax.Array:
    """The generator's adversarial loss L(D(G(x)), real) in the generator form."""
    return self(pred_fake, True, for_discriminator=False)
