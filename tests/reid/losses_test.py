"""Tests for the reid losses against NumPy loop references and PyTorch transcriptions.

Values in float32 and float64, jitted and not; gradients against float64 central differences
(at points where no perturbation can change the mining selection or cross a hinge) or the
hand-derived softmax formulas; the official MEB-Net / DDAN modules transcribed in PyTorch as a
second reference.
"""
from __future__ import annotations

import functools
import math
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl.testing import absltest, parameterized

from jaxcompress import reid

sys.path.insert(0, os.path.dirname(__file__))
from reid_loss_refs import (  # noqa: E402  (a sibling module of the tests)
  fd_grad,
  mining_margin,
  np_ce_label_smooth,
  np_dist,
  np_mine,
  np_soft_ce,
  np_soft_triplet,
  np_softmax,
  np_triplet,
  torch_ce_label_smooth,
  torch_ddan_triplet,
  torch_soft_entropy,
  torch_soft_triplet,
)

# 4 identities x 3 instances and a singleton (its only positive is itself).
_LABELS = np.array([0, 1, 2, 0, 3, 1, 2, 3, 0, 4, 1, 2, 3])
_MARGINS = (0.3, None, 0.0)


def _feat(seed=0, d=5):
  """Features where no O(1e-6) perturbation changes the mining or crosses a hinge kink."""
  return _cached_feat(seed, d).copy()


@functools.lru_cache(maxsize=None)
def _cached_feat(seed, d):
  for s in range(seed, seed + 1000):
    f = np.random.default_rng(s).normal(size=(len(_LABELS), d))
    if min(mining_margin(f, _LABELS), mining_margin(f, _LABELS, normalize=True)) < 1e-3:
      continue
    kinks = []
    for normalize in (True, False):
      x = f / np.linalg.norm(f, axis=1, keepdims=True) if normalize else f
      dd = np_dist(x)
      p, n = np_mine(dd, _LABELS)
      z = dd[np.arange(len(f)), p] - dd[np.arange(len(f)), n]
      kinks += [np.min(np.abs(z + 0.3)), np.min(np.abs(z))]
    if min(kinks) > 1e-3:
      return f
  raise AssertionError("no suitable features")


@functools.lru_cache(maxsize=None)
def _fd_triplet(seed, margin, normalize):
  """Central differences of the NumPy triplet reference at _feat(seed) (shared by the variants)."""
  return fd_grad(lambda x: np_triplet(x, _LABELS, margin, normalize), _feat(seed))


@functools.lru_cache(maxsize=None)
def _fd_soft_triplet(seed, margin, teacher_seed=None):
  t = None if teacher_seed is None else np.random.default_rng(teacher_seed).normal(
      size=(len(_LABELS), 5))
  return fd_grad(lambda x: np_soft_triplet(x, _LABELS, t, margin), _feat(seed))


def _t(a):
  return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


class TripletLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(dtype=(np.float32, np.float64), margin=_MARGINS, normalize=(True, False))
  def test_values(self, dtype, margin, normalize):
    with jax.enable_x64(dtype == np.float64):
      f = _feat(0)
      fn = self.variant(lambda x: reid.triplet_loss(x, _LABELS, margin, normalize))
      out = fn(jnp.asarray(f, dtype))
      self.assertEqual(out.dtype, dtype)
      tol = 1e-5 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(out, np_triplet(f, _LABELS, margin, normalize), rtol=tol,
                                 atol=tol)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(margin=_MARGINS, normalize=(True, False))
  def test_gradients_float64(self, margin, normalize):
    with jax.enable_x64(True):
      f = _feat(1)
      g = self.variant(jax.grad(lambda x: reid.triplet_loss(x, _LABELS, margin, normalize)))(
          jnp.asarray(f))
      ref = _fd_triplet(1, margin, normalize)
      np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-8)
      self.assertGreater(np.abs(ref).max(), 1e-3)  # not a vacuous all-zero comparison

  def test_gradient_float32(self):
    f = _feat(2)
    g = jax.jit(jax.grad(lambda x: reid.triplet_loss(x, _LABELS)))(jnp.asarray(f, jnp.float32))
    self.assertEqual(g.dtype, jnp.float32)
    ref = _fd_triplet(2, 0.3, True)
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-4)

  def test_normalisation_adds_epsilon_to_the_norm(self):
    # A row of norm 1e-12 is halved by x / (||x|| + 1e-12); a max(||x||, 1e-12) floor would keep
    # it at norm 1. Two samples of label 0 (one tiny), one of label 1.
    with jax.enable_x64(True):
      f = np.array([[1e-12, 0.0], [1.0, 0.0], [0.0, 1.0]])
      y = np.array([0, 0, 1])
      out = reid.triplet_loss(jnp.asarray(f), y, margin=None)
      halved = np.array([[0.5, 0.0], [1.0, 0.0], [0.0, 1.0]])
      np.testing.assert_allclose(out, np_triplet(halved, y, None, False), rtol=1e-12)
      np.testing.assert_allclose(out, np_triplet(f, y, None, True), rtol=1e-12)
      floored = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
      self.assertGreater(abs(float(out) - np_triplet(floored, y, None, False)), 1e-3)
      # An all-zero row stays finite, gradient included.
      f[0] = 0.0
      g = jax.grad(lambda x: reid.triplet_loss(x, y))(jnp.asarray(f))
      self.assertTrue(np.isfinite(np.asarray(g)).all())

  def test_margin_traced_without_recompiling(self):
    traces = []

    @jax.jit
    def f(x, m):
      traces.append(1)
      return reid.triplet_loss(x, _LABELS, m)

    x = _feat(0)
    for m in (0.1, 0.3, 0.5):
      np.testing.assert_allclose(f(jnp.asarray(x, jnp.float32), jnp.float32(m)),
                                 np_triplet(x, _LABELS, m, True), rtol=1e-5)
    self.assertLen(traces, 1)

  @parameterized.parameters(0.3, None)
  def test_matches_official_torch(self, margin):
    with jax.enable_x64(True):
      f = _feat(3)
      ft = _t(f)
      lt = torch_ddan_triplet(torch, ft, torch.tensor(_LABELS), margin)
      lt.backward()
      val, g = jax.value_and_grad(lambda x: reid.triplet_loss(x, _LABELS, margin))(
          jnp.asarray(f))
      np.testing.assert_allclose(val, lt.item(), rtol=1e-10)
      np.testing.assert_allclose(g, ft.grad.numpy(), rtol=1e-8, atol=1e-10)


class SoftTripletLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(dtype=(np.float32, np.float64), margin=(0.0, 0.3))
  def test_values_without_teacher(self, dtype, margin):
    with jax.enable_x64(dtype == np.float64):
      f = _feat(0)
      out = self.variant(lambda x: reid.soft_triplet_loss(x, _LABELS, margin=margin))(
          jnp.asarray(f, dtype))
      self.assertEqual(out.dtype, dtype)
      tol = 1e-5 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(out, np_soft_triplet(f, _LABELS, None, margin), rtol=tol)

  def test_margin_zero_is_softplus_not_hinge(self):
    with jax.enable_x64(True):
      f = _feat(0)
      d = np_dist(f)
      p, n = np_mine(d, _LABELS)
      z = d[np.arange(len(f)), p] - d[np.arange(len(f)), n]
      ref = np.mean(np.log1p(np.exp(z)))
      np.testing.assert_allclose(reid.soft_triplet_loss(jnp.asarray(f), _LABELS), ref,
                                 rtol=1e-12)
      # The default margin is 0.
      self.assertEqual(float(reid.soft_triplet_loss(jnp.asarray(f), _LABELS)),
                       float(reid.soft_triplet_loss(jnp.asarray(f), _LABELS, margin=0.0)))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_values_with_teacher(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      f = _feat(0)
      t = np.random.default_rng(9).normal(size=(len(_LABELS), 7))  # a wider teacher feature
      out = self.variant(lambda x, y: reid.soft_triplet_loss(x, _LABELS, y, margin=None))(
          jnp.asarray(f, dtype), jnp.asarray(t, dtype))
      self.assertEqual(out.dtype, dtype)
      # float32: the expanded teacher self-distance of the singleton is sqrt of a rounding
      # residue (~1e-3, not 1e-6), as in the official code; hence the looser tolerance.
      tol = 1e-4 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(out, np_soft_triplet(f, _LABELS, t), rtol=tol)
      # Indices come from the student: the teacher's own mining would give another value.
      self.assertFalse(np.array_equal(np.stack(np_mine(np_dist(t), _LABELS)),
                                      np.stack(np_mine(np_dist(f), _LABELS))))
      # With a teacher the margin is ignored.
      np.testing.assert_allclose(
          reid.soft_triplet_loss(jnp.asarray(f, dtype), _LABELS, jnp.asarray(t, dtype), 0.7),
          out, rtol=tol)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_float64(self):
    with jax.enable_x64(True):
      f = _feat(4)
      t = np.random.default_rng(8).normal(size=(len(_LABELS), 5))
      for margin in (0.0, 0.3):
        g = self.variant(jax.grad(lambda x: reid.soft_triplet_loss(x, _LABELS, margin=margin)))(
            jnp.asarray(f))
        ref = _fd_soft_triplet(4, margin)
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-8)
      gs, gt = self.variant(jax.grad(
          lambda x, y: reid.soft_triplet_loss(x, _LABELS, y, margin=None), argnums=(0, 1)))(
              jnp.asarray(f), jnp.asarray(t))
      ref = _fd_soft_triplet(4, None, teacher_seed=8)
      np.testing.assert_allclose(gs, ref, rtol=1e-6, atol=1e-8)
      self.assertGreater(np.abs(ref).max(), 1e-3)
      np.testing.assert_array_equal(gt, np.zeros_like(t))  # the teacher is a constant

  def test_teacher_equal_to_student(self):
    # Target = the student's own 2-way softmax: the loss is its entropy and its gradient is 0.
    with jax.enable_x64(True):
      f = _feat(5)
      d = np_dist(f)
      p, n = np_mine(d, _LABELS)
      q = np_softmax(np.stack([d[np.arange(len(f)), p], d[np.arange(len(f)), n]], 1))
      entropy = np.mean(-np.sum(q * np.log(q), axis=1))
      val, g = jax.value_and_grad(lambda x: reid.soft_triplet_loss(x, _LABELS, f, None))(
          jnp.asarray(f))
      np.testing.assert_allclose(val, entropy, rtol=1e-12)
      np.testing.assert_allclose(g, np.zeros_like(f), atol=1e-14)

  @parameterized.parameters(0.0, None)
  def test_matches_official_torch(self, margin):
    with jax.enable_x64(True):
      f = _feat(6)
      t = np.random.default_rng(3).normal(size=f.shape)
      ft = _t(f)
      lt = torch_soft_triplet(torch, ft, torch.tensor(t), torch.tensor(_LABELS), margin)
      lt.backward()
      teacher = jnp.asarray(t) if margin is None else None  # the official teacher form
      val, g = jax.value_and_grad(
          lambda x: reid.soft_triplet_loss(x, _LABELS, teacher, margin))(jnp.asarray(f))
      np.testing.assert_allclose(val, lt.item(), rtol=1e-10)
      np.testing.assert_allclose(g, ft.grad.numpy(), rtol=1e-8, atol=1e-10)

  def test_errors(self):
    f = jnp.ones((4, 3))
    y = jnp.array([0, 0, 1, 1])
    with self.assertRaisesRegex(ValueError, "margin=0.0"):
      reid.soft_triplet_loss(f, y, margin=None)
    with self.assertRaisesRegex(ValueError, "4 rows"):
      reid.soft_triplet_loss(f, y, jnp.ones((5, 3)), None)
    with self.assertRaisesRegex(ValueError, r"\(N, D\)"):
      reid.soft_triplet_loss(jnp.ones(4), y)
    with self.assertRaisesRegex(ValueError, r"\(N, D\)"):
      reid.triplet_loss(jnp.ones((4, 3, 1)), y)
    with self.assertRaisesRegex(ValueError, "integer labels"):
      reid.triplet_loss(f, y.astype(jnp.float32))


class CrossEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(dtype=(np.float32, np.float64), epsilon=(0.1, 0.0, 0.35))
  def test_label_smooth_values_and_gradient(self, dtype, epsilon):
    with jax.enable_x64(dtype == np.float64):
      rng = np.random.default_rng(0)
      z = rng.normal(size=(6, 5)) * 3
      y = rng.integers(0, 5, size=6)
      val, g = self.variant(jax.value_and_grad(
          lambda a: reid.cross_entropy_label_smooth(a, y, epsilon)))(jnp.asarray(z, dtype))
      self.assertEqual(val.dtype, dtype)
      self.assertEqual(g.dtype, dtype)
      tol = 1e-5 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(val, np_ce_label_smooth(z, y, epsilon), rtol=tol)
      # d/dz of the mean over rows: (softmax(z) - target) / B.
      target = (1 - epsilon) * np.eye(5)[y] + epsilon / 5
      np.testing.assert_allclose(g, (np_softmax(z) - target) / 6, rtol=tol, atol=tol)

  def test_epsilon_zero_is_plain_cross_entropy(self):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    y = np.array([2, 0, 1, 2])
    plain = -np.mean(np.log(np_softmax(z))[np.arange(4), y])
    np.testing.assert_allclose(reid.cross_entropy_label_smooth(jnp.asarray(z, jnp.float32), y,
                                                               0.0), plain, rtol=1e-6)

  def test_epsilon_traced_without_recompiling(self):
    traces = []

    @jax.jit
    def f(z, e):
      traces.append(1)
      return reid.cross_entropy_label_smooth(z, jnp.array([0, 1]), e)

    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    for e in (0.0, 0.1, 0.2):
      np.testing.assert_allclose(f(jnp.asarray(z, jnp.float32), e),
                                 np_ce_label_smooth(z, [0, 1], e), rtol=1e-6)
    self.assertLen(traces, 1)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_soft_cross_entropy(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      rng = np.random.default_rng(2)
      z, t = rng.normal(size=(5, 4)) * 2, rng.normal(size=(5, 4)) * 2
      val, (gz, gt) = self.variant(jax.value_and_grad(reid.soft_cross_entropy, argnums=(0, 1)))(
          jnp.asarray(z, dtype), jnp.asarray(t, dtype))
      self.assertEqual(val.dtype, dtype)
      tol = 1e-5 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(val, np_soft_ce(z, t), rtol=tol)
      np.testing.assert_allclose(gz, (np_softmax(z) - np_softmax(t)) / 5, rtol=tol, atol=tol)
      np.testing.assert_array_equal(gt, np.zeros_like(t))

  def test_matches_official_torch(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(3)
      z, t = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
      y = rng.integers(0, 7, size=6)
      zt = _t(z)
      (torch_ce_label_smooth(torch, zt, torch.tensor(y), 7, 0.1)
       + 0.5 * torch_soft_entropy(torch, zt, torch.tensor(t))).backward()
      ref = (torch_ce_label_smooth(torch, torch.tensor(z), torch.tensor(y), 7, 0.1).item(),
             torch_soft_entropy(torch, torch.tensor(z), torch.tensor(t)).item())
      zj = jnp.asarray(z)
      np.testing.assert_allclose(reid.cross_entropy_label_smooth(zj, y), ref[0], rtol=1e-12)
      np.testing.assert_allclose(reid.soft_cross_entropy(zj, jnp.asarray(t)), ref[1],
                                 rtol=1e-12)
      g = jax.grad(lambda a: reid.cross_entropy_label_smooth(a, y)
                   + 0.5 * reid.soft_cross_entropy(a, jnp.asarray(t)))(zj)
      np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-14)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, r"\(B, K\)"):
      reid.cross_entropy_label_smooth(jnp.ones(3), jnp.zeros(3, jnp.int32))
    with self.assertRaisesRegex(ValueError, r"shape \(2,\)"):
      reid.cross_entropy_label_smooth(jnp.ones((2, 3)), jnp.zeros(3, jnp.int32))
    with self.assertRaisesRegex(ValueError, "same shape"):
      reid.soft_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with self.assertRaisesRegex(ValueError, "floating"):
      reid.uniform_confusion_loss(jnp.ones((2, 3), jnp.int32))


class UniformConfusionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_values_and_gradient(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      rng = np.random.default_rng(4)
      z = rng.normal(size=(6, 2)) * 2
      val, g = self.variant(jax.value_and_grad(reid.uniform_confusion_loss))(
          jnp.asarray(z, dtype))
      self.assertEqual(val.dtype, dtype)
      total = 0.0
      for b in range(6):
        for c in range(2):
          total -= math.log(math.exp(z[b, c]) / sum(math.exp(v) for v in z[b]))
      tol = 1e-5 if dtype == np.float32 else 1e-12
      np.testing.assert_allclose(val, total / 12, rtol=tol)
      # d/dz of -(1 / (B C)) sum log_softmax: (softmax(z) - 1 / C) / B.
      np.testing.assert_allclose(g, (np_softmax(z) - 0.5) / 6, rtol=tol, atol=tol)

  def test_uniform_prediction_gives_log_c(self):
    for c in (2, 5):
      val, g = jax.value_and_grad(reid.uniform_confusion_loss)(jnp.full((3, c), 0.7))
      np.testing.assert_allclose(val, math.log(c), rtol=1e-6)
      np.testing.assert_allclose(g, np.zeros((3, c)), atol=1e-7)

  def test_matches_official_expression(self):
    with jax.enable_x64(True):
      z = np.random.default_rng(5).normal(size=(4, 2))
      zt = _t(z)
      # DDAN `reid/trainers.py`: -torch.mean(torch.log(F.softmax(x + 1e-6))) (implicit dim 1).
      lt = -torch.mean(torch.log(torch.nn.functional.softmax(zt + 1e-6, dim=1)))
      lt.backward()
      val, g = jax.value_and_grad(reid.uniform_confusion_loss)(jnp.asarray(z))
      np.testing.assert_allclose(val, lt.item(), rtol=1e-12)
      np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


if __name__ == "__main__":
  absltest.main()
