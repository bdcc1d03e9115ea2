"""Tests for jaxcompress.reid MEB-Net pieces: scatter, authority, mean-teacher decay, joint loss.

The joint loss is checked part by part against a NumPy composition of loop references and, with
gradients, against a PyTorch transcription of the official `MEBTrainer.train` loss.
"""
from __future__ import annotations

import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl.testing import absltest, parameterized

from jaxcompress import reid, selfsup

sys.path.insert(0, os.path.dirname(__file__))
from reid_loss_refs import (  # noqa: E402  (a sibling module of the tests)
  np_ce_label_smooth,
  np_soft_ce,
  np_soft_triplet,
  torch_ce_label_smooth,
  torch_soft_entropy,
  torch_soft_triplet,
)


def np_j_scatter(x, labels):
  """J = between / within scatter by explicit loops over clusters and members (-1 skipped)."""
  x = np.asarray(x, np.float64)
  clusters = sorted({int(c) for c in labels if c != -1})
  centres, counts, within = [], [], 0.0
  for c in clusters:
    members = [x[i] for i in range(len(x)) if labels[i] == c]
    mu = sum(members) / len(members)
    within += sum(float(np.dot(m - mu, m - mu)) for m in members)
    centres.append(mu)
    counts.append(len(members))
  mu_bar = sum(centres) / len(centres)
  between = sum(n * float(np.dot(mu - mu_bar, mu - mu_bar)) for n, mu in zip(counts, centres))
  return between / within


def _blobs(seed, spread, k=4, per=6, d=3):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, d)) * 5
  labels = np.repeat(np.arange(k), per)
  return centres[labels] + spread * rng.normal(size=(k * per, d)), labels


class ScatterTest(chex.TestCase):

  @parameterized.parameters(np.float32, np.float64)
  def test_matches_loop_reference(self, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(dtype)
    labels = rng.integers(0, 5, size=30)  # unequal cluster sizes
    j = reid.j_scatter(x, labels)
    self.assertEqual(j.dtype, dtype)
    self.assertEqual(j.shape, ())
    np.testing.assert_allclose(j, np_j_scatter(x, labels), rtol=1e-6 if dtype == np.float32
                               else 1e-12)
    # JAX arrays are accepted as well.
    np.testing.assert_allclose(reid.j_scatter(jnp.asarray(x), jnp.asarray(labels)), j, rtol=1e-6)

  def test_ignores_label_minus_one(self):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    labels = rng.integers(0, 4, size=20)
    outliers = rng.normal(size=(5, 3)) * 100
    xs = np.concatenate([outliers[:2], x, outliers[2:]])
    ls = np.concatenate([[-1, -1], labels, [-1, -1, -1]])
    np.testing.assert_allclose(reid.j_scatter(xs, ls), reid.j_scatter(x, labels), rtol=1e-12)
    np.testing.assert_allclose(reid.j_scatter(xs, ls), np_j_scatter(x, labels), rtol=1e-12)

  def test_unweighted_centre_mean_and_relabelling(self):
    # mu_bar is the plain mean of the centres, not the sample mean: sizes 1 and 3 on a line.
    x = np.array([[0.0], [4.0], [6.0], [8.0]])
    labels = np.array([0, 1, 1, 1])
    # centres 0 and 6, mu_bar = 3; between = 1*9 + 3*9 = 36; within = 4 + 0 + 4 = 8.
    np.testing.assert_allclose(reid.j_scatter(x, labels), 36 / 8, rtol=1e-12)
    np.testing.assert_allclose(reid.j_scatter(x, np.array([7, 2, 2, 2])), 36 / 8, rtol=1e-12)

  def test_separated_blobs_score_higher(self):
    tight = reid.j_scatter(*_blobs(2, 0.1))
    loose = reid.j_scatter(*_blobs(2, 3.0))
    self.assertGreater(float(tight), 10 * float(loose))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "all labels are -1"):
      reid.j_scatter(np.ones((3, 2)), np.array([-1, -1, -1]))
    with self.assertRaisesRegex(ValueError, r"\(N, D\)"):
      reid.j_scatter(np.ones(3), np.array([0, 1, 1]))
    with self.assertRaisesRegex(ValueError, "integer labels"):
      reid.j_scatter(np.ones((3, 2)), np.array([0.0, 1.0, 1.0]))


class AuthorityAndDecayTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_authority(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      j = np.array([2.5, 0.5, 1.0], dtype)
      a = self.variant(reid.expert_authority)(jnp.asarray(j))
      self.assertEqual(a.dtype, dtype)
      np.testing.assert_allclose(a, [2.5 * 3 / 4, 0.5 * 3 / 4, 3 / 4], rtol=1e-6)
      np.testing.assert_allclose(jnp.mean(a), 1.0, rtol=1e-6)
      five = self.variant(reid.expert_authority)(jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0], dtype))
      np.testing.assert_allclose(five, 5 * np.arange(1, 6) / 15, rtol=1e-6)
      # A constant: no gradient flows back to the scatter ratios.
      g = jax.grad(lambda v: jnp.sum(reid.expert_authority(v) * jnp.arange(3.0, dtype=dtype)))(
          jnp.asarray(j))
      np.testing.assert_array_equal(g, np.zeros(3))

  def test_authority_from_python_values(self):
    a = reid.expert_authority([1, 1, 2])
    self.assertTrue(jnp.issubdtype(a.dtype, jnp.floating))
    np.testing.assert_allclose(a, [0.75, 0.75, 1.5], rtol=1e-7)
    with self.assertRaisesRegex(ValueError, r"\(E,\)"):
      reid.expert_authority(jnp.ones((2, 2)))

  def test_mean_teacher_decay_values(self):
    # 998 is the last step below the cap: 1 - 1/999 < 0.999 = 1 - 1/1000.
    for step, expected in [(0, 0.0), (1, 0.5), (2, 2 / 3), (9, 0.9), (998, 1 - 1 / 999),
                           (999, 0.999), (5000, 0.999)]:
      np.testing.assert_allclose(reid.mean_teacher_decay(step), expected, rtol=1e-6)
    np.testing.assert_allclose(reid.mean_teacher_decay(3, alpha=0.5), 0.5, rtol=1e-7)
    np.testing.assert_allclose(reid.mean_teacher_decay(1, alpha=0.9), 0.5, rtol=1e-7)
    self.assertEqual(float(reid.mean_teacher_decay(0)), 0.0)
    with self.assertRaisesRegex(ValueError, "non-negative"):
      reid.mean_teacher_decay(-1)

  def test_mean_teacher_decay_traced_and_float64(self):
    traces = []

    @jax.jit
    def f(t, a):
      traces.append(1)
      return reid.mean_teacher_decay(t, a)

    for t in (0, 3, 100000):
      np.testing.assert_allclose(f(jnp.int32(t), jnp.float32(0.99)), min(1 - 1 / (t + 1), 0.99),
                                 rtol=1e-6)
    self.assertLen(traces, 1)
    with jax.enable_x64(True):
      m = reid.mean_teacher_decay(jnp.int64(7), jnp.float64(0.999))
      self.assertEqual(m.dtype, jnp.float64)
      self.assertEqual(float(m), 1 - 1 / 8)

  def test_ema_update_reexport_and_step_zero_copy(self):
    self.assertIs(reid.ema_update, selfsup.ema_update)
    ema = {"w": jnp.full((2, 3), 5.0)}
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    out = reid.ema_update(ema, params, reid.mean_teacher_decay(0))
    np.testing.assert_array_equal(out["w"], params["w"])  # the teacher copies the student
    out = reid.ema_update(ema, params, reid.mean_teacher_decay(1))
    np.testing.assert_allclose(out["w"], 0.5 * (5.0 + params["w"]), rtol=1e-7)


# --- meb_loss -----------------------------------------------------------------------------------

_TARGETS = np.repeat(np.arange(4), 3)[np.random.default_rng(7).permutation(12)]
_E, _B, _K = 3, 12, 6
_WIDTHS = (5, 4, 7)  # heterogeneous experts may differ in feature width


def _meb_inputs(seed):
  rng = np.random.default_rng(seed)
  logits = [rng.normal(size=(_B, _K)) * 2 for _ in range(_E)]
  feats = [rng.normal(size=(_B, w)) for w in _WIDTHS]
  ema_logits = [rng.normal(size=(_B, _K)) * 2 for _ in range(_E)]
  ema_feats = [rng.normal(size=(_B, w)) for w in _WIDTHS]
  authority = np.array([1.4, 0.5, 1.1])
  return logits, feats, ema_logits, ema_feats, authority


def np_meb(logits, feats, ema_logits, ema_feats, authority, wc=0.5, wt=0.8, eps=0.1):
  ce = sum(np_ce_label_smooth(p, _TARGETS, eps) for p in logits)
  tri = sum(np_soft_triplet(f, _TARGETS, None, 0.0) for f in feats)
  ce_soft = tri_soft = 0.0
  for i in range(_E):
    for j in range(_E):
      if i != j:
        ce_soft += 0.5 * authority[i] * np_soft_ce(logits[j], ema_logits[i])
        tri_soft += 0.5 * authority[i] * np_soft_triplet(feats[j], _TARGETS, ema_feats[i])
  parts = {"loss_ce": ce, "loss_tri": tri, "loss_ce_soft": ce_soft, "loss_tri_soft": tri_soft}
  return (1 - wc) * ce + (1 - wt) * tri + wc * ce_soft + wt * tri_soft, parts


class MebLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_parts_and_total(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      inputs = _meb_inputs(0)
      cast = [[jnp.asarray(a, dtype) for a in group] for group in inputs[:4]]
      fn = self.variant(lambda lg, ft, el, ef, au: reid.meb_loss(lg, ft, el, ef, _TARGETS, au))
      total, parts = fn(*cast, jnp.asarray(inputs[4], dtype))
      ref_total, ref_parts = np_meb(*inputs)
      self.assertEqual(set(parts), {"loss_ce", "loss_tri", "loss_ce_soft", "loss_tri_soft"})
      tol = 1e-5 if dtype == np.float32 else 1e-12
      self.assertEqual(total.dtype, dtype)
      for k, v in ref_parts.items():
        self.assertEqual(parts[k].dtype, dtype)
        np.testing.assert_allclose(parts[k], v, rtol=tol, err_msg=k)
      np.testing.assert_allclose(total, ref_total, rtol=tol)

  def test_weights_traced(self):
    traces = []

    @jax.jit
    def f(args, wc, wt, eps):
      traces.append(1)
      return reid.meb_loss(*args, _TARGETS, jnp.ones(3), wc, wt, eps)[0]

    inputs = _meb_inputs(1)
    args = [[jnp.asarray(a, jnp.float32) for a in group] for group in inputs[:4]]
    for wc, wt, eps in [(0.5, 0.8, 0.1), (0.3, 0.6, 0.2)]:
      ref, _ = np_meb(*inputs[:4], np.ones(3), wc, wt, eps)
      np.testing.assert_allclose(f(args, wc, wt, eps), ref, rtol=1e-5)
    self.assertLen(traces, 1)

  def test_gradients_match_official_torch(self):
    logits, feats, ema_logits, ema_feats, authority = _meb_inputs(2)
    # PyTorch transcription of the official `MEBTrainer.train` loss (mebnet/trainers.py).
    pt = [torch.tensor(p, requires_grad=True) for p in logits]
    ft = [torch.tensor(f, requires_grad=True) for f in feats]
    y = torch.tensor(_TARGETS)
    pe = [torch.tensor(p) for p in ema_logits]
    fe = [torch.tensor(f) for f in ema_feats]
    auth = torch.tensor(authority)
    loss_ce = loss_tri = loss_ce_soft = loss_tri_soft = 0
    for i in range(_E):
      loss_ce += torch_ce_label_smooth(torch, pt[i], y, _K, 0.1)
      loss_tri += torch_soft_triplet(torch, ft[i], ft[i], y, 0.0)
    for i in range(_E):
      for j in range(_E):
        if i != j:
          loss_ce_soft += 0.5 * auth[i] * torch_soft_entropy(torch, pt[j], pe[i])
          loss_tri_soft += 0.5 * auth[i] * torch_soft_triplet(torch, ft[j], fe[i], y, None)
    loss = loss_ce * 0.5 + loss_tri * 0.2 + loss_ce_soft * 0.5 + loss_tri_soft * 0.8
    loss.backward()
    with jax.enable_x64(True):
      j = [[jnp.asarray(a) for a in group] for group in (logits, feats, ema_logits, ema_feats)]

      def total(lg, ft_, el, ef, au):
        return reid.meb_loss(lg, ft_, el, ef, _TARGETS, au)[0]

      val, grads = jax.value_and_grad(total, argnums=(0, 1, 2, 3, 4))(*j, jnp.asarray(authority))
      np.testing.assert_allclose(val, loss.item(), rtol=1e-10)
      for e in range(_E):
        np.testing.assert_allclose(grads[0][e], pt[e].grad.numpy(), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(grads[1][e], ft[e].grad.numpy(), rtol=1e-8, atol=1e-12)
        # The EMA teachers and the authority are constants.
        np.testing.assert_array_equal(grads[2][e], np.zeros_like(ema_logits[e]))
        np.testing.assert_array_equal(grads[3][e], np.zeros_like(ema_feats[e]))
      np.testing.assert_array_equal(grads[4], np.zeros(_E))

  def test_errors(self):
    logits, feats, ema_logits, ema_feats, _ = _meb_inputs(3)
    with self.assertRaisesRegex(ValueError, "same positive number of experts"):
      reid.meb_loss(logits, feats[:2], ema_logits, ema_feats, _TARGETS, jnp.ones(3))
    with self.assertRaisesRegex(ValueError, r"authority of shape \(3,\)"):
      reid.meb_loss(logits, feats, ema_logits, ema_feats, _TARGETS, jnp.ones(2))


if __name__ == "__main__":
  absltest.main()
