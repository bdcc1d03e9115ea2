"""Tests for jaxcompress.gan.losses against NumPy references of the official GANLoss.

References: junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` (lsgan: MSE to 1/0,
vanilla: BCE with logits) and SJLeo/DMAD `models/GANLoss.py` (hinge).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.errors import ConfigError
from jaxcompress.gan import losses


def np_loss(z, mode, real, for_d=True):
  """(value, d value / d z) in float64."""
  z = np.asarray(z, np.float64)
  n = z.size
  t = 1.0 if real else 0.0
  if mode == "lsgan":
    return np.mean((z - t) ** 2), 2 * (z - t) / n
  if mode == "vanilla":  # -[t log s(z) + (1 - t) log(1 - s(z))]
    s = 1 / (1 + np.exp(-z))
    value = -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s))
    return value, (s - t) / n
  if not for_d:
    return -np.mean(z), -np.ones_like(z) / n
  if real:  # DMAD: -mean(min(z - 1, 0))
    return -np.mean(np.minimum(z - 1, 0)), -(z < 1).astype(np.float64) / n
  return -np.mean(np.minimum(-z - 1, 0)), (z > -1).astype(np.float64) / n


def _z(seed=0, shape=(2, 5, 5, 1)):
  # Away from the hinge kinks (|z| = 1), where the subgradient is a convention.
  z = np.random.default_rng(seed).uniform(-3, 3, shape)
  z[np.abs(np.abs(z) - 1) < 1e-2] += 0.1
  return z.astype(np.float32)


class GANLossTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(mode=("lsgan", "vanilla", "hinge"), real=(True, False))
  def test_discriminator_form_value_and_gradient(self, mode, real):
    z = _z()
    fn = self.variant(lambda x: losses.GANLoss(mode)(x, real))
    value, grad = jax.value_and_grad(fn)(jnp.asarray(z))
    ref, ref_grad = np_loss(z, mode, real)
    np.testing.assert_allclose(value, ref, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
    self.assertEqual(value.dtype, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("lsgan", "vanilla", "hinge")
  def test_generator_form(self, mode):
    z = _z(1)
    fn = self.variant(losses.GANLoss(mode).generator)
    value, grad = jax.value_and_grad(fn)(jnp.asarray(z))
    ref, ref_grad = np_loss(z, mode, True, for_d=False)
    np.testing.assert_allclose(value, ref, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)

  def test_hinge_generator_differs_from_its_discriminator_real_form(self):
    z = jnp.asarray(_z(2))
    g = losses.GANLoss("hinge")
    self.assertGreater(abs(float(g(z, True) - g.generator(z))), 1e-3)
    with self.assertRaises(ValueError):
      losses.hinge_loss(z, False, for_discriminator=False)

  @parameterized.parameters("lsgan", "vanilla", "hinge")
  def test_discriminator_is_half_the_sum(self, mode):
    real, fake = _z(3), _z(4)
    ref = 0.5 * (np_loss(real, mode, True)[0] + np_loss(fake, mode, False)[0])
    np.testing.assert_allclose(losses.GANLoss(mode).discriminator(real, fake), ref, rtol=1e-5)

  def test_vanilla_is_finite_for_large_logits(self):
    z = jnp.asarray([-200.0, 200.0])
    self.assertTrue(np.isfinite(float(losses.vanilla_loss(z, True))))
    np.testing.assert_allclose(losses.vanilla_loss(z, True), 100.0, rtol=1e-6)

  def test_functions_match_the_class(self):
    z = jnp.asarray(_z(5))
    np.testing.assert_allclose(losses.lsgan_loss(z, True), losses.GANLoss("lsgan")(z, True))
    np.testing.assert_allclose(losses.vanilla_loss(z, False), losses.GANLoss("vanilla")(z, False))

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ConfigError, "gan_mode"):
      losses.GANLoss("wgan")


if __name__ == "__main__":
  absltest.main()
