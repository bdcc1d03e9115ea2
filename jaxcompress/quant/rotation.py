"""RBNN bi-rotation: weight standardisation, rotation solve and the rotated binary convolution.

Rotated Binary Neural Network (Lin et al., NeurIPS 2020, arXiv 2009.13055), following the
official `lmbxmu/RBNN` code where it adds to the paper (standardisation, stop-gradient on the
rotated weight, sign(0) = 0). Shapes: activations NHWC, kernels HWIO. Every function is pure and
jit-able and computes in the dtype of its inputs.

Per layer, the standardised kernel of output channel o is reshaped, in the official PyTorch
(in, kh, kw) order, to `X_o` of shape (a, b) with `a * b = kh * kw * in` (`rotation_shape`). Two
orthogonal matrices R1 (a x a) and R2 (b x b), shared by all output channels, rotate every channel
as `R1^T X_o R2` (the Kronecker rotation `(R1 (x) R2)^T vec(X_o)`, paper eq. 9).

Example:
  >>> r1, r2 = haar_orthogonal(k1, a), haar_orthogonal(k2, b)
  >>> r1, r2 = rbnn_rotation_update(w, r1, r2)            # once per epoch
  >>> y = rbnn_conv2d(x, w, r1, r2, theta, alpha, t, k)    # every step
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import padding as padding_lib
from jaxcompress.quant import estimators

Padding = padding_lib.Padding

# Rotations are small dense matmuls whose orthogonality must survive: never let a TPU/GPU
# default-precision (bf16-pass) matmul touch them.
_HI = lax.Precision.HIGHEST


def rotation_shape(n: int) -> tuple[int, int]:
  """Bi-rotation factor sizes (official `get_ab`): a = largest divisor of n with a <= floor(sqrt n).

  Examples: 144 -> (12, 12), 288 -> (16, 18), 576 -> (24, 24), 4608 -> (64, 72).

  Args:
    n: number of weights per output channel (kh * kw * in).

  Returns:
    `(a, b)` with `a * b == n` and `a <= b`.
  """
  n = int(n)
  if n < 1:
    raise ValueError(f"rotation_shape needs n >= 1, got {n}.")
  for a in range(math.isqrt(n), 0, -1):
    if n % a == 0:
      return a, n // a
  raise AssertionError("unreachable: 1 divides every n")


def standardize_weight(w: ArrayLike) -> jax.Array:
  """Per-output-channel standardisation of a kernel (official RBNN `w1`/`w2`).

  `w2 = (w - mean) / std` over every axis but the last (kh, kw, in of an HWIO kernel), with the
  unbiased std (PyTorch default) of the centred weight and no epsilon.

  Args:
    w: kernel with output channels last (HWIO, or (in, out)).

  Returns:
    standardised kernel, same shape and dtype.
  """
  w = jnp.asarray(w)
  axes = tuple(range(w.ndim - 1))
  w1 = w - jnp.mean(w, axis=axes, keepdims=True)
  return w1 / jnp.std(w1, axis=axes, keepdims=True, ddof=1)


def standardize_activation(x: ArrayLike) -> jax.Array:
  """Per-sample standardisation of activations (official RBNN `a1`/`a2`).

  `(x - mean) / std` over (H, W, C) jointly for each sample (every axis but the first), unbiased
  std, no epsilon.

  Args:
    x: activations, batch first (NHWC).

  Returns:
    standardised activations, same shape and dtype.
  """
  x = jnp.asarray(x)
  axes = tuple(range(1, x.ndim))
  x1 = x - jnp.mean(x, axis=axes, keepdims=True)
  return x1 / jnp.std(x1, axis=axes, keepdims=True, ddof=1)


def _to_oihw(w: jax.Array) -> jax.Array:
  # HWIO -> OIHW (PyTorch layout); a dense (in, out) kernel -> (out, in).
  return jnp.transpose(w, (3, 2, 0, 1)) if w.ndim == 4 else w.T


def weight_to_matrices(w2: ArrayLike) -> jax.Array:
  """`X = transpose(w2, (3, 2, 0, 1)).reshape(O, a, b)`: per-channel matrices in official order.

  Args:
    w2: (standardised) HWIO kernel, or an (in, out) dense kernel.

  Returns:
    `(O, a, b)` with `(a, b) = rotation_shape(kh * kw * in)`.
  """
  w2 = jnp.asarray(w2)
  o = w2.shape[-1]
  a, b = rotation_shape(w2.size // o)
  return _to_oihw(w2).reshape(o, a, b)


def matrices_to_weight(m: ArrayLike, shape: Sequence[int]) -> jax.Array:
  """Inverse of `weight_to_matrices`: `(O, a, b)` back to a kernel of `shape` (HWIO / (in, out))."""
  m = jnp.asarray(m)
  if len(shape) == 4:
    kh, kw, cin, o = shape
    return jnp.transpose(m.reshape(o, cin, kh, kw), (2, 3, 1, 0))
  return m.reshape(shape[1], shape[0]).T


def _rotate(x: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
  """`R1^T X_o R2` for every channel o of `x` (O, a, b)."""
  return jnp.einsum("ia,oij,jb->oab", r1, x, r2, precision=_HI)


def rbnn_rotated_weight(w: ArrayLike, r1: ArrayLike, r2: ArrayLike) -> jax.Array:
  """The standardised kernel rotated by (R1, R2), as an HWIO kernel (official `Rweight`)."""
  w2 = standardize_weight(w)
  r1, r2 = jnp.asarray(r1, w2.dtype), jnp.asarray(r2, w2.dtype)
  return matrices_to_weight(_rotate(weight_to_matrices(w2), r1, r2), w2.shape)


def rbnn_mixed_weight(w: ArrayLike, r1: ArrayLike, r2: ArrayLike, theta: ArrayLike) -> jax.Array:
  """RBNN's adjustable rotated weight `w3 = w2 + |sin theta| (stop_gradient(R1^T X R2) - w2)`.

  Paper eq. 15 on the standardised kernel `w2` (official code), per output channel `theta` of
  shape (O,). The binary weight of the layer is `sign(w3)` (`rbnn_sign`'s forward); after training
  it is fixed, so `quant.export` precomputes it with this function. Gradients reach `w` (through
  the standardisation and the `1 - |sin theta|` path) and `theta`; not `r1`, `r2`.

  Args:
    w: latent HWIO kernel.
    r1: (a, a) rotation; r2: (b, b) rotation.
    theta: (O,) angles.

  Returns:
    `w3`, an HWIO kernel in the dtype of the standardised `w`.
  """
  w2 = standardize_weight(w)
  rotated = rbnn_rotated_weight(w, r1, r2)
  return w2 + jnp.abs(jnp.sin(jnp.asarray(theta))) * (lax.stop_gradient(rotated) - w2)


def rbnn_activation_sign(x: ArrayLike) -> jax.Array:
  """The forward value of RBNN's activation binarisation, `sign(standardised x)`, without the std.

  Per-sample standardisation is a positive affine map (`(x - mean) / std`, std > 0), so its sign is
  `sign(x - mean)` with the per-sample mean over (H, W, C) (computed as `standardize_activation`
  does, so the same entries are exactly 0). sign(0) = 0 as `rbnn_sign`. (A constant sample, std 0,
  gives NaN in `rbnn_conv2d` and 0 here.) No surrogate gradient: serving only.

  Args:
    x: activations, batch first (NHWC).

  Returns:
    -1, 0 or +1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return jnp.sign(x - jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True))


