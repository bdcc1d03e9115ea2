"""Tests for the "cyclegan" method (jaxcompress.methods.cyclegan) on tiny networks.

The official step (junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`): generator
step with the discriminators frozen, then the discriminator step on pooled fakes of the forward
before the generator update; LSGAN, cycle 10 + 10, identity 0.5.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest
from flax import traverse_util

from configs.gan import cyclegan_quick
from jaxcompress import methods
from jaxcompress.errors import ConfigError
from jaxcompress.methods.cyclegan import CycleGAN

SIZE = 16
G_TERMS = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B")


LR = 1e-3  # the official 2e-4 learns too slowly for a test of a few hundred steps


def _config(**gan):
  c = cyclegan_quick.get_config("quick")
  c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 1})
  c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 1})
  c.optim.learning_rate = LR
  c.gan.update(gan)
  return c


def _method(**gan):
  # Long epochs: the learning rate stays constant over the test's steps.
  return CycleGAN(_config(**gan), steps_per_epoch=1000, total_steps=2000)


def _domains(n=16, seed=0):
  """Unpaired smooth images: A random blobs, B = the colour negatives of other blobs."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE

  def blobs(k):
    cx, cy, r = rng.uniform(0.2, 0.8, (3, k, 1, 1, 1))
    colour = rng.uniform(-1, 1, (k, 1, 1, 3))
    d = np.exp(-((xx[None, ..., None] - cx) ** 2 + (yy[None, ..., None] - cy) ** 2) / (r / 3) ** 2)
    return np.clip(colour * d, -1, 1).astype(np.float32)
  return blobs(n), -blobs(n)


def _batch(a, b, idx):
  return {"A": jnp.asarray(a[idx]), "B": jnp.asarray(b[idx]),
          "mask": jnp.ones((len(idx),), jnp.float32)}


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree))


class CycleGANTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.a, cls.b = _domains()
    cls.batch = _batch(cls.a, cls.b, [0, 1])
    cls.method = _method()
    cls.state = jax.jit(cls.method.init)(jax.random.key(0), cls.batch)
    # One compiled step for every test (a staticmethod: not bound to the test instance).
    cls.step = staticmethod(jax.jit(cls.method.train_step))

  def test_registered(self):
    self.assertIs(methods.get("cyclegan"), CycleGAN)

  def test_state_layout_and_official_init(self):
    s = self.state
    self.assertEqual(set(s.params), {"G_A", "G_B", "D_A", "D_B"})
    self.assertEqual(set(s.opt_state), {"G", "D"})
    # Each Adam state holds moments of its own networks only.
    g_mu = s.opt_state["G"][0].mu
    self.assertEqual(set(g_mu), {"G_A", "G_B"})
    self.assertEqual(set(s.opt_state["D"][0].mu), {"D_A", "D_B"})
    for pool in ("fake_A_pool", "fake_B_pool"):
      self.assertEqual(s.extra[pool]["images"].shape, (50, SIZE, SIZE, 3))
      self.assertEqual(int(s.extra[pool]["count"]), 0)
    flat = _flat(s.params)
    kernels = np.concatenate([v.ravel() for k, v in flat.items() if k[-1] == "kernel"])
    self.assertAlmostEqual(float(kernels.std()), 0.02, delta=2e-3)
    for k, v in flat.items():
      if k[-1] == "bias":
        np.testing.assert_array_equal(v, 0.0, err_msg=str(k))

  def test_one_step_updates_generators_and_discriminators(self):
    new, metrics = self.step(self.state, self.batch)
    self.assertEqual(int(new.step), 1)
    self.assertEqual(set(metrics), {"loss", "D_A", "D_B", *G_TERMS})
    np.testing.assert_allclose(metrics["loss"], sum(metrics[k] for k in G_TERMS), rtol=1e-6)
    for name in ("G_A", "G_B", "D_A", "D_B"):
      before, after = _flat(self.state.params[name]), _flat(new.params[name])
      self.assertTrue(any(not np.array_equal(before[k], after[k]) for k in before), name)
    for pool in ("fake_A_pool", "fake_B_pool"):
      self.assertEqual(int(new.extra[pool]["count"]), 2)
    for v in metrics.values():
      self.assertTrue(np.isfinite(float(v)))

  def test_generator_step_freezes_discriminators_and_train_step_composes(self):
    m, s, batch = self.method, self.state, self.batch

    @jax.jit
    def probe(s):
      rng = s.step_rng(0)
      g_state, _, aux = m.generator_step(s, batch, rng)
      grads = jax.grad(lambda p: m.generator_loss(p, s, batch, rng)[0])(s.params)
      return g_state, grads, aux["fakes"]
    g_state, grads, fakes = probe(s)
    # The generator loss depends on D (non-zero gradient), yet D and its optimizer stay put.
    self.assertGreater(max(float(jnp.abs(x).max()) for x in jax.tree.leaves(grads["D_A"])), 0.0)
    for name in ("D_A", "D_B"):
      jax.tree.map(np.testing.assert_array_equal, g_state.params[name], s.params[name])
    jax.tree.map(np.testing.assert_array_equal, g_state.opt_state["D"], s.opt_state["D"])
    # The generators moved by exactly one Adam step on their own gradients.
    tx = optax.adam(LR, b1=0.5, b2=0.999)
    g_sub = {k: s.params[k] for k in ("G_A", "G_B")}
    updates, _ = tx.update({k: grads[k] for k in g_sub}, tx.init(g_sub), g_sub)
    want = optax.apply_updates(g_sub, updates)
    for k in g_sub:
      jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8),
                   g_state.params[k], want[k])
    # The fakes the discriminators see come from the generators before their update.
    np.testing.assert_allclose(
        fakes["fake_B"], m.net("G_A", s.params, s.model_state, batch["A"], train=True)[0],
        rtol=1e-5, atol=1e-6)

  def test_identity_loss_only_when_lambda_identity_positive(self):
    rng = jax.random.key(3)
    on = jax.jit(self.method.generator_loss)(self.state.params, self.state, self.batch, rng)
    off_method = _method(lambda_identity=0.0)
    off = jax.jit(off_method.generator_loss)(self.state.params, self.state, self.batch, rng)
    on_m, off_m = on[1]["metrics"], off[1]["metrics"]
    self.assertGreater(float(on_m["idt_A"]), 0.0)
    self.assertGreater(float(on_m["idt_B"]), 0.0)
    self.assertEqual(float(off_m["idt_A"]), 0.0)
    self.assertEqual(float(off_m["idt_B"]), 0.0)
    for k in ("G_A", "G_B", "cycle_A", "cycle_B"):
      np.testing.assert_allclose(on_m[k], off_m[k], rtol=1e-6)
    np.testing.assert_allclose(on[0] - off[0], on_m["idt_A"] + on_m["idt_B"], rtol=1e-5)
    # idt_A = lambda_B * lambda_idt * |G_A(B) - B|_1 (official backward_G).
    idt = self.method.net("G_A", self.state.params, self.state.model_state, self.batch["B"],
                          train=True)[0]
    np.testing.assert_allclose(on_m["idt_A"],
                               10 * 0.5 * np.mean(np.abs(idt - self.batch["B"])), rtol=1e-5)

    # Without identity loss the generators run four times, with it six.
    def generator_calls(method):
      jaxpr = jax.make_jaxpr(lambda p: method.generator_loss(p, self.state, self.batch, rng)[0])
      return str(jaxpr(self.state.params)).count("tanh")
    self.assertEqual(generator_calls(self.method), 6)
    self.assertEqual(generator_calls(off_method), 4)

  def test_training_reduces_the_cycle_loss(self):
    state = self.state
    rng = np.random.default_rng(0)
    cycle = []
    for _ in range(320):
      state, metrics = self.step(state, _batch(self.a, self.b, rng.choice(len(self.a), 2, False)))
      cycle.append(float(metrics["cycle_A"] + metrics["cycle_B"]))
    first, last = np.mean(cycle[:20]), np.mean(cycle[-20:])
    # Measured: 2.41 -> 1.27 (seed 0); the tiny generators level off near half the start.
    self.assertLess(last, 0.65 * first, f"cycle loss {first:.3f} -> {last:.3f}")

  def test_eval_step_sums_valid_examples_and_predict(self):
    ev = jax.jit(self.method.eval_step)
    full = ev(self.state, self.batch)
    self.assertEqual(set(full), {"cycle_error_A", "cycle_error_B", "D_A_real", "D_A_fake",
                                 "D_B_real", "D_B_fake"})
    masked = ev(self.state, {**self.batch, "mask": jnp.asarray([1.0, 0.0])})
    first = ev(self.state, _batch(self.a, self.b, [0, 0]))
    for k in full:
      np.testing.assert_allclose(2 * masked[k], first[k], rtol=1e-5, atol=1e-7)
    # With the ideal translation of A in the batch (offline sets): its PSNR as well.
    ref = -self.batch["A"]
    with_ref = ev(self.state, {**self.batch, "B_ref": ref})
    fake_b = np.asarray(jax.jit(self.method.translate)(self.state, self.batch)["fake_B"])
    mse = np.mean(((np.clip(fake_b, -1, 1) + 1) / 2 - (np.asarray(ref) + 1) / 2) ** 2, (1, 2, 3))
    np.testing.assert_allclose(with_ref["psnr_B_ref"], np.sum(10 * np.log10(1 / mse)), rtol=1e-5)
    out = jax.jit(self.method.predict)(self.state, self.batch)
    self.assertEqual(set(out), {"fake_A", "fake_B", "real_A", "real_B"})
    np.testing.assert_array_equal(out["real_B"], self.batch["B"])
    want = self.method.net("G_A", self.state.params, self.state.model_state, self.batch["A"],
                           train=False)[0]
    np.testing.assert_allclose(out["fake_B"], want, rtol=1e-5, atol=1e-6)
    self.assertLessEqual(float(jnp.abs(out["fake_A"]).max()), 1.0)  # tanh output

  def test_config_errors(self):
    batch = {"A": jnp.zeros((1, SIZE, SIZE, 1)), "B": jnp.zeros((1, SIZE, SIZE, 3))}
    with self.assertRaisesRegex(ConfigError, "lambda_identity"):
      jax.eval_shape(self.method.init, jax.random.key(0), batch)
    with self.assertRaisesRegex(ConfigError, "output_nc"):
      jax.eval_shape(_method(lambda_identity=0.0).init, jax.random.key(0), batch)
    with self.assertRaisesRegex(ConfigError, "gan_mode"):
      _method(gan_mode="wgan")


if __name__ == "__main__":
  absltest.main()
