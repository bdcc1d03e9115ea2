"""Tests for the "pix2pix" method (jaxcompress.methods.pix2pix) on a tiny U-Net and PatchGAN.

The official step (junyanz/pytorch-CycleGAN-and-pix2pix `models/pix2pix_model.py`, SJLeo/DMAD
`models/Pix2Pix.py`): forward fake_B = G(A); discriminator step on cat(A, fake_B) / cat(A, B);
then the generator step against the updated, frozen D: L_GAN + 100 |fake_B - B|_1. DMAD trains
it with the hinge loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import traverse_util

from configs.gan import pix2pix_quick
from jaxcompress import methods
from jaxcompress.errors import ConfigError
from jaxcompress.methods.pix2pix import Pix2Pix

SIZE = 64
LR = 1e-3  # the official 2e-4 learns too slowly for a test of a few hundred steps


def _config(**gan):
  c = pix2pix_quick.get_config("quick")
  # 6 downsamplings (64 -> 1): the smallest U-Net with a dropout layer ("up2").
  c.model.generator.kwargs.update({"ngf": 4, "num_downs": 6})
  c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 1})
  c.optim.learning_rate = LR
  c.gan.update(gan)
  return c


def _method(**gan):
  return Pix2Pix(_config(**gan), steps_per_epoch=1000, total_steps=2000)


def _pairs(n=16, seed=0):
  """A: smooth colour blobs; B = the colour negative of A (a per-pixel mapping)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
  cx, cy, r = rng.uniform(0.2, 0.8, (3, n, 1, 1, 1))
  colour = rng.uniform(-1, 1, (n, 1, 1, 3))
  a = colour * np.exp(-((xx[None, ..., None] - cx) ** 2 + (yy[None, ..., None] - cy) ** 2)
                      / (r / 3) ** 2)
  a = np.clip(a, -1, 1).astype(np.float32)
  return a, -a


def _batch(a, b, idx):
  return {"A": jnp.asarray(a[idx]), "B": jnp.asarray(b[idx]),
          "mask": jnp.ones((len(idx),), jnp.float32)}


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree))


def _assert_trees_close(x, y, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), x, y)


