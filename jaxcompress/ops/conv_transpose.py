"""A drop-in `lax.conv_transpose` / `flax.linen.ConvTranspose` whose CPU gradients are fast.

The GAN generators upsample with transposed convolutions: CycleGAN's ResNet generator (Zhu et
al., arXiv 1703.10593; junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`,
`ResnetGenerator`: `ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`), pix2pix's
U-Net (Isola et al., arXiv 1611.07004; same file, `UnetSkipConnectionBlock`: `ConvTranspose2d(k=4,
stride=2, padding=1)`) and DMAD's mobile generator (arXiv 2011.08382). On XLA:CPU, `jax.vjp` of
`lax.conv_transpose` (an lhs-dilated convolution) writes its kernel gradient as a convolution
with both lhs and window dilation, which XLA:CPU runs as a generic loop nest: at 128x128 inputs
the kernel gradient of an upsampling layer costs orders of magnitude more than its input
gradient (BENCHMARKS.md, `benchmarks/gan_step.py`).

A transposed convolution is the input gradient of a strided convolution. Let F(z; K) be the
channel-last convolution with HWIO kernel K ([*k, f, c]), strides s, padding q and kernel
dilation d, mapping z [n, *Z, f] to [n, *X, c]. The transposed convolution of x [n, *X, c] is
y = (dF/dz)^T x. Since <x, F(z; K)> is linear in each of x, z and K:

  * dL/dx = F(g; K): the strided convolution of the cotangent g [n, *Z, f];
  * dL/dK = d/dK <x, F(g; K)>: the weight gradient of that same strided convolution with input
    g and output cotangent x (the operands' roles exchanged).

Both are ordinary convolutions, so on CPU they go where `jaxcompress.ops.conv` sends ordinary
convolutions: the input gradient through `conv.conv_general_dilated` (oneDNN's forward kernel for
large float32 ones), the kernel gradient as batch-chunked patch matmuls (`conv._weight_grad`).
The forward pass is computed polyphase: output phase a (positions s * j + a) is a stride-1
convolution of x with the kernel taps u of that phase, u * d = a + q_lo (mod s) (about k / s taps
per dimension instead of k on an s-times dilated input), through `conv.conv_general_dilated`;
the phases are interleaved into y. Outputs narrower than 16 channels keep XLA's lhs-dilated
forward convolution (`_POLYPHASE_MIN_FEATURES`).

Per-layer timings against `nn.ConvTranspose` and PyTorch, and the kernel-gradient candidates
that were tried, are in BENCHMARKS.md ("Transposed convolutions of the GAN generators").

On GPU/TPU (checked at trace time), with `conv.set_conv_impl("lax")`, for non-channel-last
dimension numbers, non-float or mixed dtypes and a `preferred_element_type`, this is exactly
`lax.conv_transpose`. Like `conv.conv_general_dilated`, the CPU path is a `jax.custom_vjp`:
reverse mode only (no `jax.jvp` / `jax.hessian`; use `set_conv_impl("lax")` for those).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding
from jax import lax

from jaxcompress.ops import conv as conv_ops


def _channel_last_dn(nsp: int) -> lax.ConvDimensionNumbers:
  """N(spatial)C inputs and outputs, (spatial)IO kernels."""
  lhs = (0, nsp + 1) + tuple(range(1, nsp + 1))
  rhs = (nsp + 1, nsp) + tuple(range(nsp))
  return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def transpose_pads(padding: str | Sequence[tuple[int, int]], kshape: Sequence[int],
                   strides: Sequence[int], rhs_dil: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """The explicit padding of the stride-dilated input that `lax.conv_transpose` uses.

  For "SAME" / "VALID", with the dilated kernel size k' = (k - 1) * d + 1: SAME pads k' + s - 2
  in all, k' - 1 before when s > k' - 1 and ceil of half otherwise (output s * in); VALID pads
  k' - 1 before and k' + s - 2 + max(k' - s, 0) in all (output s * in + max(k' - s, 0)).
  Explicit (low, high) pairs are returned as they are.

  Args:
    padding: "SAME", "VALID" (any case) or one (low, high) pair per spatial dimension.
    kshape: kernel spatial shape.
    strides: strides (the input dilation).
    rhs_dil: kernel dilation.

  Returns:
    One (low, high) pair per spatial dimension.

  Raises:
    ValueError: for other strings or a number of pairs other than the spatial dimensions.
  """
  if not isinstance(padding, str):
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if len(pads) != len(kshape):
      raise ValueError(f"conv_transpose: padding {padding!r} has {len(pads)} pairs for "
                       f"{len(kshape)} spatial dimensions; give one (low, high) pair per "
                       "dimension.")
    return pads
  mode = padding.upper()
  if mode not in ("SAME", "VALID"):
    raise ValueError(f"conv_transpose: unknown padding {padding!r}; use 'SAME', 'VALID' or "
                     "(low, high) pairs.")
  out = []
  for k, s, d in zip(kshape, strides, rhs_dil):
    k = (k - 1) * d + 1
    if mode == "SAME":
      total = k + s - 2
      lo = k - 1 if s > k - 1 else int(math.ceil(total / 2))
    else:
      total = k + s - 2 + max(k - s, 0)
      lo = k - 1
    out.append((lo, total - lo))
  return tuple(out)


class _Phase(NamedTuple):
  """One output phase of one spatial dimension (see `_phase`)."""
  taps: tuple[int, ...]   # kernel taps u, ordered by increasing input offset
  dilation: int           # spacing of their input offsets
  pads: tuple[int, int]   # the stride-1 convolution's padding of x (negative crops)


def _phase(a: int, k: int, s: int, d: int, q_lo: int, x_len: int, n_out: int) -> _Phase:
  """Output positions s * j + a of the transposed convolution along one dimension.

  The strided convolution reads z[s * i + d * u - q_lo] for output i and tap u, so z position
  s * j + a receives x[i] K[u] for i = j + (a + q_lo - d * u) / s whenever that is an integer.
  Those taps' offsets form a progression (step d / gcd(d, s)): a stride-1 convolution of x
  with the taps in decreasing u, n_out outputs.

  Returns:
    The phase; no taps where no kernel tap reaches it (k * d < s).
  """
  taps = tuple(u for u in reversed(range(k)) if (a + q_lo - d * u) % s == 0)
  if not taps:
    return _Phase((), 1, (0, 0))
  first, last = ((a + q_lo - d * u) // s for u in (taps[0], taps[-1]))
  return _Phase(taps, d // math.gcd(d, s), (-first, n_out - 1 + last - (x_len - 1)))


def _polyphase(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
               out_spatial: tuple[int, ...], precision: Any) -> jax.Array:
  """(dF/dz)^T x (module docstring) as prod(strides) stride-1 convolutions, interleaved.

  Args:
    x: [n, *X, c].
    kernel: the strided convolution's kernel [*k, f, c].
    strides, pads, rhs_dil: its strides, non-negative padding and kernel dilation.
    out_spatial: Z, its input's spatial shape (the result's).
    precision: forwarded to the convolutions.

  Returns:
    [n, *Z, f].
  """
  nsp = x.ndim - 2
  kshape = kernel.shape[:nsp]
  n_out = tuple(-(-z // s) for z, s in zip(out_spatial, strides))
  per_dim = [[_phase(a, k, s, d, lo, xl, no) for a in range(s)] for k, s, d, (lo, _), xl, no
             in zip(kshape, strides, rhs_dil, pads, x.shape[1:-1], n_out)]
  w = jnp.swapaxes(kernel, -1, -2)  # [*k, c, f]: maps x's channels to y's
  outs = []
  for phases in itertools.product(*per_dim):
    if any(not p.taps for p in phases):
      outs.append(jnp.zeros((x.shape[0],) + n_out + (w.shape[-1],), x.dtype))
      continue
    sub = w
    for axis, p in enumerate(phases):
      # The taps descend in steps of s / gcd(d, s): a strided slice, reversed (no gather).
      step = p.taps[0] - p.taps[1] if len(p.taps) > 1 else 1
      sub = lax.rev(lax.slice_in_dim(sub, p.taps[-1], p.taps[0] + 1, step, axis), (axis,))
    outs.append(conv_ops.conv_general_dilated(
        x, sub, (1,) * nsp, tuple(p.pads for p in phases),
        rhs_dilation=tuple(p.dilation for p in phases),
        dimension_numbers=_channel_last_dn(nsp), precision=precision))
  y = jnp.stack(outs, axis=-2).reshape((x.shape[0],) + n_out + tuple(strides) + (-1,))
  # [n, *n_out, *s, f] -> [n, n_out0, s0, n_out1, s1, ..., f]: phase a of dim i lands on s*j+a.
  order = (0,) + tuple(v for i in range(nsp) for v in (1 + i, 1 + nsp + i)) + (2 * nsp + 1,)
  y = y.transpose(order).reshape((x.shape[0],) + tuple(no * s for no, s in zip(n_out, strides))
                                 + (-1,))
  return y[(slice(None),) + tuple(slice(0, z) for z in out_spatial)]


# Narrowest output (features) that the polyphase forward pays off for. Measured, pix2pix's
# head (128x128, 128 -> 3, 4x4): four 3-channel phase convolutions took 12.5 ms, XLA's one
# lhs-dilated convolution 2.2 ms; from 64 features on the phases were as fast or faster.
_POLYPHASE_MIN_FEATURES = 16


def _forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
             pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
             out_spatial: tuple[int, ...], precision: Any) -> jax.Array:
  """(dF/dz)^T x: polyphase, or XLA's lhs-dilated convolution for narrow outputs."""
  if kernel.shape[-2] >= _POLYPHASE_MIN_FEATURES:
    return _polyphase(x, kernel, strides, pads, rhs_dil, out_spatial, precision)
  # The same transposed convolution with the padding that reproduces F's input size exactly.
  reach = [(k - 1) * d for k, d in zip(kernel.shape[:-2], rhs_dil)]
  return lax.conv_transpose(x, kernel, strides, [(r - lo, r - hi) for r, (lo, hi)
                                                   in zip(reach, pads)],
                            rhs_dilation=rhs_dil, transpose_kernel=True, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _fast_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
                    pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
                    out_spatial: tuple[int, ...], precision: Any) -> jax.Array:
  """(dF/dz)^T x with the gradients of the module docstring (arguments as `_polyphase`)."""
  return _forward(x, kernel, strides, pads, rhs_dil, out_spatial, precision)


