"""Tests for jaxcompress.reid.memory (DDAN identity memory) against a loop-based NumPy reference.

The reference transcribes the official `InvNet.forward` (https://github.com/PeixianChen/DDAN,
`reid/loss/identityloss.py`) sample by sample: the epoch/step reset, similarities, the
multiply-by-0 candidate mask, the neighbour ranking, the two mean-reduced KL terms and the
sequential per-sample memory update.
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import reid
from jaxcompress.reid import memory as mem_lib

# 12 identities in 4 datasets (3 each); dataset 3 plays the central domain.
ID_DOMAINS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], np.int32)
CENTRAL = 3
DIM = 5


def np_state(num_ids=12, dim=DIM):
  z = np.zeros((num_ids, dim))
  return {"memory": z.copy(), "last": z.copy(), "current": z.copy(), "count": np.zeros(num_ids)}


def np_softmax(v, beta):
  z = [x / beta for x in v]
  top = max(z)
  e = [math.exp(x - top) for x in z]
  s = sum(e)
  return [x / s for x in e]


def np_xlogx(x):
  return x * math.log(x) if x > 0 else 0.0


def np_select(state, feat, domains, id_domains, epoch, knn, central):
  """Neighbours per sample by explicit loops: scores, mask by multiplication, stable ranking."""
  m = state["memory"]
  num_ids, dim = m.shape
  nbrs = []
  for b in range(feat.shape[0]):
    scores = []
    for j in range(num_ids):
      norm = math.sqrt(sum(m[j, c] ** 2 for c in range(dim)))
      if epoch > 0:
        key = [m[j, c] / norm if norm > 0 else 0.0 for c in range(dim)]
      else:
        key = list(m[j])
      s = sum(feat[b, c] * key[c] for c in range(dim))
      if domains[b] == central:
        allowed = id_domains[j] == central
      else:
        allowed = id_domains[j] != domains[b]
      scores.append(s * (1.0 if allowed else 0.0))
    order = sorted(range(num_ids), key=lambda j: (-scores[j], j))
    nbrs.append(sorted(order[:knn]))
  return np.array(nbrs)


def np_loss(state, feat, nbrs, epoch, beta):
  """The two mean-reduced `KLDivLoss` terms of the official `smooth_loss`."""
  batch, dim = feat.shape
  knn = nbrs.shape[1]
  total = 0.0
  for b in range(batch):
    for i in range(knn):
      p = list(feat[b])
      q = list(state["memory"][nbrs[b, i]])
      if epoch > 0:
        p, q = np_softmax(p, beta), np_softmax(q, beta)
      for c in range(dim):
        # KLDivLoss(log(P + eps), Q): Q (log Q - log(P + eps)), 0 where Q = 0; and symmetric.
        total += np_xlogx(q[c]) - q[c] * math.log(p[c] + 1e-8)
        total += np_xlogx(p[c]) - p[c] * math.log(q[c] + 1e-8)
  return total / (batch * knn * dim)


def np_update(state, feat, labels, epoch, step, alpha):
  """The official per-sample update loop (after the loss)."""
  st = {k: v.copy() for k, v in state.items()}
  a = 0.0 if epoch == 0 else alpha
  for x, y in zip(feat, labels):
    st["count"][y] += 1
    n = st["count"][y]
    st["current"][y] = st["current"][y] * (n - 1) / n + x / n
    st["memory"][y] = st["last"][y] * a + st["current"][y] * (1 - a)
  return st


def np_step(state, feat, labels, domains, id_domains, epoch, step, knn, beta, alpha, central):
  st = {k: v.copy() for k, v in state.items()}
  if epoch > 0 and step == 0:
    st["last"] = st["memory"].copy()
    st["count"] = st["count"] * 0
  nbrs = np_select(st, feat, domains, id_domains, epoch, knn, central)
  loss = np_loss(st, feat, nbrs, epoch, beta)
  return loss, np_update(st, feat, labels, epoch, step, alpha), nbrs


def to_state(st, dtype):
  return reid.IdentityMemory(**{k: jnp.asarray(v, dtype) for k, v in st.items()})


def batches(seed, n):
  """Batches of 6 with repeated identities and a central-domain sample (label 10, domain 3)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    labels = rng.choice(10, size=5, replace=True)
    labels[1] = labels[0]  # a repeated identity in every batch
    labels = np.append(labels, 10 if rng.random() < 0.5 else 9)
    domains = ID_DOMAINS[labels]
    feat = rng.uniform(0.0, 2.0, size=(6, DIM))
    out.append((feat, labels.astype(np.int32), domains.astype(np.int32)))
  return out


