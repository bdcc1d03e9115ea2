"""Tests for jaxcompress.robust.attacks on tiny linear models (closed forms and constraints)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress.robust import attacks

EPS = 0.1


def _linear_problem(seed=0, n=6, d=5, k=3):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, k)).astype(np.float32)
  b = rng.normal(size=(k,)).astype(np.float32)
  x = rng.uniform(0.0, 1.0, size=(n, d)).astype(np.float32)
  x[0, :2] = [0.0, 1.0]  # on the box boundary: clipping must hold
  y = rng.integers(0, k, size=n)
  return w, b, x, y


def _np_ce(logits, y):
  z = logits - logits.max(1, keepdims=True)
  return (np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean()


def _binary_linear_problem(seed=0, n=8, d=6):
  """Two-class linear model logits = [0, z], z = x w + b, with x partly on the box faces."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d,))
  w[np.abs(w) < 0.1] = 0.5  # no zero weights: the sign of the gradient is defined
  b = float(rng.normal())
  x = rng.uniform(0.0, 1.0, size=(n, d))
  x[0, :3] = [0.0, 1.0, 0.97]
  x[1, :2] = [1.0, 0.03]
  y = rng.integers(0, 2, size=n)
  return w, b, x, y


def _np_worst_case(w, b, x, y, eps):
  """Analytic L-inf worst case of the two-class linear model inside the box [0, 1].

  CE of logits [0, z] is softplus(z) for label 0 and softplus(-z) for label 1: increasing in
  s z with s = +1 (label 0) or -1 (label 1). z is linear and the constraint set
  {|x' - x|_inf <= eps} n [0, 1]^d is a product of intervals, so the maximiser moves every
  coordinate to the end of its interval in the direction s sign(w_j):
  x*_j = clip(x_j + eps s sign(w_j), 0, 1). Returns (x*, the maximal mean loss).
  """
  s = np.where(y == 0, 1.0, -1.0)[:, None]
  x_star = np.clip(x + eps * s * np.sign(w)[None], 0.0, 1.0)
  z = x_star @ w + b
  return x_star, np.mean(np.logaddexp(0.0, s[:, 0] * z))


def _two_class(w, b):
  w32 = jnp.asarray(w, jnp.float32)
  return lambda v: jnp.stack([jnp.zeros(v.shape[0]), v @ w32 + b], axis=-1)


