"""Tests for jaxcompress.prune.gate (DMAD MaskGate in the layer factory's gate slot)."""
from __future__ import annotations

import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import traverse_util

from jaxcompress import prune
from jaxcompress.models import cyclegan, factory


def np_mask(m, b):
  """M_b(m) of the paper in float64 (b > 0), the hard step for b = 0."""
  m = np.asarray(m, np.float64)
  if b <= 0:
    return (m > 0).astype(np.float64)
  left, right = 0.5 * (1 + m / b) ** 2, 1 - 0.5 * (1 - m / b) ** 2
  return np.where(m < -b, 0.0, np.where(m <= 0, left, np.where(m <= b, right, 1.0)))


def np_slope(m, b):
  m = np.asarray(m, np.float64)
  if b <= 0:
    return np.zeros_like(m)
  s = np.where(m <= 0, (1 + m / b) / b, (1 - m / b) / b)
  return np.where((m >= -b) & (m <= b), s, 0.0)


class MaskGateTest(chex.TestCase):

  def test_init(self):
    gate = prune.MaskGate(4096)
    v = gate.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 1, 4096)))
    self.assertEqual(set(v), {"params", prune.BOUND_COLLECTION})
    m = v["params"]["mask"]
    self.assertEqual(m.shape, (4096,))
    self.assertEqual(m.dtype, jnp.float32)
    self.assertAlmostEqual(float(jnp.mean(m)), 0.0, delta=0.02)
    self.assertAlmostEqual(float(jnp.std(m)), 0.2, delta=0.01)
    bound = v[prune.BOUND_COLLECTION]["bound"]
    self.assertEqual(bound.shape, ())
    self.assertEqual(float(bound), 1.0)
    m = prune.MaskGate(4096, init_std=0.05).init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, 1, 1, 4096)))["params"]["mask"]
    self.assertAlmostEqual(float(jnp.std(m)), 0.05, delta=0.003)

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_and_gradients_against_numpy(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      x = rng.standard_normal((2, 3, 4, 5))
      g = rng.standard_normal(x.shape)
      gate = prune.MaskGate(5, param_dtype=jnp.float64)
      v = gate.init(jax.random.PRNGKey(1), x)
      m = np.array([-0.6, -0.2, 0.0, 0.15, 0.9])
      v["params"]["mask"] = jnp.asarray(m)
      for b in (1.0, 0.3, 0.0):
        vb = prune.set_bound(v, b)
        y = self.variant(gate.apply)(vb, x)
        self.assertEqual(y.dtype, jnp.float64)
        np.testing.assert_allclose(y, x * np_mask(m, b), rtol=1e-12)
        loss = lambda v, x: jnp.sum(g * gate.apply(v, x))
        gv, gx = self.variant(jax.grad(loss, argnums=(0, 1)))(vb, x)
        np.testing.assert_allclose(gv["params"]["mask"],
                                   np.sum(g * x, axis=(0, 1, 2)) * np_slope(m, b), rtol=1e-12)
        np.testing.assert_allclose(gx, g * np_mask(m, b), rtol=1e-12)
        self.assertEqual(float(gv[prune.BOUND_COLLECTION]["bound"]), 0.0)

  def test_official_clamp_through_partial(self):
    x = jnp.ones((1, 1, 1, 2))
    gate = functools.partial(prune.MaskGate, official_clamp=True)(2, name="g")
    v = prune.set_bound(gate.init(jax.random.PRNGKey(0), x), 0.002)
    v["params"]["mask"] = jnp.array([-0.002, 0.002])
    np.testing.assert_allclose(gate.apply(v, x)[0, 0, 0], [0.18, 0.82], rtol=1e-5)
    plain = prune.MaskGate(2)
    np.testing.assert_allclose(plain.apply(v, x)[0, 0, 0], [0.0, 1.0], atol=1e-6)

  def test_traced_bound_compiles_once(self):
    gate = prune.MaskGate(3)
    x = jnp.ones((1, 2, 2, 3))
    v = gate.init(jax.random.PRNGKey(0), x)
    v["params"]["mask"] = jnp.array([-0.3, 0.05, 0.4])
    traces = []

    @jax.jit
    def step(v, b):
      traces.append(None)
      return gate.apply(prune.set_bound(v, b), x)

    for b in (1.0, 0.5, 0.1, 0.0):
      np.testing.assert_allclose(step(v, jnp.float32(b))[0, 0, 0],
                                 np_mask([-0.3, 0.05, 0.4], b), rtol=1e-6, atol=1e-7)
    self.assertLen(traces, 1)

  def test_errors(self):
    gate = prune.MaskGate(3)
    v = gate.init(jax.random.PRNGKey(0), jnp.ones((1, 1, 1, 3)))
    with self.assertRaisesRegex(ValueError, "mask_bound"):
      gate.apply({"params": v["params"]}, jnp.ones((1, 1, 1, 3)))
    with self.assertRaisesRegex(ValueError, "3 channels"):
      gate.apply(v, jnp.ones((1, 1, 1, 4)))


class HelpersTest(absltest.TestCase):

  def variables(self):
    return {
        "params": {"conv": {"kernel": jnp.ones((1, 1, 2, 2))},
                   "block0": {"gate1": {"mask": jnp.array([-0.5, -0.1, 0.2])}},
                   "stem_gate": {"mask": jnp.array([0.3, -0.3, -0.31])}},
        prune.BOUND_COLLECTION: {"block0": {"gate1": {"bound": jnp.float32(1.0)}},
                                 "stem_gate": {"bound": jnp.float32(1.0)}},
        "batch_stats": {"bound": jnp.float32(7.0)},
    }

  def test_set_bound(self):
    v = self.variables()
    out = prune.set_bound(v, 0.25)
    leaves = jax.tree_util.tree_leaves(out[prune.BOUND_COLLECTION])
    self.assertLen(leaves, 2)
    for leaf in leaves:
      self.assertEqual(leaf.dtype, jnp.float32)
      self.assertEqual(float(leaf), 0.25)
    # Other collections untouched (even a leaf that happens to be called "bound").
    self.assertEqual(float(out["batch_stats"]["bound"]), 7.0)
    chex.assert_trees_all_equal(out["params"], v["params"])
    self.assertEqual(float(v[prune.BOUND_COLLECTION]["stem_gate"]["bound"]), 1.0)  # not mutated
    # The collection alone, and a FrozenDict keeps its type.
    col = prune.set_bound(v[prune.BOUND_COLLECTION], jnp.float32(0.0))
    self.assertEqual(float(col["block0"]["gate1"]["bound"]), 0.0)
    frozen = prune.set_bound(flax.core.freeze(v), 0.5)
    self.assertIsInstance(frozen, flax.core.FrozenDict)
    self.assertEqual(float(frozen[prune.BOUND_COLLECTION]["stem_gate"]["bound"]), 0.5)

  def test_mask_params(self):
    v = self.variables()
    for tree in (v, v["params"]):
      masks = prune.mask_params(tree)
      self.assertEqual(set(masks), {"block0/gate1", "stem_gate"})
      self.assertIs(masks["stem_gate"], v["params"]["stem_gate"]["mask"])

  def test_binarize_masks(self):
    v = self.variables()
    out = prune.binarize_masks(v["params"], 0.3)
    # m > -bound -> +1 else -1; m == -bound exactly goes to -1.
    np.testing.assert_array_equal(out["block0"]["gate1"]["mask"], [-1, 1, 1])
    np.testing.assert_array_equal(out["stem_gate"]["mask"], [1, -1, -1])
    chex.assert_trees_all_equal(out["conv"], v["params"]["conv"])
    out = jax.jit(prune.binarize_masks)(v, jnp.float32(0.0))
    np.testing.assert_array_equal(out["params"]["block0"]["gate1"]["mask"], [-1, -1, 1])
    self.assertEqual(out["params"]["stem_gate"]["mask"].dtype, jnp.float32)
    chex.assert_trees_all_equal(out[prune.BOUND_COLLECTION], v[prune.BOUND_COLLECTION])


class GeneratorTest(absltest.TestCase):

  def test_cyclegan_generator_with_mask_gates(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 3))
    plain = cyclegan.ResnetGenerator(ngf=2, n_blocks=1)
    gated = cyclegan.ResnetGenerator(ngf=2, n_blocks=1,
                                     layers=factory.Layers(gate=prune.MaskGate))
    # Shapes only: compiling the initialisers of a whole generator is slow on a small CPU.
    pshape = jax.eval_shape(plain.init, jax.random.PRNGKey(1), x)
    gshape = jax.eval_shape(gated.init, jax.random.PRNGKey(1), x)
    # No gate configured: no masks, no bound collection.
    self.assertEqual(set(pshape), {"params"})
    self.assertEqual(prune.mask_params(pshape), {})
    self.assertEqual(set(gshape), {"params", prune.BOUND_COLLECTION})
    masks = prune.mask_params(gshape)
    self.assertEqual(set(masks), {"stem_gate", "down1_gate", "down2_gate", "up1_gate",
                                  "up2_gate", "block0/gate1", "block0/gate2"})
    self.assertEqual(masks["down2_gate"].shape, (8,))
    # Gates add only their masks: without them the parameter tree is the plain model's.
    flat = traverse_util.flatten_dict(gshape["params"])
    rest = {k: v.shape for k, v in flat.items() if k[-1] != "mask"}
    self.assertEqual(rest, {k: v.shape for k, v in
                            traverse_util.flatten_dict(pshape["params"]).items()})
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(0, 0.3, v.shape), v.dtype) for k, v in flat.items()}
    pv = {"params": traverse_util.unflatten_dict(
        {k: v for k, v in params.items() if k[-1] != "mask"})}
    bound0 = prune.set_bound(jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype),
                                                    gshape[prune.BOUND_COLLECTION]), 0.0)
    traces = []

    @jax.jit
    def apply(variables, x):
      traces.append(None)
      return gated.apply(variables, x)

    # Masks binarised to +1 at bound 0 reproduce the plain model.
    ones = prune.binarize_masks(traverse_util.unflatten_dict(
        {k: jnp.abs(v) if k[-1] == "mask" else v for k, v in params.items()}), 0.0)
    np.testing.assert_array_equal(prune.mask_params(ones)["stem_gate"], 1.0)
    y_plain = jax.jit(plain.apply)(pv, x)
    y_gated = apply({"params": ones, prune.BOUND_COLLECTION: bound0}, x)
    np.testing.assert_allclose(y_gated, y_plain, rtol=1e-5, atol=1e-6)
    # A mask at -1 with bound 0 switches its channel off: the output changes.
    off = dict(ones)
    off["down2_gate"] = {"mask": -jnp.ones(8)}
    y_off = apply({"params": off, prune.BOUND_COLLECTION: bound0}, x)
    self.assertGreater(float(jnp.max(jnp.abs(y_off - y_plain))), 1e-4)
    # Soft masks at a positive bound: one more call of the same program.
    y_soft = apply({"params": traverse_util.unflatten_dict(params),
                    prune.BOUND_COLLECTION: prune.set_bound(bound0, 0.5)}, x)
    self.assertTrue(np.all(np.isfinite(y_soft)))
    self.assertLen(traces, 1)


if __name__ == "__main__":
  absltest.main()