class Pix2PixTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.a, cls.b = _pairs()
    cls.batch = _batch(cls.a, cls.b, [0, 1])
    cls.method = _method()
    cls.state = jax.jit(cls.method.init)(jax.random.key(0), cls.batch)
    cls.step = staticmethod(jax.jit(cls.method.train_step))

  def test_registered(self):
    self.assertIs(methods.get("pix2pix"), Pix2Pix)

  def test_state_layout(self):
    s = self.state
    self.assertEqual(set(s.params), {"G", "D"})
    self.assertEqual(set(s.opt_state), {"G", "D"})
    self.assertEqual(set(s.opt_state["G"][0].mu), {"G"})
    self.assertEqual(s.extra, {})  # no pool by default (official pix2pix pool_size 0)
    self.assertEqual(s.params["D"]["conv0"]["kernel"].shape[2], 6)  # D sees cat(A, B)
    self.assertIn("batch_stats", s.model_state["G"])
    self.assertIn("batch_stats", s.model_state["D"])
    scales = np.concatenate([v.ravel() for k, v in _flat(s.params).items() if k[-1] == "scale"])
    self.assertAlmostEqual(float(scales.mean()), 1.0, delta=0.01)  # BN scale ~ N(1, 0.02)
    self.assertGreater(float(scales.std()), 0.005)
    self.assertEqual(self.method.criterion.mode, "hinge")

  def test_discriminator_step_then_generator_step_against_the_updated_discriminator(self):
    m, s, batch = self.method, self.state, self.batch
    new, metrics = self.step(s, batch)
    self.assertEqual(int(new.step), 1)
    self.assertEqual(set(metrics), {"loss", "G_GAN", "G_L1", "D_real", "D_fake"})
    np.testing.assert_allclose(metrics["loss"], metrics["G_GAN"] + metrics["G_L1"], rtol=1e-6)

    # The parts, each compiled once (the generator step runs twice: after and before D's).
    forward = jax.jit(lambda s, k: m.net("G", s.params, s.model_state, batch["A"], train=True,
                                         rng=k))
    k_gen, k_pool = s.step_rng(0), s.step_rng(1)
    fake_b, once = forward(s, k_gen)
    d_state, _ = jax.jit(m.discriminator_step)(s, batch, fake_b, k_pool)
    generator_step = jax.jit(m.generator_step)
    g_state, _, _ = generator_step(d_state, batch, k_gen)
    g_old_d, _, _ = generator_step(s, batch, k_gen)
    # The generator step leaves D (updated first) alone ...
    jax.tree.map(np.testing.assert_array_equal, g_state.params["D"], d_state.params["D"])
    jax.tree.map(np.testing.assert_array_equal, g_state.opt_state["D"], d_state.opt_state["D"])
    # ... and train_step is exactly this order: D first, then G against the new D.
    _assert_trees_close(new.params, g_state.params, rtol=1e-5, atol=1e-7)
    _assert_trees_close(new.model_state, g_state.model_state, rtol=1e-5, atol=1e-7)
    g_new, g_old = _flat(g_state.params["G"]), _flat(g_old_d.params["G"])
    self.assertTrue(any(not np.allclose(g_new[k], g_old[k], rtol=0, atol=1e-9) for k in g_new))
    for name in ("G", "D"):
      before, after = _flat(s.params[name]), _flat(new.params[name])
      self.assertTrue(any(not np.array_equal(before[k], after[k]) for k in before), name)
    # G's running statistics move once per step (the forward's update is not applied twice).
    _assert_trees_close(new.model_state["G"], once["G"], rtol=1e-5, atol=1e-7)

  def test_generator_loss_terms(self):
    s, batch, rng = self.state, self.batch, jax.random.key(5)

    @jax.jit
    def reference(params):  # G(A) and D(cat(A, G(A))) in training mode, same dropout key
      fake, ms = self.method.net("G", params, s.model_state, batch["A"], train=True, rng=rng)
      pred = self.method.net("D", params, ms, jnp.concatenate([batch["A"], fake], -1),
                             train=True)[0]
      return fake, pred
    fake, pred = (np.asarray(x, np.float64) for x in reference(s.params))
    want_l1 = 100 * np.mean(np.abs(fake - np.asarray(batch["B"])))
    for mode, want_gan in (("hinge", -pred.mean()),
                           ("vanilla", np.mean(np.log1p(np.exp(-pred))))):
      loss, aux = jax.jit(_method(gan_mode=mode).generator_loss)(s.params, s, batch, rng)
      np.testing.assert_allclose(aux["metrics"]["G_GAN"], want_gan, rtol=1e-5, atol=1e-7)
      np.testing.assert_allclose(aux["metrics"]["G_L1"], want_l1, rtol=1e-5)
      np.testing.assert_allclose(loss, want_gan + want_l1, rtol=1e-5)

  def test_dropout_in_training_only(self):
    m, s, a = self.method, self.state, self.batch["A"]
    run = jax.jit(lambda k: m.net("G", s.params, s.model_state, a, train=True, rng=k)[0])
    x0, x0_again, x1 = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
    np.testing.assert_array_equal(x0, x0_again)
    self.assertGreater(float(jnp.abs(x0 - x1).max()), 1e-6)
    predict = jax.jit(m.predict)
    np.testing.assert_array_equal(predict(s, self.batch)["fake_B"],
                                  predict(s, self.batch)["fake_B"])

  def test_training_reduces_the_l1_loss(self):
    state = self.state
    rng = np.random.default_rng(0)
    l1 = []
    for _ in range(300):
      state, metrics = self.step(state, _batch(self.a, self.b, rng.choice(len(self.a), 2, False)))
      l1.append(float(metrics["G_L1"]))
    first, last = np.mean(l1[:20]), np.mean(l1[-20:])
    self.assertLess(last, 0.5 * first, f"L1 loss {first:.3f} -> {last:.3f}")

  def test_eval_step_psnr_and_l1_and_predict(self):
    out = jax.jit(self.method.predict)(self.state, self.batch)
    self.assertEqual(set(out), {"fake_B", "real_A", "real_B"})
    fake = np.asarray(out["fake_B"], np.float64)
    target = np.asarray(self.batch["B"], np.float64)
    mse = np.mean(((np.clip(fake, -1, 1) + 1) / 2 - (target + 1) / 2) ** 2, axis=(1, 2, 3))
    l1 = np.mean(np.abs(fake - target), axis=(1, 2, 3))
    ev = jax.jit(self.method.eval_step)
    metrics = ev(self.state, self.batch)
    np.testing.assert_allclose(metrics["psnr"], np.sum(10 * np.log10(1 / mse)), rtol=1e-5)
    np.testing.assert_allclose(metrics["l1"], np.sum(l1), rtol=1e-5)
    masked = ev(self.state, {**self.batch, "mask": jnp.asarray([0.0, 1.0])})
    np.testing.assert_allclose(masked["psnr"], 10 * np.log10(1 / mse[1]), rtol=1e-5)
    np.testing.assert_allclose(masked["l1"], l1[1], rtol=1e-5)

  def test_pool_and_config_errors(self):
    method = _method(pool_size=3)
    extra = jax.eval_shape(method.init, jax.random.key(0), self.batch).extra
    self.assertEqual(extra["fake_AB_pool"]["images"].shape, (3, SIZE, SIZE, 6))
    with self.assertRaisesRegex(ConfigError, "gan_mode"):
      _method(gan_mode="wgan")
    bad = {"A": jnp.zeros((1, 48, 48, 3)), "B": jnp.zeros((1, 48, 48, 3))}
    with self.assertRaisesRegex(ValueError, "multiples of 64"):
      jax.eval_shape(self.method.init, jax.random.key(0), bad)


if __name__ == "__main__":
  absltest.main()