class IdentityMemoryTest(chex.TestCase):

  def test_init_and_id_domains(self):
    st = reid.identity_memory_init(7, 3, jnp.float64 if jax.config.x64_enabled else jnp.float32)
    for leaf, shape in zip((st.memory, st.last, st.current, st.count), ((7, 3),) * 3 + ((7,),)):
      self.assertEqual(leaf.shape, shape)
      self.assertFalse(np.any(np.asarray(leaf)))
    self.assertLen(jax.tree.leaves(st), 4)
    aligned, official = reid.ddan_id_domains(True), reid.ddan_id_domains(aligned=False)
    for arr in (aligned, official):
      self.assertEqual(arr.shape, (18530,))
      self.assertEqual(arr.dtype, np.int32)
    # Aligned with the pid offsets: Market 0-1500, Duke 1501-3312, CUHK03 3313-4779, CUHK02
    # 4780-6595, CUHK-SYSU 6596-18529.
    for first, last, d in ((0, 1500, 0), (1501, 3312, 1), (3313, 4779, 2), (4780, 6595, 3),
                           (6596, 18529, 4)):
      self.assertTrue(np.all(aligned[first:last + 1] == d))
    edges = np.cumsum([0, 1816, 1467, 1812, 1501, 11934])
    for d in range(5):
      self.assertTrue(np.all(official[edges[d]:edges[d + 1]] == d))
    np.testing.assert_array_equal(reid.ddan_id_domains(), aligned)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sequence_float64(self):
    """Three epochs of three steps each, loss, neighbours and state against the reference."""
    with jax.enable_x64(True):
      fn = self.variant(lambda s, f, l, d, e, t: reid.identity_memory_loss(
          s, f, l, d, jnp.asarray(ID_DOMAINS), e, t, knn=3, beta=0.3, alpha=0.25, central=CENTRAL))
      ref = np_state()
      st = reid.identity_memory_init(12, DIM, jnp.float64)
      data = iter(batches(0, 9))
      for epoch in range(3):
        for step in range(3):
          feat, labels, domains = next(data)
          r_loss, ref, r_nbrs = np_step(ref, feat, labels, domains, ID_DOMAINS, epoch, step, 3,
                                        0.3, 0.25, CENTRAL)
          loss, st, nbrs = fn(st, jnp.asarray(feat), labels, domains, epoch, step)
          self.assertEqual(loss.dtype, jnp.float64)
          self.assertEqual(nbrs.dtype, jnp.int32)
          np.testing.assert_array_equal(nbrs, r_nbrs)
          np.testing.assert_allclose(loss, r_loss, rtol=1e-12)
          for k in ("memory", "last", "current", "count"):
            np.testing.assert_allclose(getattr(st, k), ref[k], rtol=1e-12, atol=1e-14, err_msg=k)

  def test_sequence_float32(self):
    ref = np_state()
    st = reid.identity_memory_init(12, DIM)
    fn = jax.jit(reid.identity_memory_loss, static_argnames=("knn",))
    for epoch, step, (feat, labels, domains) in zip((0, 0, 1, 1), (0, 1, 0, 1), batches(1, 4)):
      r_loss, ref, r_nbrs = np_step(ref, feat, labels, domains, ID_DOMAINS, epoch, step, 3, 0.3,
                                    0.05, CENTRAL)
      loss, st, nbrs = fn(st, jnp.asarray(feat, jnp.float32), labels, domains, ID_DOMAINS, epoch,
                          step, knn=3, beta=0.3, central=CENTRAL)
      self.assertEqual(loss.dtype, jnp.float32)
      self.assertEqual(st.memory.dtype, jnp.float32)
      np.testing.assert_array_equal(nbrs, r_nbrs)
      np.testing.assert_allclose(loss, r_loss, rtol=1e-5)
      np.testing.assert_allclose(st.memory, ref["memory"], rtol=1e-5, atol=1e-6)

  def test_exclusion_multiplies_by_zero(self):
    """Allowed identities with negative similarity rank below excluded ones (score 0)."""
    with jax.enable_x64(True):
      rng = np.random.default_rng(2)
      ref = np_state()
      ref["memory"] = rng.normal(size=(12, DIM))
      feat = rng.uniform(0.5, 1.0, size=(2, DIM))
      # Sample 0 (domain 0): identities 3-5 (dataset 1) similar, 6-11 anti-similar.
      ref["memory"][3:6] = np.abs(ref["memory"][3:6])
      ref["memory"][6:12] = -np.abs(ref["memory"][6:12])
      labels, domains = np.array([0, 9], np.int32), np.array([0, 3], np.int32)
      for epoch in (0, 2):
        r_nbrs = np_select(ref, feat, domains, ID_DOMAINS, epoch, 5, CENTRAL)
        _, _, nbrs = reid.identity_memory_loss(to_state(ref, jnp.float64), feat, labels, domains,
                                               ID_DOMAINS, epoch, 1, knn=5, beta=0.5,
                                               central=CENTRAL)
        np.testing.assert_array_equal(nbrs, r_nbrs)
        # Sample 0: the three positive allowed ones, then the two lowest excluded (own dataset,
        # score 0) ahead of the negative allowed ones. Sample 1 (central): every central
        # identity is negative, so the excluded identities 0, 1 win the ties at 0.
        np.testing.assert_array_equal(nbrs[0], [0, 1, 3, 4, 5])
        np.testing.assert_array_equal(nbrs[1], [0, 1, 2, 3, 4])

  def test_gradient_matches_central_differences(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(3)
      ref = np_state()
      ref["memory"] = rng.uniform(0.0, 2.0, size=(12, DIM))
      feat, labels, domains = batches(4, 1)[0]
      for epoch, beta in ((1, 0.3), (2, 0.05), (0, 0.3)):
        # At epoch 0 (raw features) the derivative is finite only away from zero entries.
        def ref_loss(f):
          nbrs = np_select(ref, f, domains, ID_DOMAINS, epoch, 3, CENTRAL)
          return np_loss(ref, f, nbrs, epoch, beta)

        grad = jax.grad(lambda f: reid.identity_memory_loss(
            to_state(ref, jnp.float64), f, labels, domains, ID_DOMAINS, epoch, 2, knn=3,
            beta=beta, central=CENTRAL)[0])(jnp.asarray(feat))
        eps = 1e-6
        fd = np.zeros_like(feat)
        for idx in np.ndindex(*feat.shape):
          hi, lo = feat.copy(), feat.copy()
          hi[idx] += eps
          lo[idx] -= eps
          fd[idx] = (ref_loss(hi) - ref_loss(lo)) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9, err_msg=f"epoch {epoch}")
        self.assertGreater(np.abs(fd).max(), 1e-4)

  def test_official_temperature_float32_is_finite(self):
    """beta 0.002 underflows most softmax entries in float32: value and gradient stay finite."""
    rng = np.random.default_rng(5)
    ref = np_state()
    ref["memory"] = rng.uniform(0.0, 6.0, size=(12, DIM))
    feat, labels, domains = batches(6, 1)[0]
    feat = 3 * feat
    nbrs = np_select(ref, feat, domains, ID_DOMAINS, 1, 3, CENTRAL)
    r_loss = np_loss(ref, feat, nbrs, 1, 0.002)

    def loss_fn(f):
      return reid.identity_memory_loss(to_state(ref, jnp.float32), f, labels, domains,
                                        ID_DOMAINS, 1, 1, knn=3, central=CENTRAL)[0]

    loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(feat, jnp.float32))
    np.testing.assert_allclose(loss, r_loss, rtol=1e-5)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_traced_epoch_and_step_do_not_recompile(self):
    traces = []

    @jax.jit
    def fn(st, feat, labels, domains, epoch, step):
      traces.append(1)
      return reid.identity_memory_loss(st, feat, labels, domains, ID_DOMAINS, epoch, step, knn=3,
                                       beta=0.3, alpha=0.25, central=CENTRAL)

    ref = np_state()
    st = reid.identity_memory_init(12, DIM)
    for epoch, step, (feat, labels, domains) in zip((0, 0, 1, 1, 2), (0, 1, 0, 1, 0),
                                                     batches(7, 5)):
      _, ref, r_nbrs = np_step(ref, feat, labels, domains, ID_DOMAINS, epoch, step, 3, 0.3, 0.25,
                               CENTRAL)
      _, st, nbrs = fn(st, jnp.asarray(feat, jnp.float32), labels, domains, jnp.asarray(epoch),
                       jnp.asarray(step))
      np.testing.assert_array_equal(nbrs, r_nbrs)
      np.testing.assert_allclose(st.last, ref["last"], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(st.memory, ref["memory"], rtol=1e-5, atol=1e-6)
    self.assertLen(traces, 1)

  def test_state_gets_no_gradient(self):
    rng = np.random.default_rng(8)
    ref = np_state()
    ref["memory"] = rng.uniform(0.0, 2.0, size=(12, DIM))
    feat, labels, domains = batches(9, 1)[0]
    g = jax.grad(lambda s: reid.identity_memory_loss(
        s, feat.astype(np.float32), labels, domains, ID_DOMAINS, 1, 1, knn=3,
        central=CENTRAL)[0])(to_state(ref, jnp.float32))
    self.assertFalse(np.any(np.asarray(g.memory)))

  def test_bad_inputs(self):
    st = reid.identity_memory_init(12, DIM)
    feat, labels, domains = batches(10, 1)[0]
    call = lambda **kw: reid.identity_memory_loss(**{
        "state": st, "feat": feat.astype(np.float32), "labels": labels, "domains": domains,
        "id_domains": ID_DOMAINS, "epoch": 1, "step": 0, **kw})
    with self.assertRaisesRegex(ValueError, "memory width"):
      call(feat=np.ones((6, DIM + 1), np.float32))
    with self.assertRaisesRegex(ValueError, "labels"):
      call(labels=labels.astype(np.float32))
    with self.assertRaisesRegex(ValueError, "domains"):
      call(domains=domains[:3])
    with self.assertRaisesRegex(ValueError, "id_domains"):
      call(id_domains=ID_DOMAINS[:5])
    with self.assertRaisesRegex(ValueError, "knn"):
      call(knn=13)
    with self.assertRaisesRegex(ValueError, "floating"):
      reid.identity_memory_init(3, 2, jnp.int32)
    self.assertIs(mem_lib.identity_memory_loss, reid.identity_memory_loss)


if __name__ == "__main__":
  absltest.main()
