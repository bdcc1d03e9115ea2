"""Tests for jaxcompress.prune.masks (DMAD mask step, bound schedule, penalties, group sparsity)."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import prune


# ---------------------------------------------------------------- independent NumPy references
def np_mask(m, b, clamp=False):
  """M_b(m) element by element in float64 (region tests on the raw b, quadratics on q)."""
  out = []
  for v in np.asarray(m, np.float64).ravel():
    if b <= 0:
      out.append(1.0 if v > 0 else 0.0)
      continue
    q = max(b, 0.005) if clamp else b
    if v < -b:
      out.append(0.0)
    elif v <= 0:
      out.append(0.5 * (1 + v / q) ** 2)
    elif v <= b:
      out.append(1 - 0.5 * (1 - v / q) ** 2)
    else:
      out.append(1.0)
  return np.array(out).reshape(np.shape(m))


def np_slope(m, b, clamp=False):
  out = []
  for v in np.asarray(m, np.float64).ravel():
    q = max(b, 0.005) if clamp else b
    if b <= 0 or v < -b or v > b:
      out.append(0.0)
    elif v <= 0:
      out.append((1 + v / q) / q)
    else:
      out.append((1 - v / q) / q)
  return np.array(out).reshape(np.shape(m))


def np_official_quadratics(b):
  """The official `Mask.update` fit: quadratics through 3 points each, b clamped to 0.005."""
  q = 0.005 if 0 < b < 0.005 else b
  left = np.polyfit([-q, -q / 2, 0.0], [0.0, 0.125, 0.5], 2)
  right = np.polyfit([0.0, q / 2, q], [0.5, 0.875, 1.0], 2)
  return left, right


def np_bound(iteration, total, rule="cube"):
  t = total * 0.75
  if iteration > t:
    return 0.0
  power = {"cube": 1 / 3, "double": 1 / 2}[rule]
  return max(1 - math.pow(iteration / t, power), 0.0)


def np_band(m, b):
  m = np.asarray(m, np.float64)
  return (m > -b) & (m < b)


def np_penalty(m, b, kind):
  m = np.asarray(m, np.float64)
  band = np_band(m, b)
  if kind == "relu":
    return np.sum((m + b)[band])
  if kind == "uprelu":
    return np.sum((b - m)[band])
  return np.sqrt(np.sum((b - np.abs(m[band])) ** 2))


def np_penalty_grads(m, b, kind):
  """d/dm and d/db with the band held constant (d|m|/dm = sign(m), 0 at 0)."""
  m = np.asarray(m, np.float64)
  band = np_band(m, b).astype(np.float64)
  if kind == "relu":
    return band, band.sum()
  if kind == "uprelu":
    return -band, band.sum()
  r = (b - np.abs(m)) * band
  norm = np.sqrt(np.sum(r ** 2))
  if norm == 0:
    return np.zeros_like(m), 0.0
  return -r * np.sign(m) / norm, np.sum(r) / norm


def np_group(masks, b, lam=1.0):
  masks = np.asarray(masks, np.float64)
  g, c = masks.shape
  out = np.zeros(c)
  for i in range(c):
    col = masks[:, i]
    lt, gt = int(np.sum(col < -b)), int(np.sum(col > b))
    if gt > 0 or lt == g:
      out[i] = 0.0
    else:
      out[i] = g / (g - lt - gt) * lam
  return out


def grid(b):
  """Points in every region, the region edges and 0."""
  pts = [-2 * b - 0.1, -b - 1e-3, -b, -0.7 * b, -0.5 * b, -0.1 * b, 0.0, 0.1 * b, 0.5 * b,
         0.9 * b, b, b + 1e-3, 2 * b + 0.1]
  return np.array(pts)


class MaskTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_and_gradients_against_numpy(self):
    with jax.enable_x64(True):
      for b in (1.0, 0.5, 0.05, 0.004, 0.002):
        for clamp in (False, True):
          m = jnp.asarray(grid(b))
          fn = self.variant(lambda m, b, c=clamp: prune.dmad_mask(m, b, c))
          out = fn(m, b)
          self.assertEqual(out.dtype, jnp.float64)
          np.testing.assert_allclose(out, np_mask(m, b, clamp), rtol=1e-12, atol=1e-15)
          g = np.random.default_rng(0).standard_normal(m.shape)
          vjp = self.variant(jax.grad(lambda m, b, c=clamp: jnp.sum(prune.dmad_mask(m, b, c) * g),
                                      argnums=(0, 1)))
          gm, gb = vjp(m, b)
          np.testing.assert_allclose(gm, g * np_slope(m, b, clamp), rtol=1e-12, atol=1e-15)
          self.assertEqual(float(gb), 0.0)  # the bound gets a zero cotangent

  def test_matches_the_official_lagrange_fit(self):
    with jax.enable_x64(True):
      for b in (0.8, 0.3, 0.002):
        left, right = np_official_quadratics(b)
        m = grid(b)
        want = np.where(m > b, 1.0, 0.0)
        lm, rm = (m >= -b) & (m <= 0), (m > 0) & (m <= b)
        want[lm] = np.polyval(left, m[lm])
        want[rm] = np.polyval(right, m[rm])
        np.testing.assert_allclose(prune.dmad_mask(m, b, official_clamp=True), want, atol=1e-12)
        d = np.zeros_like(m)
        d[lm] = np.polyval(np.polyder(left), m[lm])
        d[rm] = np.polyval(np.polyder(right), m[rm])
        got = jax.grad(lambda x: jnp.sum(prune.dmad_mask(x, b, True)))(jnp.asarray(m))
        np.testing.assert_allclose(got, d, rtol=1e-9, atol=1e-9)

  def test_custom_vjp_matches_finite_differences_on_continuous_parts(self):
    with jax.enable_x64(True):
      for b in (1.0, 0.37, 0.01):
        rng = np.random.default_rng(1)
        m = rng.uniform(-1.5 * b, 1.5 * b, 64)
        m = m[np.min(np.abs(m[:, None] - np.array([-b, 0.0, b])), axis=1) > 1e-4 * b]
        eps = 1e-7 * b
        fd = (np_mask(m + eps, b) - np_mask(m - eps, b)) / (2 * eps)
        got = jax.vmap(jax.grad(lambda x: prune.dmad_mask(x, b)))(jnp.asarray(m))
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6 / b)

  def test_edges_and_zero(self):
    b = 0.5
    m = jnp.array([-b, 0.0, b], jnp.float32)
    np.testing.assert_allclose(prune.dmad_mask(m, b), [0.0, 0.5, 1.0])
    slopes = jax.grad(lambda x: jnp.sum(prune.dmad_mask(x, b)))(m)
    np.testing.assert_allclose(slopes, [0.0, 1 / b, 0.0])
    # C1 at 0: the one-sided slopes agree.
    eps = 1e-3
    right = (prune.dmad_mask(jnp.array([eps]), b) - 0.5) / eps
    left = (0.5 - prune.dmad_mask(jnp.array([-eps]), b)) / eps
    np.testing.assert_allclose(right, left, rtol=1e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_bound_is_a_hard_step_with_zero_gradient(self):
    m = jnp.array([-0.3, -1e-6, 0.0, 1e-6, 0.3], jnp.float32)
    for clamp in (False, True):
      out = self.variant(lambda x, c=clamp: prune.dmad_mask(x, 0.0, c))(m)
      np.testing.assert_array_equal(out, [0, 0, 0, 1, 1])
      g = self.variant(jax.grad(lambda x, c=clamp: jnp.sum(prune.dmad_mask(x, 0.0, c) * 3.0)))(m)
      np.testing.assert_array_equal(g, 0.0)

  def test_official_clamp_jumps_for_small_bounds(self):
    b = 0.002
    eps = 1e-5
    m = jnp.array([-b - eps, -b, b, b + eps], jnp.float32)
    np.testing.assert_allclose(prune.dmad_mask(m, b, official_clamp=True), [0, 0.18, 0.82, 1],
                               rtol=1e-5)
    # The paper's curve stays continuous there.
    np.testing.assert_allclose(prune.dmad_mask(m, b), [0, 0, 1, 1], atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(prune.dmad_mask(x, b, True)))(m)
    np.testing.assert_allclose(g, [0.0, 0.6 / 0.005, 0.6 / 0.005, 0.0], rtol=1e-4)

  def test_clamp_is_a_no_op_from_0_005(self):
    with jax.enable_x64(True):
      for b in (0.005, 0.01, 0.5):
        m = jnp.asarray(grid(b))
        np.testing.assert_allclose(prune.dmad_mask(m, b, True), prune.dmad_mask(m, b), rtol=1e-12)

  def test_dtype_follows_m(self):
    self.assertEqual(prune.dmad_mask(jnp.zeros(3, jnp.float32), 0.5).dtype, jnp.float32)
    self.assertEqual(prune.dmad_mask(jnp.zeros(3, jnp.bfloat16), 0.5).dtype, jnp.bfloat16)
    with jax.enable_x64(True):
      self.assertEqual(prune.dmad_mask(jnp.zeros(3, jnp.float32), jnp.float64(0.5)).dtype,
                       jnp.float32)
      self.assertEqual(prune.dmad_mask(np.zeros(3), 0.5).dtype, jnp.float64)

  def test_traced_bound_compiles_once(self):
    traces = []

    @jax.jit
    def step(m, b):
      traces.append(None)
      return jax.grad(lambda x: jnp.sum(prune.dmad_mask(x, b) ** 2))(m), prune.dmad_mask(m, b)

    m = jnp.asarray(grid(0.3), jnp.float32)
    for b in (1.0, 0.3, 0.004, 0.0):
      grad, out = step(m, jnp.asarray(b, jnp.float32))
      np.testing.assert_allclose(out, np_mask(m, b), atol=1e-6)
      np.testing.assert_allclose(grad, 2 * np_mask(m, b) * np_slope(m, b), rtol=1e-4, atol=1e-4)
    self.assertLen(traces, 1)
    for b in (0.9, 0.2):  # Python floats: weakly typed, one more trace for all of them
      step(m, b)
    self.assertLen(traces, 2)

  def test_gradient_through_a_gated_feature(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(2)
      x = rng.standard_normal((2, 3, 3, 5))
      g = rng.standard_normal(x.shape)
      m = np.array([-0.6, -0.2, 0.0, 0.1, 0.7])
      b = 0.5
      loss = lambda m, x: jnp.sum(g * x * prune.dmad_mask(m, b))
      gm, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(m, x)
      np.testing.assert_allclose(gm, np.sum(g * x, axis=(0, 1, 2)) * np_slope(m, b), rtol=1e-12)
      np.testing.assert_allclose(gx, g * np_mask(m, b), rtol=1e-12)


class BoundScheduleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy(self):
    with jax.enable_x64(True):
      total = 1000
      for rule in ("cube", "double"):
        fn = self.variant(lambda i, t, r=rule: prune.dmad_bound(i, t, r))
        for it in (0, 1, 10, 100, 375, 700, 749, 750, 751, 1000):
          got = fn(it, total)
          self.assertEqual(got.dtype, jnp.float64)
          np.testing.assert_allclose(got, np_bound(it, total, rule), rtol=1e-12, atol=1e-15)

  def test_reaches_zero_at_75_percent(self):
    total = 4000
    self.assertEqual(float(prune.dmad_bound(0, total)), 1.0)
    self.assertEqual(float(prune.dmad_bound(3000, total)), 0.0)
    self.assertGreater(float(prune.dmad_bound(2999, total)), 0.0)
    self.assertEqual(float(prune.dmad_bound(3001, total, "double")), 0.0)
    bounds = np.array([prune.dmad_bound(i, total) for i in range(0, 4001, 100)])
    self.assertTrue(np.all(np.diff(bounds) <= 0))
    self.assertTrue(np.all(bounds >= 0))
    # The double rule falls slower than the cube rule.
    self.assertGreater(float(prune.dmad_bound(1000, total, "double")),
                       float(prune.dmad_bound(1000, total, "cube")))

  def test_traced_iteration_compiles_once(self):
    traces = []

    @jax.jit
    def bound(i):
      traces.append(None)
      return prune.dmad_bound(i, 800)

    for i in (0, 100, 599, 600, 601, 800):
      np.testing.assert_allclose(bound(jnp.asarray(i)), np_bound(i, 800), rtol=1e-6, atol=1e-7)
    self.assertLen(traces, 1)

  def test_bad_rule_and_total(self):
    for rule in ("linear", "Cube", ""):
      with self.assertRaisesRegex(ValueError, "unknown rule"):
        prune.dmad_bound(1, 10, rule)
    with self.assertRaisesRegex(ValueError, "positive"):
      prune.dmad_bound(1, 0)

  def test_official_update_loop(self):
    # Official train.py: iterations count samples; update when (iter // batch) % freq == 0.
    dataset, batch, epochs = 40, 2, 20
    total = dataset * batch * epochs
    freq = prune.dmad_update_interval(total, batch)
    self.assertEqual(freq, int(total * 0.75 // 150 // batch))
    updates = [it for it in range(batch, total + 1, batch) if (it // batch) % freq == 0]
    bounds = [float(prune.dmad_bound(it, total)) for it in updates]
    in_band = [it for it in updates if it <= 0.75 * total]
    self.assertBetween(len(in_band), 140, 160)
    self.assertEqual(bounds[-1], 0.0)
    self.assertGreater(bounds[0], 0.5)

  def test_update_interval(self):
    self.assertEqual(prune.dmad_update_interval(266_800, 1), 1334)
    self.assertEqual(prune.dmad_update_interval(100, 4), 1)  # officially 0: floored at 1
    self.assertEqual(prune.dmad_update_interval(1_000_000, 4, updates=100), 1875)
    with self.assertRaisesRegex(ValueError, "positive"):
      prune.dmad_update_interval(100, 0)


class PenaltyTest(chex.TestCase):

  def masks(self, b):
    rng = np.random.default_rng(3)
    return np.concatenate([rng.uniform(-1.5 * b, 1.5 * b, 12), [-b, b, 0.0]])

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_and_gradients_against_numpy(self):
    with jax.enable_x64(True):
      for b in (0.8, 0.25):
        m = self.masks(b)
        for kind in ("relu", "uprelu", "bound"):
          fn = self.variant(lambda m, b, k=kind: prune.dmad_penalty(m, b, k))
          val = fn(m, b)
          self.assertEqual(val.dtype, jnp.float64)
          np.testing.assert_allclose(val, np_penalty(m, b, kind), rtol=1e-12)
          gm, gb = self.variant(jax.grad(lambda m, b, k=kind: prune.dmad_penalty(m, b, k),
                                         argnums=(0, 1)))(m, b)
          want_m, want_b = np_penalty_grads(m, b, kind)
          np.testing.assert_allclose(gm, want_m, rtol=1e-12, atol=1e-15)
          np.testing.assert_allclose(gb, want_b, rtol=1e-12)

  def test_edges_are_out_of_band(self):
    b = 0.5
    m = jnp.array([-b, b, -2.0, 2.0])
    for kind in ("relu", "uprelu", "bound"):
      self.assertEqual(float(prune.dmad_penalty(m, b, kind)), 0.0)
      g = jax.grad(lambda x, k=kind: prune.dmad_penalty(x, b, k))(m)
      self.assertTrue(np.all(np.isfinite(g)))
      np.testing.assert_array_equal(g, 0.0)

  def test_zero_bound_gives_zero(self):
    m = jnp.array([-0.1, 0.0, 0.2])
    for kind in ("relu", "uprelu", "bound"):
      self.assertEqual(float(prune.dmad_penalty(m, 0.0, kind)), 0.0)
      g = jax.grad(lambda x, k=kind: prune.dmad_penalty(x, 0.0, k))(m)
      np.testing.assert_array_equal(g, 0.0)

  def test_bound_kind_has_no_slope_at_zero(self):
    m = jnp.array([0.0, 0.2, -0.3])
    g = jax.grad(lambda x: prune.dmad_penalty(x, 0.5, "bound"))(m)
    self.assertEqual(float(g[0]), 0.0)
    self.assertLess(float(g[1]), 0.0)  # pushes |m| towards b
    self.assertGreater(float(g[2]), 0.0)

  def test_unknown_kind(self):
    with self.assertRaisesRegex(ValueError, "unknown kind"):
      prune.dmad_penalty(jnp.zeros(3), 0.5, "l1")

  @chex.variants(with_jit=True, without_jit=True)
  def test_block_penalty(self):
    with jax.enable_x64(True):
      b = 0.4
      m = self.masks(b)
      coeff = np.random.default_rng(4).uniform(0, 3, m.shape)
      val = self.variant(prune.dmad_block_penalty)(m, b, coeff)
      band = np_band(m, b)
      np.testing.assert_allclose(val, np.sum(((m + b) * coeff)[band]), rtol=1e-12)
      gm, gb, gc = self.variant(jax.grad(prune.dmad_block_penalty, argnums=(0, 1, 2)))(m, b, coeff)
      np.testing.assert_allclose(gm, coeff * band, rtol=1e-12)
      np.testing.assert_allclose(gb, np.sum(coeff[band]), rtol=1e-12)
      np.testing.assert_array_equal(gc, 0.0)  # coeff is constant
      self.assertEqual(float(prune.dmad_block_penalty(m, 0.0, coeff)), 0.0)
      # b == 0.5 is an ordinary bound here (the official typo returns 0 there).
      self.assertGreater(float(prune.dmad_block_penalty(m, 0.5, coeff)), 0.0)
    with self.assertRaisesRegex(ValueError, "coeff has shape"):
      prune.dmad_block_penalty(jnp.zeros(4), 0.5, jnp.ones(5))


class GroupCoefficientTest(chex.TestCase):

  def hand_made(self, b):
    """(10, 6) masks, one column per case."""
    masks = np.full((10, 6), -2 * b)
    masks[:, 0] = np.linspace(-0.9 * b, 0.9 * b, 10)
    masks[3, 0] = 1.5 * b           # col 0: one block keeps the channel -> 0
    # col 1: every mask below -b -> 0
    masks[:, 2] = np.linspace(-0.9 * b, 0.9 * b, 10)  # col 2: all in band -> 10/10
    masks[:6, 3] = 0.3 * b          # col 3: 6 in band, 4 out below -> 10/6
    masks[0, 4], masks[1, 4] = b, -b  # col 4: +-b count as in band -> 10/2
    masks[9, 5] = -b                # col 5: one at -b, nine below -> 10/1
    return masks

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_made_masks(self):
    b = 0.5
    masks = jnp.asarray(self.hand_made(b), jnp.float32)
    coeff = self.variant(prune.dmad_group_coefficients)(masks, b)
    self.assertEqual(coeff.shape, (6,))
    self.assertEqual(coeff.dtype, jnp.float32)
    np.testing.assert_allclose(coeff, [0, 0, 1, 10 / 6, 5, 10], rtol=1e-6)
    np.testing.assert_allclose(coeff, np_group(masks, b), rtol=1e-6)
    coeff = self.variant(lambda m, b: prune.dmad_group_coefficients(m, b, 0.5))(masks, b)
    np.testing.assert_allclose(coeff, [0, 0, 0.5, 5 / 6, 2.5, 5], rtol=1e-6)

  def test_random_masks_against_numpy(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(5)
      masks = rng.normal(0, 0.3, (10, 32))
      for b in (0.6, 0.2, 0.05, 0.0):
        np.testing.assert_allclose(prune.dmad_group_coefficients(masks, b, 1.0),
                                   np_group(masks, b), rtol=1e-12)

  def test_list_input_traced_bound_and_constant(self):
    masks = [jnp.asarray(r, jnp.float32) for r in self.hand_made(0.5)]
    coeff = jax.jit(prune.dmad_group_coefficients)(masks, jnp.float32(0.5))
    np.testing.assert_allclose(coeff, [0, 0, 1, 10 / 6, 5, 10], rtol=1e-6)
    g = jax.grad(lambda m: jnp.sum(prune.dmad_group_coefficients(m, 0.5)))(jnp.stack(masks))
    np.testing.assert_array_equal(g, 0.0)
    with self.assertRaisesRegex(ValueError, r"\(G, C\)"):
      prune.dmad_group_coefficients(jnp.zeros(5), 0.5)


class MaskLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_sum_of_parts(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(6)
      b = 0.3
      ordinary = [rng.normal(0, 0.2, 4) for _ in range(3)]
      sampling = [rng.normal(0, 0.2, 5) for _ in range(2)]
      group = [rng.normal(0, 0.2, 6) for _ in range(4)]
      coeff = np_group(group, b)

      def loss(o, s, g, b, kind, sampling_kind, sc):
        return prune.dmad_mask_loss(o, s, g, b, coeff, kind=kind, sampling_kind=sampling_kind,
                                    sampling_coeff=sc)

      for kind, sampling_kind in (("relu", "bound"), ("uprelu", "relu")):
        fn = self.variant(lambda o, s, g, b, sc, k=kind, sk=sampling_kind: loss(o, s, g, b, k, sk,
                                                                                sc))
        want = (sum(np_penalty(m, b, kind) for m in ordinary)
                + 100.0 * sum(np_penalty(m, b, sampling_kind) for m in sampling)
                + sum(np.sum(((m + b) * coeff)[np_band(m, b)]) for m in group))
        np.testing.assert_allclose(fn(ordinary, sampling, group, b, 100.0), want, rtol=1e-12)
        grads = jax.grad(fn, argnums=(0, 1, 2))(ordinary, sampling, group, b, 100.0)
        for gm, m in zip(grads[0], ordinary):
          np.testing.assert_allclose(gm, np_penalty_grads(m, b, kind)[0], rtol=1e-12)
        for gm, m in zip(grads[1], sampling):
          np.testing.assert_allclose(gm, 100.0 * np_penalty_grads(m, b, sampling_kind)[0],
                                     rtol=1e-12, atol=1e-15)
        for gm, m in zip(grads[2], group):
          np.testing.assert_allclose(gm, coeff * np_band(m, b), rtol=1e-12)

  def test_empty_and_zero_bound(self):
    self.assertEqual(float(prune.dmad_mask_loss([], [], [], 0.5, jnp.ones(3))), 0.0)
    m = [jnp.array([0.1, -0.2, 0.3])]
    self.assertEqual(float(prune.dmad_mask_loss(m, m, m, 0.0, jnp.ones(3))), 0.0)

  def test_traced_bound_and_sampling_coeff_compile_once(self):
    traces = []

    @jax.jit
    def loss(b, sc):
      traces.append(None)
      m = [jnp.array([0.1, -0.2, 0.3])]
      return prune.dmad_mask_loss(m, m, m, b, jnp.ones(3), sampling_coeff=sc)

    for b, sc in ((0.5, 100.0), (0.25, 10.0), (0.0, 1.0)):
      m = np.array([0.1, -0.2, 0.3])
      want = (np_penalty(m, b, "relu") + sc * np_penalty(m, b, "bound")
              + np.sum((m + b)[np_band(m, b)]))
      np.testing.assert_allclose(loss(jnp.float32(b), jnp.float32(sc)), want, rtol=1e-5)
    self.assertLen(traces, 1)


if __name__ == "__main__":
  absltest.main()
