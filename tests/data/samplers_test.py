"""Samplers: uniform keeps the pipeline's permutation, PK batches hold P identities x K examples."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from jaxcompress import errors
from jaxcompress.data import samplers


def _reid_labels(rng: np.random.Generator, num_ids: int, outliers: int) -> np.ndarray:
  """Identities of 1..7 examples (several below K=4) shuffled together with -1 outliers."""
  sizes = rng.integers(1, 8, size=num_ids)
  labels = np.concatenate([np.repeat(np.arange(num_ids) * 3 + 5, sizes),  # non-contiguous ids
                           -np.ones(outliers, np.int64)])
  return rng.permutation(labels)


@pytest.mark.parametrize("seed,epoch,n,g", [(0, 0, 100, 8), (3, 5, 97, 10), (12, 1, 64, 64)])
def test_uniform_is_the_pipeline_permutation(seed, epoch, n, g):
  order = samplers.get("uniform").epoch_order(epoch, n, g, seed=seed)
  expected = np.random.default_rng([seed, epoch]).permutation(n)[:(n // g) * g]
  assert order.dtype == np.int64
  np.testing.assert_array_equal(order, expected)
  # Labels without outliers do not change the order.
  labels = np.arange(n) % 7
  np.testing.assert_array_equal(
      samplers.get("uniform").epoch_order(epoch, n, g, labels=labels, seed=seed), expected)


def test_uniform_continues_with_further_permutations():
  n, g, seed, epoch = 10, 4, 2, 3
  order = samplers.get("uniform").epoch_order(epoch, n, g, num_batches=7, seed=seed)
  expected = np.concatenate([np.random.default_rng([seed, epoch]).permutation(n),
                             np.random.default_rng([seed, epoch, 1]).permutation(n),
                             np.random.default_rng([seed, epoch, 2]).permutation(n)])[:28]
  np.testing.assert_array_equal(order, expected)
  short = samplers.get("uniform").epoch_order(epoch, n, g, num_batches=1, seed=seed)
  np.testing.assert_array_equal(short, expected[:4])


def test_uniform_and_sequential_skip_outliers():
  labels = np.array([0, -1, 1, 1, -1, 2, 0, 3, -1, 2, 4])
  valid = np.flatnonzero(labels >= 0)
  uniform = samplers.get("uniform")
  assert uniform.natural_num_batches(len(labels), 2, labels) == len(valid) // 2
  order = uniform.epoch_order(0, len(labels), 2, labels=labels, seed=1)
  expected = valid[np.random.default_rng([1, 0]).permutation(len(valid))][:len(valid) // 2 * 2]
  np.testing.assert_array_equal(order, expected)
  long = uniform.epoch_order(0, len(labels), 2, num_batches=9, labels=labels, seed=1)
  assert len(long) == 18 and np.all(labels[long] >= 0)

  seq = samplers.get("sequential")
  np.testing.assert_array_equal(seq.epoch_order(4, len(labels), 3, labels=labels), valid[:6])
  np.testing.assert_array_equal(seq.epoch_order(0, 5, 2, num_batches=4), [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(seq.epoch_order(0, len(labels), 4, num_batches=3, labels=labels),
                                np.concatenate([valid, valid])[:12])


def _check_pk_batches(order, labels, p, k, num_batches):
  assert order.dtype == np.int64 and len(order) == num_batches * p * k
  assert np.all(labels[order] >= 0)
  for batch in order.reshape(num_batches, p, k):
    ids = labels[batch]
    assert np.all(ids == ids[:, :1]), "each run of K entries is one identity"
    assert len(set(ids[:, 0])) == p, "P distinct identities per batch"
    for block in batch:
      members = np.flatnonzero(labels == labels[block[0]])
      if len(members) >= k:  # without replacement
        assert len(set(block)) == k
      else:  # with replacement: only the identity's own examples
        assert set(block) <= set(members)


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_pk_batches_hold_p_identities_times_k(seed):
  rng = np.random.default_rng(1000 + seed)
  labels = _reid_labels(rng, num_ids=23, outliers=9)
  k, g = 4, 16
  p = g // k
  sampler = samplers.get("pk", num_instances=k)
  assert sampler.natural_num_batches(len(labels), g, labels) == 23 // p
  order = sampler.epoch_order(seed % 3, len(labels), g, labels=labels, seed=seed)
  _check_pk_batches(order, labels, p, k, 23 // p)
  # A natural epoch is one round: no identity appears twice.
  assert len(set(labels[order[::k]])) == len(order) // k

  longer = sampler.epoch_order(seed % 3, len(labels), g, num_batches=13, labels=labels, seed=seed)
  _check_pk_batches(longer, labels, p, k, 13)
  # Rounds of 23 // 4 = 5 batches: within a round every identity appears at most once.
  per_round = (23 // p) * g
  for start in range(0, len(longer), per_round):
    ids = labels[longer[start:start + per_round:k]]
    assert len(set(ids)) == len(ids)


def test_pk_sampling_with_and_without_replacement_statistics():
  # Identity 0 has 2 examples (< K = 4: with replacement), identity 1 has 6 (without).
  labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
  sampler = samplers.get("pk", num_instances=4)
  small_blocks, counts = [], collections.Counter()
  for seed in range(200):
    order = sampler.epoch_order(0, len(labels), 8, labels=labels, seed=seed)
    for block in order.reshape(-1, 4):
      if labels[block[0]] == 0:
        small_blocks.append(block)
      elif labels[block[0]] == 1:
        counts.update(block.tolist())
  # Every identity drawn in each single-batch round? Only 3 // 2 = 1 batch of 2 identities, so
  # identity 0 appears in about 2/3 of the rounds.
  assert 0.55 < len(small_blocks) / 200 < 0.78
  assert all(set(b) <= {0, 1} for b in small_blocks)
  assert any(len(set(b)) == 1 for b in small_blocks)  # replacement does repeat
  # Without replacement every one of the 6 examples is chosen, each with probability 4/6.
  assert set(counts) == set(range(2, 8))
  freq = np.array([counts[i] for i in range(2, 8)]) / sum(counts.values())
  np.testing.assert_allclose(freq, 1 / 6, atol=0.04)


def test_samplers_are_pure_and_depend_on_labels():
  rng = np.random.default_rng(5)
  labels = _reid_labels(rng, num_ids=30, outliers=5)
  before = labels.copy()
  for name, kwargs in [("uniform", {}), ("sequential", {}), ("pk", {"num_instances": 2})]:
    sampler = samplers.get(name, **kwargs)
    a = sampler.epoch_order(2, len(labels), 8, num_batches=6, labels=labels, seed=9)
    b = samplers.get(name, **kwargs).epoch_order(2, len(labels), 8, num_batches=6,
                                                 labels=labels.copy(), seed=9)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels, before)
    # Relabelling one example as an outlier (and, for PK, merging two identities) moves things.
    changed = labels.copy()
    changed[np.flatnonzero(labels >= 0)[0]] = -1
    if name == "pk":
      changed[changed == changed.max()] = changed[changed >= 0].min()
    c = sampler.epoch_order(2, len(labels), 8, num_batches=6, labels=changed, seed=9)
    assert not np.array_equal(a, c), name
  uniform = samplers.get("uniform")
  assert not np.array_equal(uniform.epoch_order(0, 50, 5), uniform.epoch_order(1, 50, 5))
  assert not np.array_equal(uniform.epoch_order(0, 50, 5, seed=0),
                            uniform.epoch_order(0, 50, 5, seed=1))
  pk = samplers.get("pk", num_instances=2)
  assert not np.array_equal(pk.epoch_order(0, len(labels), 8, labels=labels),
                            pk.epoch_order(1, len(labels), 8, labels=labels))


def test_errors_name_the_problem():
  labels = np.repeat(np.arange(3), 4)
  with pytest.raises(errors.ConfigError, match="needs labels"):
    samplers.get("pk").epoch_order(0, 12, 8)
  with pytest.raises(errors.ConfigError, match="divisible by num_instances K=3"):
    samplers.get("pk", num_instances=3).epoch_order(0, 12, 8, labels=labels)
  with pytest.raises(errors.ConfigError, match=r"P=4 identities.*only 3 identities"):
    samplers.get("pk", num_instances=2).epoch_order(0, 12, 8, labels=labels)
  with pytest.raises(errors.ConfigError, match="only 3 identities"):  # outliers do not count
    samplers.get("pk", num_instances=2).natural_num_batches(
        13, 8, np.concatenate([labels, [-1]]))
  with pytest.raises(errors.ConfigError, match="Unknown sampler 'random'"):
    samplers.get("random")
  with pytest.raises(errors.ConfigError, match="does not accept"):
    samplers.get("uniform", num_instances=4)
  with pytest.raises(errors.ConfigError, match="positive integer"):
    samplers.get("pk", num_instances=0)
  with pytest.raises(errors.ConfigError, match="exceeds the 2"):
    samplers.get("uniform").epoch_order(0, 4, 3, labels=np.array([0, -1, 1, -1]))
  with pytest.raises(errors.ConfigError, match="one integer label per example"):
    samplers.get("uniform").epoch_order(0, 4, 2, labels=np.zeros(5, np.int64))
  # Built-ins; methods may register more when they are imported.
  assert {"pk", "sequential", "uniform"} <= set(samplers.names())
  assert samplers.names() == sorted(samplers.names())
