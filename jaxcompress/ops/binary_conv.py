"""The 1-bit (XNOR-popcount) convolution of a float input as one native CPU kernel.

`xnor_conv` computes what `quant.serve_fn` serves for a binary conv (a larq-style `BinaryConv`
with a sign input quantizer, or RBNN's conv with its centred sign):

    bit(x) = x >= thr[n] ("ge") or x > thr[n] ("gt");  dot = sum over taps inside the input of
    (bit == kernel bit ? +1 : -1);  out = dot * scale + shift

with the kernel's bits packed by `quant.pack_bits` ((tap, channel) order, `[words, o]` uint32)
and taps in the zero padding contributing 0, as in a binary conv that pads after its quantiser
(larq `pad_values=0`, official RBNN / IR-Net). With `exact_zeros` an entry equal to the
threshold contributes 0 (RBNN: sign(0) = 0).

On CPU it runs `native/binary_conv.cc` (an XLA FFI handler built for the host by
`native_build`): the binarisation and bit packing of the input, the XNOR-popcount product
reading the packed words of each tap in place (no im2col), taps in the padding skipped, and the
scale / shift in one pass, with
AVX-512 VPOPCNTDQ where the CPU has it, else AVX2 nibble-table popcounts. The XLA path it
replaces (`quant.export`'s) runs the packing, the patch gathering, the popcount product, the
correction and the epilogue as separate memory-bound loops.

When it is used (`available`): a CPU backend, a C++ compiler on the host (JAXCOMPRESS_NATIVE=0
opts out), a vector popcount path (AVX-512 VPOPCNTDQ or AVX2; a build with neither falls back),
and a one-time probe against a NumPy transcription of the formula above on shapes that cover
padding, strides, dilation, channel counts that share a word or span several, a partial block of
output channels and exact zeros. Input channels must divide 32 or be a multiple of it
(`supports`). Elsewhere callers use the XLA path.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import mlir

from jaxcompress.ops import native_build

FFI_TARGET = "jaxcompress_binary_conv"
_SOURCE = "binary_conv"
_SYMBOL = "JaxcompressBinaryConv"
PATHS = {2: "avx512_vpopcntdq", 1: "avx2_nibble_table", 0: "scalar"}
RULES = ("gt", "ge")
ACTIVATIONS = (None, "hard_tanh")

# The primitive (`quant.serve_fusion` finds it in traced programs).
binary_conv_p = Primitive("jaxcompress_binary_conv")


def out_spatial(in_spatial: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
                pads: Sequence[tuple[int, int]], dilation: Sequence[int]) -> tuple[int, int]:
  """(ho, wo) of a convolution of `in_spatial` with explicit `pads`."""
  return tuple((n + lo + hi - (k - 1) * d - 1) // s + 1
               for n, k, s, d, (lo, hi) in zip(in_spatial, kshape, strides, dilation, pads))


def _abstract_eval(x, thr, words, scale, shift, residual, *, kshape, strides, pads, dilation,
                   rule, exact_zeros, activation, channels, packed_output):
  del thr, words, shift, residual, rule, exact_zeros, activation, channels
  ho, wo = out_spatial(x.shape[1:3], kshape, strides, pads, dilation)
  o = scale.shape[0]
  if packed_output:
    return jax.core.ShapedArray((x.shape[0], ho, wo, -(-o // 32)), jnp.uint32)
  return jax.core.ShapedArray((x.shape[0], ho, wo, o), jnp.float32)


def _cpu_lowering(ctx, x, thr, words, scale, shift, residual, *, kshape, strides, pads,
                  dilation, rule, exact_zeros, activation, channels, packed_output):
  del packed_output  # the result's dtype says it
  n, ho, wo, _ = ctx.avals_out[0].shape
  has_residual = ctx.avals_in[5].shape == (n, ho, wo, ctx.avals_in[3].shape[0])
  return jax.ffi.ffi_lowering(FFI_TARGET)(
      ctx, x, thr, words, scale, shift, residual, kernel_h=np.int64(kshape[0]),
      kernel_w=np.int64(kshape[1]), stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
      dilation_h=np.int64(dilation[0]), dilation_w=np.int64(dilation[1]),
      pad_top=np.int64(pads[0][0]), pad_left=np.int64(pads[1][0]),
      rule=np.int64(RULES.index(rule)), exact_zeros=np.int64(exact_zeros),
      residual=np.int64(has_residual), activation=np.int64(ACTIVATIONS.index(activation)),
      channels=np.int64(channels))


binary_conv_p.def_abstract_eval(_abstract_eval)
binary_conv_p.def_impl(functools.partial(jax.jit, static_argnames=(
    "kshape", "strides", "pads", "dilation", "rule", "exact_zeros", "activation", "channels",
    "packed_output"))(
        lambda *args, **params: binary_conv_p.bind(*args, **params)))
mlir.register_lowering(binary_conv_p, _cpu_lowering, platform="cpu")


def supports(cin: int) -> bool:
  """Whether the kernel handles `cin` input channels (a divisor or a multiple of 32)."""
  return cin > 0 and (cin % 32 == 0 or 32 % cin == 0)


def xnor_conv(x: jax.Array, threshold: jax.Array, words: jax.Array,
              scale: jax.Array, shift: jax.Array, *, kshape: Sequence[int],
              strides: Sequence[int], pads: Sequence[tuple[int, int]],
              dilation: Sequence[int], rule: str, exact_zeros: bool = False,
              residual: jax.Array | None = None, activation: str | None = None) -> jax.Array:
  """The binary convolution of the module docstring through the native kernel.

  Call only where `available()` and `supports(cin)` hold (the XLA path serves elsewhere).

  Args:
    x: float32 input [n, h, w, cin].
    threshold: float32 [n], the per-sample binarisation threshold, or [1] for all samples.
    words: uint32 [ceil(kh * kw * cin / 32), o], the kernel's bits as `quant.pack_bits` packs
      its (tap, channel) rows.
    scale, shift: float32 [o], the epilogue.
    kshape: (kh, kw); strides, dilation: >= 1; pads: explicit ((top, bottom), (left, right)).
    rule: "ge" (larq sign: 0 maps to +1) or "gt" (an input equal to the threshold gets bit 0).
    exact_zeros: inputs equal to the threshold contribute 0 (RBNN).
    residual: float32 [n, ho, wo, o] added after the scale and shift (a residual block's
      shortcut), or None.
    activation: None or "hard_tanh" (`jax.nn.hard_tanh`), applied last.

  Returns:
    float32 [n, ho, wo, o]: `activation(out + residual)`.

  Raises:
    ValueError: on dtypes, shapes or geometry the kernel does not take.
    RuntimeError: when the kernel cannot be built here.
  """
  kshape, strides, dilation = (tuple(int(v) for v in t) for t in (kshape, strides, dilation))
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  n, _, _, cin = x.shape
  o = scale.shape[0]
  k_words = -(-kshape[0] * kshape[1] * cin // 32)
  if x.dtype != jnp.float32 or words.dtype != jnp.uint32:
    raise ValueError(f"xnor_conv takes a float32 input and uint32 words, got {x.dtype} and "
                     f"{words.dtype}.")
  if not supports(cin):
    raise ValueError(f"xnor_conv: {cin} input channels neither divide 32 nor are a multiple of "
                     "it; serve this layer through the XLA path.")
  if words.shape != (k_words, o) or shift.shape != (o,) or threshold.shape not in ((n,), (1,)):
    raise ValueError(f"xnor_conv: words {words.shape} (want {(k_words, o)}), shift "
                     f"{shift.shape}, threshold {threshold.shape} do not fit input {x.shape}, "
                     f"kernel {kshape} and {o} outputs.")
  if min(strides + dilation) < 1 or any(lo < 0 or hi < 0 for lo, hi in pads):
    raise ValueError(f"xnor_conv needs strides/dilations >= 1 and pads >= 0, got {strides}, "
                     f"{dilation}, {pads}.")
  if rule not in RULES:
    raise ValueError(f"xnor_conv: rule must be one of {RULES}, got {rule!r}.")
  if activation not in ACTIVATIONS:
    raise ValueError(f"xnor_conv: activation must be one of {ACTIVATIONS}, got {activation!r}.")
  out_shape = (n, *out_spatial(x.shape[1:3], kshape, strides, pads, dilation), o)
  if residual is not None and (residual.shape != out_shape or residual.dtype != jnp.float32):
    raise ValueError(f"xnor_conv: residual {residual.shape} {residual.dtype} is not the output's "
                     f"float32 {out_shape}.")
  if popcount_path() is None:  # also registers the FFI target
    raise RuntimeError(f"xnor_conv: the native kernel is not built here "
                       f"({native_build.build_error(_SOURCE)}); check `available()` first.")
  # Without a residual a 1-element placeholder goes in its place (the lowering tells the two
  # apart by shape; an output of 1 element has its residual's shape either way).
  residual = jnp.zeros((1,), jnp.float32) if residual is None else residual
  return binary_conv_p.bind(
      x, jnp.asarray(threshold, jnp.float32), words, scale.astype(jnp.float32),
      shift.astype(jnp.float32), residual, kshape=kshape, strides=strides, pads=pads,
      dilation=dilation, rule=rule, exact_zeros=bool(exact_zeros), activation=activation,
      channels=cin, packed_output=False)


def reference(x: np.ndarray, threshold: np.ndarray, words: np.ndarray,
              scale: np.ndarray, shift: np.ndarray, *, kshape: Sequence[int],
              strides: Sequence[int], pads: Sequence[tuple[int, int]],
              dilation: Sequence[int], rule: str, exact_zeros: bool = False,
              residual: np.ndarray | None = None, activation: str | None = None) -> np.ndarray:
  """NumPy transcription of `xnor_conv` (the probe's and the tests' oracle)."""
  x = np.asarray(x, np.float32)
  n, h, w, cin = x.shape
  kh, kw = kshape
  o = scale.shape[0]
  k = kh * kw * cin
  bits = (np.asarray(words, np.uint32)[:, None, :] >> np.arange(32, dtype=np.uint32)[None, :, None])
  w_pm1 = np.where((bits & 1).reshape(-1, o)[:k], 1.0, -1.0).reshape(kh, kw, cin, o)
  thr = np.asarray(threshold, np.float32)[:, None, None, None]
  a = np.where(x >= thr if rule == "ge" else x > thr, 1.0, -1.0)
  if exact_zeros:
    a = np.where(x == thr, 0.0, a)
  a = np.pad(a, [(0, 0), *pads, (0, 0)])
  ho, wo = out_spatial((h, w), kshape, strides, pads, dilation)
  dot = np.zeros((n, ho, wo, o), np.float64)
  for i in range(kh):
    for j in range(kw):
      y0, x0 = i * dilation[0], j * dilation[1]
      patch = a[:, y0:y0 + (ho - 1) * strides[0] + 1:strides[0],
                x0:x0 + (wo - 1) * strides[1] + 1:strides[1], :]
      dot += patch @ w_pm1[i, j]
  out = (dot.astype(np.float32) * np.asarray(scale, np.float32)
         + np.asarray(shift, np.float32)).astype(np.float32)
  if residual is not None:
    out = out + np.asarray(residual, np.float32)
  if activation == "hard_tanh":
    out = np.where(out > 1, 1.0, np.where(out < -1, -1.0, out)).astype(np.float32)
  return out


@functools.lru_cache(maxsize=None)
def popcount_path() -> str | None:
  """The built kernel's popcount path (`PATHS` values), or None when it cannot be built here."""
  library = native_build.load_ffi(_SOURCE, _SYMBOL, FFI_TARGET)
  try:
    return None if library is None else PATHS.get(int(library.JaxcompressBinaryConvPath()))
  except AttributeError:
    return None


