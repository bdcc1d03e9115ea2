"""Tests for jaxcompress.distill.coattention (DMAD co-attention and discriminator distillation)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import distill
from jaxcompress.distill import coattention

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # optional cross-check against the official PyTorch formulation
  torch = None


def np_attention(f):
  """NumPy reference of the official `f.pow(2).mean(1)` on NHWC features."""
  return (np.asarray(f, np.float64) ** 2).mean(-1)


def np_normalize(a):
  a = a.reshape(a.shape[0], -1)
  return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def np_co_attention(s, t, d, normalize=True):
  target = 0.5 * np_attention(t) + 0.5 * np_attention(d)
  student = np_attention(s)
  if normalize:
    return np.mean((np_normalize(target) - np_normalize(student)) ** 2)
  return np.mean((target - student) ** 2)


def numeric_grad(fn, x, eps=1e-6):
  """Central differences of a scalar NumPy function."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[i] += eps
    down[i] -= eps
    g[i] = (fn(up) - fn(down)) / (2 * eps)
  return g


def features(seed, channels=(3, 5, 4), shape=(2, 3, 4)):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape + (c,)) for c in channels]


class SpatialAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy(self):
    with jax.enable_x64(True):
      f = features(0)[0]
      a = self.variant(distill.spatial_attention)(f)
      self.assertEqual(a.shape, (2, 3, 4))
      self.assertEqual(a.dtype, jnp.float64)
      np.testing.assert_allclose(a, np_attention(f), rtol=1e-12)

  def test_float32_stays_float32(self):
    f = jnp.ones((1, 2, 2, 3), jnp.float32)
    self.assertEqual(distill.spatial_attention(f).dtype, jnp.float32)

  def test_rejects_non_nhwc(self):
    with self.assertRaisesRegex(ValueError, "NHWC"):
      distill.spatial_attention(jnp.ones((2, 3, 4)))


class CoAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_against_numpy(self):
    with jax.enable_x64(True):
      s, t, d = features(1)
      for normalize in (True, False):
        fn = self.variant(lambda a, b, c, n=normalize: distill.co_attention_loss(a, b, c, n))
        loss = fn(s, t, d)
        self.assertEqual(loss.dtype, jnp.float64)
        np.testing.assert_allclose(loss, np_co_attention(s, t, d, normalize), rtol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_against_finite_differences(self):
    with jax.enable_x64(True):
      s, t, d = features(2, shape=(2, 2, 3))
      for normalize in (True, False):
        grad = self.variant(jax.grad(
            lambda a, b, c, n=normalize: distill.co_attention_loss(a, b, c, n), argnums=(0, 1, 2)))
        gs, gt, gd = grad(s, t, d)
        np.testing.assert_allclose(
            gs, numeric_grad(lambda x: np_co_attention(x, t, d, normalize), s), atol=1e-8)
        np.testing.assert_allclose(
            gt, numeric_grad(lambda x: np_co_attention(s, x, d, normalize), t), atol=1e-8)
        np.testing.assert_allclose(
            gd, numeric_grad(lambda x: np_co_attention(s, t, x, normalize), d), atol=1e-8)
        # The discriminator half of the target is not detached (official behaviour).
        self.assertGreater(float(jnp.max(jnp.abs(gd))), 1e-6)

  def test_zero_for_identical_features(self):
    f = jnp.asarray(features(3)[0], jnp.float32)
    self.assertEqual(float(distill.co_attention_loss(f, f, f)), 0.0)
    self.assertEqual(float(distill.co_attention_loss(f, f, f, normalize=False)), 0.0)
    # Teacher and discriminator maps that average to the student's map also give 0.
    self.assertAlmostEqual(
        float(distill.co_attention_loss(f, f * np.sqrt(0.5), f * np.sqrt(1.5), False)), 0.0,
        places=10)

  def test_scale_invariant_when_normalized(self):
    with jax.enable_x64(True):
      s, t, d = features(4)
      base = distill.co_attention_loss(s, t, d)
      self.assertGreater(float(base), 0.0)
      # Scaling the student, or both target features together, leaves the normalised maps unchanged.
      np.testing.assert_allclose(distill.co_attention_loss(3.0 * s, t, d), base, rtol=1e-10)
      np.testing.assert_allclose(distill.co_attention_loss(s, 0.1 * t, 0.1 * d), base, rtol=1e-10)
      # Without normalisation the scale matters.
      self.assertNotAlmostEqual(float(distill.co_attention_loss(3.0 * s, t, d, normalize=False)),
                                float(distill.co_attention_loss(s, t, d, normalize=False)))

  def test_channel_counts_may_differ_but_positions_must_match(self):
    s = jnp.ones((2, 4, 4, 3))
    self.assertEqual(distill.co_attention_loss(s, jnp.ones((2, 4, 4, 7)),
                                               jnp.ones((2, 4, 4, 1))).shape, ())
    with self.assertRaisesRegex(ValueError, "share N, H, W"):
      distill.co_attention_loss(s, jnp.ones((2, 4, 4, 3)), jnp.ones((2, 8, 8, 3)))
    with self.assertRaisesRegex(ValueError, "share N, H, W"):
      distill.co_attention_loss(s, jnp.ones((2, 4, 5, 3)), jnp.ones((2, 4, 4, 3)))

  def test_zero_student_has_finite_gradient(self):
    s = jnp.zeros((1, 2, 2, 3))
    t, d = (jnp.asarray(x, jnp.float32) for x in features(5, shape=(1, 2, 2))[1:])
    g = jax.grad(distill.co_attention_loss, argnums=(0, 2))(s, t, d)
    self.assertTrue(all(np.all(np.isfinite(x)) for x in g))

  @absltest.skipIf(torch is None, "PyTorch not installed")
  def test_against_official_formulation_in_torch(self):
    s, t, d = features(6)
    # Official models/CycleGAN.py + utils/util.py on NCHW features.
    ts, tt, td = (torch.tensor(np.transpose(x, (0, 3, 1, 2)), requires_grad=True)
                  for x in (s, t, d))
    att = lambda f: f.pow(2).mean(1, keepdim=True)
    mix = att(tt) * 0.5 + att(td) * 0.5
    norm = lambda x: torch.nn.functional.normalize(x.view(x.size(0), -1))
    loss = (norm(mix) - norm(att(ts))).pow(2).mean()
    loss.backward()
    with jax.enable_x64(True):
      np.testing.assert_allclose(coattention.co_attention_loss(s, t, d), loss.item(), rtol=1e-12)
      gs, gd = jax.grad(coattention.co_attention_loss, argnums=(0, 2))(s, t, d)
      np.testing.assert_allclose(gs, np.transpose(ts.grad.numpy(), (0, 2, 3, 1)), rtol=1e-10)
      np.testing.assert_allclose(gd, np.transpose(td.grad.numpy(), (0, 2, 3, 1)), rtol=1e-10)


class DiscDistillTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_gradient(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(7)
      a, b = rng.standard_normal((2, 3, 3, 4)), rng.standard_normal((2, 3, 3, 4))
      loss = self.variant(distill.disc_distill_loss)(a, b)
      self.assertEqual(loss.dtype, jnp.float64)
      np.testing.assert_allclose(loss, np.sqrt(np.sum((a - b) ** 2)), rtol=1e-12)
      ga, gb = self.variant(jax.grad(distill.disc_distill_loss, argnums=(0, 1)))(a, b)
      np.testing.assert_allclose(ga, (a - b) / np.linalg.norm(a - b), rtol=1e-10)
      np.testing.assert_allclose(gb, -(a - b) / np.linalg.norm(a - b), rtol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_gradient_when_equal(self):
    a = jnp.asarray(features(8)[0], jnp.float32)
    loss = self.variant(distill.disc_distill_loss)(a, a)
    self.assertEqual(float(loss), 0.0)
    g = self.variant(jax.grad(distill.disc_distill_loss))(a, a)
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_array_equal(g, 0.0)

  def test_float32_and_shape_check(self):
    a = jnp.ones((1, 2, 2, 3), jnp.float32)
    self.assertEqual(distill.disc_distill_loss(a, 2 * a).dtype, jnp.float32)
    np.testing.assert_allclose(distill.disc_distill_loss(a, 2 * a), np.sqrt(12.0), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "shapes differ"):
      distill.disc_distill_loss(a, jnp.ones((1, 2, 2, 4)))


if __name__ == "__main__":
  absltest.main()