def rbnn_rotation_objective(w: ArrayLike, r1: ArrayLike, r2: ArrayLike) -> jax.Array:
  """The rotation loss `sum_o ||B_o - R1^T X_o R2||_F^2` with the optimal `B_o = sign(.)` (eq. 10).

  Minimised by `rbnn_rotation_update` (it is `const - 2 sum_o |R1^T X_o R2|_1`), so it does not
  increase across rounds.
  """
  x = lax.stop_gradient(weight_to_matrices(standardize_weight(w)))
  v = _rotate(x, jnp.asarray(r1, x.dtype), jnp.asarray(r2, x.dtype))
  return jnp.sum((jnp.sign(v) - v) ** 2)


def rbnn_rotation_update(w: ArrayLike, r1: ArrayLike, r2: ArrayLike,
                         rounds: int = 3) -> tuple[jax.Array, jax.Array]:
  """Alternating bi-rotation solve (paper eq. 11-14; official `BinarizeConv2d.forward`).

  `X` = standardised, reshaped `w`, treated as a constant. Each round, warm-started from the given
  rotations:
    1. `B_o = sign(R1^T X_o R2)` (sign(0) = 0);
    2. `R1 <- V1 U1^T` from the SVD `sum_o B_o R2^T X_o^T = U1 S1 V1^T`;
    3. `R2 <- U2 V2^T` from the SVD `sum_o X_o^T R1 B_o = U2 S2 V2^T` (same B, new R1).
  SVDs run in the promoted dtype of (w, r1, r2); results come back in the dtypes of r1, r2.

  Args:
    w: latent HWIO kernel of the layer.
    r1: current R1, (a, a).
    r2: current R2, (b, b).
    rounds: number of alternations (official 3); may be traced.

  Returns:
    `(r1, r2)` after `rounds` rounds.
  """
  w, r1, r2 = jnp.asarray(w), jnp.asarray(r1), jnp.asarray(r2)
  dtype = jnp.result_type(w, r1, r2)
  x = lax.stop_gradient(weight_to_matrices(standardize_weight(w.astype(dtype))))

  def one_round(_, carry):
    q1, q2 = carry
    b = jnp.sign(_rotate(x, q1, q2))
    d1 = jnp.einsum("oij,okl,lj->ik", b, x, q2, precision=_HI)  # sum_o B_o R2^T X_o^T
    u1, _, v1t = jnp.linalg.svd(d1)
    q1 = jnp.matmul(v1t.T, u1.T, precision=_HI)
    d2 = jnp.einsum("oki,kl,olj->ij", x, q1, b, precision=_HI)  # sum_o X_o^T R1 B_o
    u2, _, v2t = jnp.linalg.svd(d2)
    return q1, jnp.matmul(u2, v2t, precision=_HI)

  q1, q2 = lax.fori_loop(0, rounds, one_round,
                         (lax.stop_gradient(r1.astype(dtype)), lax.stop_gradient(r2.astype(dtype))))
  return q1.astype(r1.dtype), q2.astype(r2.dtype)