def _fast_transpose_fwd(x, kernel, strides, pads, rhs_dil, out_spatial, precision):
  y = _forward(x, kernel, strides, pads, rhs_dil, out_spatial, precision)
  return y, (x, kernel)


def _fast_transpose_bwd(strides, pads, rhs_dil, out_spatial, precision, res, g):
  del out_spatial  # g's spatial shape
  x, kernel = res
  nsp = x.ndim - 2
  g = g.astype(x.dtype)
  # dL/dx: the strided convolution F(g; K) itself.
  dx = conv_ops.conv_general_dilated(g, kernel, strides, pads, rhs_dilation=rhs_dil,
                                     dimension_numbers=_channel_last_dn(nsp),
                                     precision=precision)
  # dL/dK: F's weight gradient with input g and output cotangent x (module docstring), as
  # batch-chunked patch matmuls (`conv._weight_grad`), measured fastest at the GAN layers'
  # shapes (module docstring).
  # pylint: disable-next=protected-access
  dk = conv_ops._weight_grad(g, x, kernel.shape[:nsp], strides, pads, rhs_dil, precision)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_fast_transpose.defvjp(_fast_transpose_fwd, _fast_transpose_bwd)


def conv_transpose(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]],
                   rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                   transpose_kernel: bool = False, precision: Any = None,
                   preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_transpose` with the same signature and results, fast gradients on CPU.

  The result is the convolution of the stride-dilated `lhs` with the kernel W (`rhs`; with
  `transpose_kernel` its spatial flip with in/out channels swapped), padded by `padding`
  (`transpose_pads`). With K = flip(swap(W)) that is the input gradient of the strided
  convolution F(.; K) (module docstring); the CPU path computes it and its gradients as
  convolutions of the forward kind. Padding beyond the dilated kernel's reach only adds zero
  rows, which are padded on afterwards.

  Args:
    lhs: input, channel-last ([n, *spatial, c]) unless `dimension_numbers` says otherwise.
    rhs: kernel [*k, c, f], or [*k, f, c] with `transpose_kernel` (PyTorch's
      `ConvTranspose` weight (c, f, *k) moved to the back).
    strides: input dilation (the transposed convolution's stride).
    padding: "SAME", "VALID" or one (low, high) pair per spatial dimension, as in
      `lax.conv_transpose`.
    rhs_dilation: kernel dilation.
    dimension_numbers: as in `lax.conv_transpose` (None: channel-last).
    transpose_kernel: flip the kernel spatially and swap its channel axes (`lax`'s meaning).
    precision: forwarded to the convolutions.
    preferred_element_type: output dtype; any value other than None takes `lax.conv_transpose`.

  Returns:
    The output of `lax.conv_transpose` for the same arguments.
  """
  def lax_path() -> jax.Array:
    return lax.conv_transpose(lhs, rhs, strides, padding, rhs_dilation=rhs_dilation,
                              dimension_numbers=dimension_numbers,
                              transpose_kernel=transpose_kernel, precision=precision,
                              preferred_element_type=preferred_element_type)
  nsp = lhs.ndim - 2
  if (conv_ops.get_conv_impl() == "lax" or jax.default_backend() != "cpu" or nsp < 1
      or rhs.ndim != lhs.ndim or preferred_element_type is not None
      or not jnp.issubdtype(lhs.dtype, jnp.floating) or lhs.dtype != rhs.dtype):
    return lax_path()
  if dimension_numbers is not None:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if tuple(dn) != tuple(_channel_last_dn(nsp)):
      return lax_path()
  kshape = tuple(int(k) for k in rhs.shape[:nsp])
  strides = tuple(int(s) for s in strides)
  rhs_dil = tuple(int(d) for d in (rhs_dilation or (1,) * nsp))
  pads = transpose_pads(padding, kshape, strides, rhs_dil)
  reach = [(k - 1) * d for k, d in zip(kshape, rhs_dil)]
  out_spatial = tuple((x - 1) * s + 1 + lo + hi - r for x, s, (lo, hi), r
                      in zip(lhs.shape[1:-1], strides, pads, reach))
  if min(out_spatial) < 1:
    return lax_path()  # lax's own error message for an empty output
  # Windows that start before the first (end after the last) input row read only padding: the
  # rows beyond the kernel's reach are zeros, added after the core computation.
  extra = [(max(lo - r, 0), max(hi - r, 0)) for (lo, hi), r in zip(pads, reach)]
  q = tuple((r - lo + elo, r - hi + ehi) for (lo, hi), r, (elo, ehi) in zip(pads, reach, extra))
  core = tuple(z - elo - ehi for z, (elo, ehi) in zip(out_spatial, extra))
  if min(core) < 1:
    return lax_path()  # every output reads padding only: nothing for the fast path to do
  spatial = tuple(range(nsp))
  kernel = rhs if transpose_kernel else jnp.swapaxes(jnp.flip(rhs, spatial), -1, -2)
  y = _fast_transpose(lhs, kernel, strides, q, rhs_dil, core, precision)
  if any(e != (0, 0) for e in extra):
    y = jnp.pad(y, [(0, 0)] + extra + [(0, 0)])
  return y


class ConvTranspose(nn.ConvTranspose):
  """`flax.linen.ConvTranspose` computing with `conv_transpose` above.

  Same attributes, parameters ("kernel", then "bias"; same shapes, initialisers and random
  draws) and outputs as `nn.ConvTranspose`, so checkpoints and interceptors written for it
  (and `isinstance(m, nn.ConvTranspose)`) keep working. "CIRCULAR" padding is `nn.ConvTranspose`
  itself.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the transposed convolution (`nn.ConvTranspose.__call__`'s contract).

    Args:
      inputs: [*batch, *spatial, features_in]; several batch axes are flattened and restored,
        a missing one is added and removed (as `nn.ConvTranspose` does).

    Returns:
      [*batch, *out_spatial, features].
    """
    if isinstance(self.padding, str) and self.padding == "CIRCULAR":
      return super().__call__(inputs)
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    nsp = len(kernel_size)

    def broadcast(v: int | Sequence[int] | None) -> tuple[int, ...]:
      v = 1 if v is None else v
      return (v,) * nsp if isinstance(v, int) else tuple(v)

    batch_dims = inputs.ndim - (nsp + 1)
    batch_shape = inputs.shape[:batch_dims]
    if batch_dims != 1:
      inputs = jnp.reshape(inputs, (-1,) + inputs.shape[batch_dims:])
    in_features = inputs.shape[-1]
    kernel_shape = kernel_size + ((self.features, in_features) if self.transpose_kernel
                                  else (in_features, self.features))
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError(f"Mask needs to have the same shape as weights. Shapes are: "
                       f"{self.mask.shape}, {kernel_shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, broadcast(self.strides),
                       canonicalize_padding(self.padding, nsp),
                       rhs_dilation=broadcast(self.kernel_dilation),
                       transpose_kernel=self.transpose_kernel, precision=self.precision,
                       preferred_element_type=self.preferred_element_type)
    if bias is not None:
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    if batch_dims != 1:
      y = jnp.reshape(y, batch_shape + y.shape[1:])
    return y
