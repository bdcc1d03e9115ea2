"""Tests for jaxcompress.ops.max_pool: values and gradients against a NumPy loop and flax."""
from __future__ import annotations

import itertools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.ops import max_pool as max_pool_lib

# (name, input shape, window, strides, padding)
CASES = [
    ("r3d_stem_pool", (2, 5, 8, 7, 3), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3),
    ("c3d_pool", (2, 4, 6, 6, 2), (2, 2, 2), (2, 2, 2), ((0, 0),) * 3),
    ("c3d_pool1_ceil_pad", (1, 3, 7, 5, 2), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 1), (0, 1))),
    ("i3d_asym", (2, 4, 9, 9, 2), (1, 3, 3), (1, 2, 2), ((0, 0), (0, 1), (1, 1))),
    ("stride_over_window", (2, 7, 7, 3), (2, 2), (3, 3), ((0, 0), (0, 0))),
    ("2d_3x3_s1", (2, 6, 5, 4), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ("1d", (3, 10, 2), (3,), (2,), ((1, 0),)),
]


def _numpy_pool(x, window, strides, pads):
  """Max over each window of the -inf padded input and the flat input index of its first
  maximum (row-major tap order), by explicit loops."""
  x = np.asarray(x, np.float64)
  n, c = x.shape[0], x.shape[-1]
  in_sp = x.shape[1:-1]
  out_sp = [(size + lo + hi - k) // s + 1
            for size, k, s, (lo, hi) in zip(in_sp, window, strides, pads)]
  out = np.zeros((n, *out_sp, c))
  arg = np.full((n, *out_sp, c), -1, np.int64)
  for b, ch in itertools.product(range(n), range(c)):
    for p in itertools.product(*[range(o) for o in out_sp]):
      best, where = -np.inf, -1
      for tap in itertools.product(*[range(k) for k in window]):
        pos = [pi * s + t - lo for pi, s, t, (lo, _) in zip(p, strides, tap, pads)]
        if all(0 <= q < size for q, size in zip(pos, in_sp)):
          value = x[(b, *pos, ch)]
          if value > best:
            best, where = value, np.ravel_multi_index(pos, in_sp)
      out[(b, *p, ch)] = best
      arg[(b, *p, ch)] = where
  return out, arg


def _numpy_grad(x, g, window, strides, pads):
  """d sum(pool(x) * g) / dx: each window's cotangent to its first maximum."""
  _, arg = _numpy_pool(x, window, strides, pads)
  n, c = x.shape[0], x.shape[-1]
  dx = np.zeros((n, int(np.prod(x.shape[1:-1])), c))
  g = np.asarray(g, np.float64)
  for index in itertools.product(*[range(d) for d in arg.shape]):
    dx[index[0], arg[index], index[-1]] += g[index]
  return dx.reshape(x.shape)


def _inputs(shape, window, strides, pads, dtype):
  rng = np.random.default_rng(sum(shape))
  # ReLU outputs: many tied zeros, where the tie rule decides the gradient.
  x = np.maximum(rng.standard_normal(shape), 0.0).astype(dtype)
  out_sp = [(size + lo + hi - k) // s + 1
            for size, k, s, (lo, hi) in zip(shape[1:-1], window, strides, pads)]
  g = rng.standard_normal((shape[0], *out_sp, shape[-1])).astype(dtype)
  return x, g


class MaxPoolTest(parameterized.TestCase):

  @parameterized.named_parameters(
      *[(f"{c[0]}_{dt.__name__}_{'jit' if jit else 'eager'}", c, dt, jit)
        for c in CASES for dt in (np.float32, np.float64) for jit in (True, False)
        if jit or dt is np.float32])
  def test_matches_numpy_loops(self, case, dtype, jit):
    _, shape, window, strides, pads = case
    x, g = _inputs(shape, window, strides, pads, dtype)
    fn = lambda a: max_pool_lib.max_pool(a, window, strides, pads)
    vjp = lambda a, b: jax.vjp(fn, a)[1](b)[0]
    if jit:
      fn, vjp = jax.jit(fn), jax.jit(vjp)
    want_out, _ = _numpy_pool(x, window, strides, pads)
    want_dx = _numpy_grad(x, g, window, strides, pads)
    with jax.enable_x64(dtype == np.float64):
      out, dx = fn(jnp.asarray(x)), vjp(jnp.asarray(x), jnp.asarray(g))
      self.assertEqual(out.dtype, dtype)
      self.assertEqual(dx.dtype, dtype)
      np.testing.assert_array_equal(np.asarray(out), want_out.astype(dtype))
      np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-6, atol=1e-6)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_flax_max_pool(self, case):
    _, shape, window, strides, pads = case
    x, g = _inputs(shape, window, strides, pads, np.float32)
    ours = lambda a: jnp.sum(max_pool_lib.max_pool(a, window, strides, pads) * g)
    ref = lambda a: jnp.sum(nn.max_pool(a, window, strides, padding=pads) * g)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda a: max_pool_lib.max_pool(a, window, strides, pads))(x)),
        np.asarray(nn.max_pool(jnp.asarray(x), window, strides, padding=pads)))
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(ours))(x)),
                               np.asarray(jax.jit(jax.grad(ref))(x)), rtol=1e-6, atol=1e-6)

  def test_bfloat16_keeps_dtype(self):
    x, g = _inputs((2, 4, 6, 6, 3), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3, np.float32)
    x, g = jnp.asarray(x, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)
    args = ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3)
    out, vjp = jax.vjp(lambda a: max_pool_lib.max_pool(a, *args), x)
    ref_out, ref_vjp = jax.vjp(lambda a: nn.max_pool(a, args[0], args[1], padding=args[2]), x)
    self.assertEqual(out.dtype, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref_out, np.float32))
    np.testing.assert_allclose(np.asarray(vjp(g)[0], np.float32),
                               np.asarray(ref_vjp(g)[0], np.float32), rtol=1e-2, atol=1e-2)

  def test_gradient_has_no_select_and_scatter_on_cpu(self):
    x = jnp.zeros((2, 4, 6, 6, 3))
    args = ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3)
    jaxpr = lambda: str(jax.make_jaxpr(jax.grad(
        lambda a: jnp.sum(max_pool_lib.max_pool(a, *args))))(x))
    self.assertNotIn("select_and_scatter", jaxpr())
    self.assertNotIn("reduce_window", jaxpr())
    with mock.patch.object(jax, "default_backend", return_value="gpu"):
      self.assertIn("reduce_window", jaxpr())  # other backends: flax's max_pool

  def test_bad_arguments_name_the_problem(self):
    x = jnp.zeros((2, 4, 6, 6, 3))
    with self.assertRaisesRegex(ValueError, "one window"):
      max_pool_lib.max_pool(x, (3, 3), (2, 2), ((1, 1),) * 2)
    with self.assertRaisesRegex(ValueError, "padding >= 0"):
      max_pool_lib.max_pool(x, (3, 3, 3), (2, 2, 2), ((-1, 1),) * 3)


if __name__ == "__main__":
  absltest.main()