def _pack_kernel(w_pm1: np.ndarray) -> np.ndarray:
  """[kh, kw, cin, o] +-1 -> [words, o] uint32 in `quant.pack_bits`' order (probe data)."""
  o = w_pm1.shape[-1]
  bits = (w_pm1.reshape(-1, o) > 0).astype(np.uint64)
  pad = -bits.shape[0] % 32
  bits = np.concatenate([bits, np.zeros((pad, o), np.uint64)]).reshape(-1, 32, o)
  return np.sum(bits << np.arange(32, dtype=np.uint64)[None, :, None], axis=1).astype(np.uint32)


def _case(rng: np.random.Generator, shape, o, kshape, strides, pads, dilation, rule, zeros,
          epilogue=False):
  w_pm1 = np.where(rng.random(tuple(kshape) + (shape[-1], o)) > 0.5, 1.0, -1.0)
  x = rng.standard_normal(shape).astype(np.float32)
  thr = rng.standard_normal(shape[0]).astype(np.float32) * 0.1
  if zeros:
    x[0, 1, :2] = thr[0]  # exact threshold hits
  args = (x, thr, _pack_kernel(w_pm1), rng.uniform(0.5, 1.5, o).astype(np.float32), rng.standard_normal(o).astype(np.float32))
  params = dict(kshape=kshape, strides=strides, pads=pads, dilation=dilation, rule=rule,
                exact_zeros=zeros)
  if epilogue:
    out_shape = (shape[0], *out_spatial(shape[1:3], kshape, strides, pads, dilation), o)
    params.update(residual=rng.standard_normal(out_shape).astype(np.float32) * 8,
                  activation="hard_tanh")
  return args, params


