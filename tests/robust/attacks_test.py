"""Tests for jaxcompress.robust.attacks on tiny linear models (closed forms and constraints)."""
from __future__ import annotations

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

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