def haar_orthogonal(rng: jax.Array, n: int, dtype: DTypeLike = jnp.float32) -> jax.Array:
  """A Haar-random orthogonal n x n matrix (as scipy `ortho_group.rvs`, the official init).

  QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007), which makes
  the distribution exactly Haar on O(n).
  """
  z = jax.random.normal(rng, (n, n), dtype)
  q, r = jnp.linalg.qr(z)
  return q * jnp.where(jnp.diagonal(r) < 0, -1, 1).astype(dtype)[None, :]


def as_tuple(v: int | Sequence[int], nd: int) -> tuple[int, ...]:
  """An int or a sequence as an nd-tuple (strides, kernel sizes)."""
  return (int(v),) * nd if isinstance(v, int) else tuple(int(i) for i in v)


def pad_and_conv(xb: jax.Array, wb: jax.Array, strides: int | Sequence[int], padding: Padding,
                 precision: Any = None, dilation: int | Sequence[int] = 1,
                 groups: int = 1) -> jax.Array:
  """Convolves an already binarised NHWC input, zero-padded, with an HWIO kernel.

  Padding after binarisation is what the official binary convs (and larq, `pad_values=0`) do:
  the border contributes 0, not sign(0) or sign(pad value). The convolution's own zero padding
  is exactly that, so the padding is handed to it instead of materialising a padded copy with
  `jnp.pad` (which XLA:CPU fused with the binarisation into a slow pad loop: the RBNN ResNet-20
  training step ran 1.12x faster this way on CPU, with bit-identical gradients).

  Args:
    xb: binarised (or any) NHWC input.
    wb: HWIO kernel (input axis `C / groups`).
    strides: int or per-dimension strides.
    padding: int (PyTorch style), pairs, or "SAME"/"VALID" (`ops.padding.explicit_pads`).
    precision: lax precision of the convolution.
    dilation: int or per-dimension kernel dilation.
    groups: feature groups (`C` for a depthwise convolution).

  Returns:
    The NHWC output in the promoted dtype of `xb` and `wb`.
  """
  nd = xb.ndim - 2
  st = as_tuple(strides, nd)
  dil = as_tuple(dilation, nd)
  pads = padding_lib.explicit_pads(padding, xb.shape[1:-1], wb.shape[:nd], st, dil)
  dtype = jnp.result_type(xb, wb)
  # The library's conv entry point: lax on GPU/TPU, matmul weight-gradients on CPU.
  return conv_ops.conv_general_dilated(xb.astype(dtype), wb.astype(dtype), st, pads,
                                       rhs_dilation=dil,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=groups, precision=precision)