PROBE_CASES = (  # (input shape, o, kshape, strides, pads, dilation, rule, exact zeros, epilogue)
    ((2, 7, 6, 16), 19, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", False, False),
    ((1, 9, 8, 64), 80, (3, 3), (2, 2), ((1, 1), (0, 1)), (1, 1), "gt", True, True),
    ((3, 6, 7, 4), 16, (3, 2), (1, 2), ((2, 0), (1, 1)), (2, 1), "ge", False, True),
    ((2, 5, 5, 96), 33, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), "gt", False, False),
    ((2, 10, 9, 32), 48, (3, 3), (2, 1), ((1, 1), (1, 1)), (1, 1), "ge", False, True),
)


def _check(rng: np.random.Generator, case: tuple) -> bool:
  args, params = _case(rng, *case)
  given = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in params.items()}
  got = np.asarray(xnor_conv(*(jnp.asarray(a) for a in args), **given))
  want = reference(*args, **params)
  return got.shape == want.shape and np.allclose(got, want, rtol=1e-6, atol=1e-5)


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs the kernel on `PROBE_CASES`; True if it matches `reference` (float rounding)."""
  rng = np.random.default_rng(0)
  return native_build.passes_probe(functools.partial(_check, rng, c) for c in PROBE_CASES)


def available() -> bool:
  """Whether `xnor_conv` may be called here (module docstring: conditions)."""
  return (jax.default_backend() == "cpu" and popcount_path() in (PATHS[2], PATHS[1])
          and _probe())