class WorstCaseTest(chex.TestCase):
  """On a linear model every attack must reach the analytic maximiser of the loss."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_attacks_reach_the_analytic_worst_case(self):
    w, b, x, y = _binary_linear_problem()
    eps = 0.1
    x_star, best_loss = _np_worst_case(w, b, x, y, eps)
    apply_fn = _two_class(w, b)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    runs = {
        "fgsm": lambda: attacks.fgsm(apply_fn, xj, yj, eps),
        # 7 steps of 0.03 cover 2 eps: the corner is reached from any random start.
        "pgd7": lambda: attacks.pgd(apply_fn, xj, yj, eps, 0.03, 7, rng=jax.random.key(1)),
        "pgd20": lambda: attacks.pgd(apply_fn, xj, yj, eps, 0.0078 * 2, 20,
                                     rng=jax.random.key(2)),
        "mi_fgsm": lambda: attacks.mi_fgsm(apply_fn, xj, yj, eps, 0.02, 10, 1.0),
    }
    for name, run in runs.items():
      adv = np.asarray(self.variant(run)())
      np.testing.assert_allclose(adv, x_star, atol=1e-6, err_msg=name)
      z = adv @ w + b
      s = np.where(y == 0, 1.0, -1.0)
      np.testing.assert_allclose(np.mean(np.logaddexp(0.0, s * z)), best_loss, rtol=1e-5,
                                 err_msg=name)

  def test_short_pgd_from_random_start_stays_below_the_worst_case(self):
    # One small step cannot reach the corner: the loss is strictly below the analytic maximum
    # (the check above is not vacuous).
    w, b, x, y = _binary_linear_problem(1)
    eps = 0.1
    _, best_loss = _np_worst_case(w, b, x, y, eps)
    adv = np.asarray(attacks.pgd(_two_class(w, b), jnp.asarray(x, jnp.float32), y, eps, 0.01, 1,
                                 rng=jax.random.key(0)))
    s = np.where(y == 0, 1.0, -1.0)
    self.assertLess(np.mean(np.logaddexp(0.0, s * (adv @ w + b))), best_loss - 1e-3)


class ConstraintTest(chex.TestCase):
  """Perturbations stay within epsilon of x and inside [0, 1] on a non-linear model."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_epsilon_ball_and_box(self):
    rng = np.random.default_rng(5)
    w1 = jnp.asarray(rng.normal(size=(12, 16)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    apply_fn = lambda v: jnp.tanh(v @ w1) @ w2
    x = rng.uniform(0.0, 1.0, size=(10, 12)).astype(np.float32)
    x[:3] = np.round(x[:3])           # whole rows on the faces of the box
    y = rng.integers(0, 4, size=10)
    for eps in (0.03, 0.3):
      outs = {
          "fgsm": self.variant(lambda xx: attacks.fgsm(apply_fn, xx, y, eps))(x),
          "pgd": self.variant(lambda xx: attacks.pgd(apply_fn, xx, y, eps, eps / 3, 10,
                                                     rng=jax.random.key(0)))(x),
          "mi_fgsm": self.variant(lambda xx: attacks.mi_fgsm(apply_fn, xx, y, eps, eps / 4,
                                                             10))(x),
      }
      for name, adv in outs.items():
        adv = np.asarray(adv)
        self.assertLessEqual(np.abs(adv - x).max(), eps + 1e-6, (name, eps))
        self.assertGreaterEqual(adv.min(), 0.0, (name, eps))
        self.assertLessEqual(adv.max(), 1.0, (name, eps))
        self.assertGreater(np.abs(adv - x).max(), 0.5 * eps, (name, eps))  # it did move


class FgsmTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_closed_form_on_linear_model(self):
    w, b, x, y = _linear_problem()
    fn = self.variant(lambda xx, yy: attacks.fgsm(lambda v: v @ w + b, xx, yy, EPS))
    adv = fn(jnp.asarray(x), jnp.asarray(y))
    # d CE / dx = (softmax(xW + b) - onehot(y)) W^T / N.
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T
    np.testing.assert_allclose(adv, np.clip(x + EPS * np.sign(grad), 0, 1), rtol=1e-6)

  def test_loss_fn_form(self):
    # loss = sum(c * x): gradient c, FGSM moves by eps * sign(c).
    c = jnp.array([1.0, -2.0, 0.5])
    x = jnp.array([0.5, 0.5, 0.95])
    adv = attacks.fgsm(lambda v: (c * v).sum(), x, None, EPS)
    np.testing.assert_allclose(adv, [0.6, 0.4, 1.0], rtol=1e-6)


class PgdTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_constraints_and_loss_increase(self):
    w, b, x, y = _linear_problem(1)
    apply_fn = lambda v: v @ w + b
    fn = self.variant(lambda xx, key: attacks.pgd(apply_fn, xx, y, EPS, 0.03, 7, rng=key))
    adv = np.asarray(fn(jnp.asarray(x), jax.random.key(0)))
    self.assertLessEqual(np.abs(adv - x).max(), EPS + 1e-6)
    self.assertGreaterEqual(adv.min(), 0.0)
    self.assertLessEqual(adv.max(), 1.0)
    clean, attacked = _np_ce(x @ w + b, y), _np_ce(adv @ w + b, y)
    self.assertGreater(attacked, clean)
    # On a linear model the L-inf maximiser is FGSM with the full budget; 7 steps of 0.03
    # without random start reach it, so PGD's loss is at least FGSM's (up to the box clip).
    fg = np.asarray(attacks.fgsm(apply_fn, jnp.asarray(x), y, EPS))
    no_rs = np.asarray(attacks.pgd(apply_fn, jnp.asarray(x), y, EPS, 0.03, 7,
                                   random_start=False))
    self.assertGreaterEqual(_np_ce(no_rs @ w + b, y), _np_ce(fg @ w + b, y) - 1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_loop_from_the_same_random_start(self):
    w, b, x, y = _linear_problem(4)
    apply_fn = lambda v: v @ w + b
    key = jax.random.key(7)
    # num_steps = 0 returns the clipped random start x + delta_0.
    start = np.asarray(attacks.pgd(apply_fn, jnp.asarray(x), y, EPS, 0.03, 0, rng=key))
    delta = start - x
    self.assertLessEqual(np.abs(delta).max(), EPS + 1e-6)
    self.assertGreater(np.abs(delta).max(), 0.5 * EPS)  # a random start, not zero
    adv = np.asarray(self.variant(
        lambda xx: attacks.pgd(apply_fn, xx, y, EPS, 0.03, 5, rng=key))(jnp.asarray(x)))
    # Reference: advertorch perturb_iterative (sign step, eps-ball clamp, box clamp).
    for _ in range(5):
      z = (x + delta) @ w + b
      p = np.exp(z - z.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      grad = (p - np.eye(3)[y]) @ w.T
      delta = np.clip(delta + 0.03 * np.sign(grad), -EPS, EPS)
      delta = np.clip(x + delta, 0, 1) - x
    np.testing.assert_allclose(adv, np.clip(x + delta, 0, 1), rtol=1e-5, atol=1e-6)

  def test_single_step_without_random_start_is_fgsm(self):
    w, b, x, y = _linear_problem(2)
    apply_fn = lambda v: v @ w + b
    one = attacks.pgd(apply_fn, jnp.asarray(x), y, EPS, EPS, 1, random_start=False)
    np.testing.assert_allclose(one, attacks.fgsm(apply_fn, jnp.asarray(x), y, EPS), rtol=1e-6)

  def test_random_start_needs_rng(self):
    with self.assertRaises(ValueError):
      attacks.pgd(lambda v: v.sum(), jnp.zeros(3), None)

  def test_traced_schedule_no_recompile(self):
    traces = {"n": 0}

    @jax.jit
    def run(x, eps, step):
      traces["n"] += 1
      return attacks.pgd(lambda v: (v ** 2).sum(), x, None, eps, step, 3, random_start=False)

    x = jnp.full((4,), 0.5)
    for eps in (0.01, 0.05, 0.1):
      adv = run(x, eps, eps / 2)
      np.testing.assert_allclose(adv, 0.5 + eps, rtol=1e-5)
    self.assertEqual(traces["n"], 1)


class MiFgsmTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_loop(self):
    w, b, x, y = _linear_problem(3)
    apply_fn = lambda v: v @ w + b
    fn = self.variant(lambda xx: attacks.mi_fgsm(apply_fn, xx, y, EPS, 0.02, 5, 1.0))
    adv = np.asarray(fn(jnp.asarray(x)))
    # Reference: advertorch MomentumIterativeAttack with a NumPy gradient of the mean CE.
    delta, g = np.zeros_like(x), np.zeros_like(x)
    for _ in range(5):
      z = (x + delta) @ w + b
      p = np.exp(z - z.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      grad = (p - np.eye(3)[y]) @ w.T / len(y)
      g = g + grad / np.maximum(np.abs(grad).sum(1, keepdims=True), 1e-6)
      delta = np.clip(delta + 0.02 * np.sign(g), -EPS, EPS)
      delta = np.clip(x + delta, 0, 1) - x
    np.testing.assert_allclose(adv, x + delta, rtol=1e-5, atol=1e-6)
    self.assertLessEqual(np.abs(adv - x).max(), EPS + 1e-6)
    self.assertGreater(_np_ce(adv @ w + b, y), _np_ce(x @ w + b, y))


if __name__ == "__main__":
  absltest.main()
