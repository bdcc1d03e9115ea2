"""Tests for jaxcompress.selfsup moco_logits / info_nce / queue_push / init_queue vs NumPy loops."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import selfsup


def np_logits(q, k, queue, n=None, t=0.07):
  """Row by row: [q_b.k_b, q_b.queue_0, ..., q_b.queue_{K-1}(, q_b.n_b)] / T."""
  rows = []
  for b in range(q.shape[0]):
    row = [float(np.dot(q[b], k[b]))] + [float(np.dot(q[b], v)) for v in queue]
    if n is not None:
      row.append(float(np.dot(q[b], n[b])))
    rows.append(row)
  return np.array(rows) / t


def np_info_nce(logits):
  """Cross-entropy with label 0: -log softmax(row)[0], averaged over rows."""
  return np.mean([-math.log(math.exp(r[0] - r.max()) / np.exp(r - r.max()).sum())
                  for r in logits])


def np_queue_push(queue, index, keys):
  queue = queue.copy()
  for b in range(keys.shape[0]):
    queue[(index + b) % queue.shape[0]] = keys[b]
  return queue, (index + keys.shape[0]) % queue.shape[0]


def _data(seed=0, b=4, k=16, d=8):
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  return (unit(rng.normal(size=(b, d))), unit(rng.normal(size=(b, d))),
          unit(rng.normal(size=(k, d))), unit(rng.normal(size=(b, d))))


class MocoLogitsTest(parameterized.TestCase):

  @parameterized.product(jit=(True, False), with_negatives=(True, False))
  def test_values_and_layout(self, jit, with_negatives):
    q, k, queue, n = _data()
    fn = jax.jit(selfsup.moco_logits) if jit else selfsup.moco_logits
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    out = fn(f32(q), f32(k), f32(queue), f32(n) if with_negatives else None, 0.07)
    self.assertEqual(out.shape, (4, 16 + (2 if with_negatives else 1)))
    self.assertEqual(out.dtype, jnp.float32)
    ref = np_logits(q, k, queue, n if with_negatives else None)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)

  def test_float64_and_traced_temperature(self):
    with jax.enable_x64(True):
      q, k, queue, n = _data(1)
      traces = []

      @jax.jit
      def fn(t):
        traces.append(1)
        return selfsup.moco_logits(q, k, queue, n, t)

      for t in (0.07, 0.2, 1.0):
        out = fn(jnp.asarray(t))
        self.assertEqual(out.dtype, jnp.float64)
        np.testing.assert_allclose(np.asarray(out), np_logits(q, k, queue, n, t), rtol=1e-12)
      self.assertLen(traces, 1)

  @parameterized.parameters(True, False)
  def test_gradient_reaches_q_and_negatives_only(self, jit):
    with jax.enable_x64(True):
      q, k, queue, n = _data(2)
      w = np.random.default_rng(3).normal(size=(4, 18))
      t = 0.1
      loss = lambda q, k, queue, n: jnp.sum(w * selfsup.moco_logits(q, k, queue, n, t))
      grad_fn = jax.grad(loss, argnums=(0, 1, 2, 3))
      gq, gk, gqueue, gn = (jax.jit(grad_fn) if jit else grad_fn)(q, k, queue, n)
      # d/dq_b = (w_b0 k_b + sum_j w_b(j+1) queue_j + w_b(K+1) n_b) / T; d/dn_b = w_b(K+1) q_b / T.
      ref_q = (w[:, :1] * k + w[:, 1:17] @ queue + w[:, 17:] * n) / t
      np.testing.assert_allclose(np.asarray(gq), ref_q, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(np.asarray(gn), w[:, 17:] * q / t, rtol=1e-12, atol=1e-12)
      np.testing.assert_array_equal(np.asarray(gk), np.zeros_like(k))
      np.testing.assert_array_equal(np.asarray(gqueue), np.zeros_like(queue))

  def test_bad_shapes(self):
    q, k, queue, n = _data()
    with self.assertRaisesRegex(ValueError, "k has shape"):
      selfsup.moco_logits(q, k[:3], queue)
    with self.assertRaisesRegex(ValueError, "queue must be"):
      selfsup.moco_logits(q, k, queue[:, :5])
    with self.assertRaisesRegex(ValueError, "negatives has shape"):
      selfsup.moco_logits(q, k, queue, n[:, :5])
    with self.assertRaisesRegex(ValueError, "q must be"):
      selfsup.moco_logits(q[0], k[0], queue)
    with self.assertRaisesRegex(ValueError, "temperature"):
      selfsup.moco_logits(q, k, queue, temperature=0.0)


class InfoNceTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_value_and_gradient(self, jit):
    logits = np.random.default_rng(0).normal(size=(5, 7)) * 3
    fn = jax.jit(selfsup.info_nce) if jit else selfsup.info_nce
    out = fn(jnp.asarray(logits, jnp.float32))
    self.assertEqual(out.shape, ())
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(float(out), np_info_nce(logits), rtol=1e-5)
    # d/dlogits = (softmax - onehot(0)) / B.
    grad = jax.grad(fn)(jnp.asarray(logits, jnp.float32))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[:, 0] -= 1
    np.testing.assert_allclose(np.asarray(grad), p / 5, rtol=1e-5, atol=1e-6)

  def test_equal_similarities_give_log_of_columns(self):
    # B = 4, K = 16 plus the positive and the intra-video negative: ln(K + 2).
    q = np.tile(np.eye(8)[:1], (4, 1))
    k = np.tile(np.eye(8)[1:2], (4, 1))
    out = selfsup.info_nce(selfsup.moco_logits(q, k, np.tile(np.eye(8)[2:3], (16, 1)),
                                               np.tile(np.eye(8)[3:4], (4, 1))))
    np.testing.assert_allclose(float(out), math.log(18), rtol=1e-6)

  def test_float64(self):
    with jax.enable_x64(True):
      logits = np.random.default_rng(1).normal(size=(3, 5))
      out = selfsup.info_nce(jnp.asarray(logits))
      self.assertEqual(out.dtype, jnp.float64)
      np.testing.assert_allclose(float(out), np_info_nce(logits), rtol=1e-13)

  def test_bad_shape(self):
    with self.assertRaisesRegex(ValueError, "column 0"):
      selfsup.info_nce(jnp.zeros(4))


class QueuePushTest(parameterized.TestCase):

  def test_wraps_around_with_traced_index(self):
    rng = np.random.default_rng(0)
    queue = rng.normal(size=(7, 3)).astype(np.float32)
    push = jax.jit(selfsup.queue_push)
    q, idx = jnp.asarray(queue), jnp.asarray(0, jnp.int32)
    ref_q, ref_idx = queue, 0
    for step in range(6):  # 3 keys a step into 7 rows: the pointer wraps every few steps
      keys = rng.normal(size=(3, 3)).astype(np.float32)
      q, idx = push(q, idx, jnp.asarray(keys))
      ref_q, ref_idx = np_queue_push(ref_q, ref_idx, keys)
      self.assertEqual(idx.dtype, jnp.int32)
      self.assertEqual(idx.shape, ())
      self.assertEqual(int(idx), ref_idx, msg=f"step {step}")
      np.testing.assert_array_equal(np.asarray(q), ref_q)
    self.assertEqual(push._cache_size(), 1)

  def test_python_index_full_queue_and_dtype(self):
    queue = np.zeros((4, 2), np.float32)
    keys = np.arange(8, dtype=np.float64).reshape(4, 2)
    q, idx = selfsup.queue_push(queue, 2, keys)
    self.assertEqual(q.dtype, jnp.float32)
    self.assertEqual(int(idx), 2)
    np.testing.assert_array_equal(np.asarray(q), keys[[2, 3, 0, 1]])

  def test_keys_are_constants(self):
    queue = jnp.zeros((5, 2))
    keys = jnp.ones((2, 2))
    grad = jax.grad(lambda k: jnp.sum(selfsup.queue_push(queue, 4, k)[0]))(keys)
    np.testing.assert_array_equal(np.asarray(grad), np.zeros((2, 2)))

  def test_more_keys_than_rows(self):
    with self.assertRaisesRegex(ValueError, "do not fit"):
      selfsup.queue_push(jnp.zeros((3, 2)), 0, jnp.zeros((4, 2)))
    with self.assertRaisesRegex(ValueError, "same D"):
      selfsup.queue_push(jnp.zeros((3, 2)), 0, jnp.zeros((2, 3)))


class InitQueueTest(absltest.TestCase):

  def test_official_uniform_range(self):
    d = 128
    queue = selfsup.init_queue(jax.random.key(0), 3569, d)
    self.assertEqual(queue.shape, (3569, d))
    self.assertEqual(queue.dtype, jnp.float32)
    bound = 1 / math.sqrt(d / 3)
    x = np.asarray(queue, np.float64)
    self.assertLessEqual(x.max(), bound)
    self.assertGreaterEqual(x.min(), -bound)
    self.assertGreater(x.max(), 0.999 * bound)
    self.assertLess(x.min(), -0.999 * bound)
    # Uniform: variance bound**2 / 3 = 1 / D, so squared row norms average 1 (not normalised).
    np.testing.assert_allclose(x.var(), 1 / d, rtol=0.02)
    np.testing.assert_allclose(np.mean(np.sum(x ** 2, 1)), 1.0, rtol=0.02)
    self.assertGreater(np.std(np.sum(x ** 2, 1)), 0.01)
    np.testing.assert_array_equal(
        np.asarray(selfsup.init_queue(jax.random.key(0), 3569, d)), np.asarray(queue))

  def test_float64(self):
    with jax.enable_x64(True):
      self.assertEqual(selfsup.init_queue(jax.random.key(1), 4, 6, jnp.float64).dtype,
                       jnp.float64)


if __name__ == "__main__":
  absltest.main()