def rbnn_conv2d(x: ArrayLike, w: ArrayLike, r1: ArrayLike, r2: ArrayLike, theta: ArrayLike,
                alpha: ArrayLike, t: ArrayLike, k: ArrayLike, stride: int | Sequence[int] = 1,
                padding: Padding = 1, *, precision: Any = None) -> jax.Array:
  """RBNN's binary convolution (paper eq. 15-16 plus the official standardisation).

  `w2` = standardised `w`; `w3 = w2 + |sin theta| (stop_gradient(R1^T X R2) - w2)` per output
  channel; `bw = rbnn_sign(w3, t, k)`; `ba = rbnn_sign(standardised x, max(t, 1), 1)`; zero
  padding of `ba`; conv; times `alpha`. Gradients reach x, w (through the standardisation and the
  `(1 - |sin theta|)` path), theta and alpha; not r1, r2.

  Args:
    x: NHWC activations.
    w: latent HWIO kernel.
    r1: (a, a) rotation; r2: (b, b) rotation, `(a, b) = rotation_shape(kh * kw * in)`.
    theta: (O,) rotation angles (init pi / 2).
    alpha: (O,) output scales.
    t: weight-surrogate sharpness, `k`: weight-surrogate scale (`rbnn_schedule`); may be traced.
    stride: int or per-dim strides.
    padding: int (PyTorch style), pairs, or "SAME"/"VALID"; applied after binarisation.
    precision: lax precision of the convolution (inputs are +-1/0 so the forward is exact).

  Returns:
    `(N, H', W', O)` output.
  """
  x, w = jnp.asarray(x), jnp.asarray(w)
  w3 = rbnn_mixed_weight(w, r1, r2, theta)
  bw = estimators.rbnn_sign(w3, t, k)
  ba = estimators.rbnn_sign(standardize_activation(x), jnp.maximum(jnp.asarray(t), 1), 1)
  return pad_and_conv(ba, bw, stride, padding, precision) * jnp.asarray(alpha)


def rbnn_rotate_params(params: Any, rotations: Any, rounds: int = 3) -> Any:
  """Runs `rbnn_rotation_update` for every RBNN layer of a model (the per-epoch hook).

  `rotations` is the `"rbnn"` variable collection (nested dicts whose leaf dicts hold `r1`, `r2`);
  the kernel is read at the same module path in `params` (`.../kernel`). Pure and jit-able.

  Args:
    params: the `"params"` collection.
    rotations: the `"rbnn"` collection.
    rounds: alternations per layer.

  Returns:
    a new `"rbnn"` collection with updated rotations.
  """
  if isinstance(rotations, dict) or hasattr(rotations, "items"):
    if "r1" in rotations and "r2" in rotations:
      r1, r2 = rbnn_rotation_update(params["kernel"], rotations["r1"], rotations["r2"], rounds)
      return {**rotations, "r1": r1, "r2": r2}
    return {key: rbnn_rotate_params(params[key], val, rounds) for key, val in rotations.items()}
  return rotations


def sign_flip_ratio(old_w: Any, new_w: Any) -> jax.Array:
  """Fraction of weights whose `jnp.sign` differs between two arrays or pytrees (larq FlipRatio).

  E.g. `sign_flip_ratio(w2, rbnn_rotated_weight(w, r1, r2))` is the fraction of bits a rotation
  flips (about 1/2 for Gaussian weights, RBNN abstract).
  """
  old, new = jax.tree_util.tree_leaves(old_w), jax.tree_util.tree_leaves(new_w)
  changed = sum(jnp.sum(jnp.sign(a) != jnp.sign(b)) for a, b in zip(old, new))
  total = sum(a.size for a in old)
  return jnp.asarray(changed, jnp.result_type(float)) / total
