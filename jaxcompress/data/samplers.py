"""Epoch orders for the training stream: uniform shuffling, sequential, and PK identity batches.

A sampler maps `(epoch, num_examples, global_batch_size, ...)` to the example indices of that
epoch, `num_batches * global_batch_size` of them; global batch b is positions
[b * G, (b + 1) * G) and process p reads its contiguous slice of it. `Sampler.epoch_order` is a
pure function of its arguments, so the example at any step is recomputed on resumption instead
of being stored in a checkpoint.

Negative labels mark examples to leave out (clustering outliers, e.g. DBSCAN's -1 in the
unsupervised re-identification methods); every sampler skips them when labels are given.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

from jaxcompress.errors import ConfigError


def _valid_indices(num_examples: int, labels: np.ndarray | None) -> np.ndarray:
  """Indices of the examples a sampler may draw (all, or those with a label >= 0)."""
  if num_examples < 0:
    raise ConfigError(f"num_examples must be >= 0, got {num_examples}.")
  if labels is None:
    return np.arange(num_examples, dtype=np.int64)
  labels = _check_labels(labels, num_examples)
  return np.flatnonzero(labels >= 0).astype(np.int64)


def _check_labels(labels: np.ndarray, num_examples: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != num_examples:
    raise ConfigError(f"Sampler labels have shape {labels.shape} but the source has "
                      f"{num_examples} examples; pass one integer label per example.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"Sampler labels must be integers (got dtype {labels.dtype}); use -1 for "
                      "examples to leave out.")
  return labels


def _check_batching(global_batch_size: int, num_batches: int | None) -> None:
  if global_batch_size <= 0:
    raise ConfigError(f"Global batch size must be positive, got {global_batch_size}.")
  if num_batches is not None and num_batches < 0:
    raise ConfigError(f"num_batches must be >= 0 (or None for a natural epoch), got "
                      f"{num_batches}.")


class Sampler(abc.ABC):
  """The order in which one epoch visits the examples."""

  @abc.abstractmethod
  def natural_num_batches(self, num_examples: int, global_batch_size: int,
                          labels: np.ndarray | None = None) -> int:
    """Whole global batches in one natural epoch (what `epoch_order` gives for None).

    Args:
      num_examples: size of the source.
      global_batch_size: examples per step over all processes.
      labels: optional (num_examples,) integer labels; negatives are left out.

    Returns:
      The number of batches, at least 1.

    Raises:
      ConfigError: when not even one batch fits.
    """

  @abc.abstractmethod
  def epoch_order(self, epoch: int, num_examples: int, global_batch_size: int,
                  num_batches: int | None = None, labels: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    """The example indices of one epoch.

    Args:
      epoch: epoch number (seeds the order together with `seed`).
      num_examples: size of the source.
      global_batch_size: examples per step over all processes.
      num_batches: batches to produce; None = `natural_num_batches`.
      labels: optional (num_examples,) integer labels; negatives are left out.
      seed: data seed.

    Returns:
      int64 array of length `num_batches * global_batch_size`.
    """


def _not_enough(num_valid: int, global_batch_size: int, what: str) -> ConfigError:
  return ConfigError(f"Global batch size {global_batch_size} exceeds the {num_valid} {what}; "
                     "lower config.data.batch_size.")


class Uniform(Sampler):
  """A fresh uniform permutation per epoch, truncated to whole batches.

  Epoch e is `default_rng([seed, e]).permutation(n)` over the usable examples, exactly the order
  the pipeline has always used, so runs without a sampler config do not change. Asking for more
  batches than one permutation holds appends permutations from `default_rng([seed, e, r])`,
  r = 1, 2, ...
  """

  def natural_num_batches(self, num_examples: int, global_batch_size: int,
                          labels: np.ndarray | None = None) -> int:
    _check_batching(global_batch_size, None)
    num_valid = len(_valid_indices(num_examples, labels))
    if num_valid < global_batch_size:
      raise _not_enough(num_valid, global_batch_size, "training examples")
    return num_valid // global_batch_size

  def epoch_order(self, epoch: int, num_examples: int, global_batch_size: int,
                  num_batches: int | None = None, labels: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    _check_batching(global_batch_size, num_batches)
    valid = _valid_indices(num_examples, labels)
    if num_batches is None:
      num_batches = self.natural_num_batches(num_examples, global_batch_size, labels)
    total = num_batches * global_batch_size
    if total and not len(valid):
      raise _not_enough(0, global_batch_size, "training examples")
    parts, have, r = [], 0, 0
    while have < total:
      rng = np.random.default_rng([seed, epoch] if r == 0 else [seed, epoch, r])
      # valid[perm(m)] equals perm(n) itself when nothing is left out.
      parts.append(valid[rng.permutation(len(valid))])
      have += len(valid)
      r += 1
    return np.concatenate(parts)[:total] if parts else np.zeros(0, np.int64)


class Sequential(Sampler):
  """Examples 0..n-1 in order every epoch, wrapping around when more batches are asked."""

  def natural_num_batches(self, num_examples: int, global_batch_size: int,
                          labels: np.ndarray | None = None) -> int:
    return Uniform().natural_num_batches(num_examples, global_batch_size, labels)

  def epoch_order(self, epoch: int, num_examples: int, global_batch_size: int,
                  num_batches: int | None = None, labels: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    del epoch, seed  # the order does not depend on them
    _check_batching(global_batch_size, num_batches)
    valid = _valid_indices(num_examples, labels)
    if num_batches is None:
      num_batches = self.natural_num_batches(num_examples, global_batch_size, labels)
    total = num_batches * global_batch_size
    if total and not len(valid):
      raise _not_enough(0, global_batch_size, "training examples")
    return np.resize(valid, total).astype(np.int64)


class PK(Sampler):
  """P identities x K instances per batch: open-reid's `RandomIdentitySampler`.

  Used by MEB-Net (Zhai et al., arXiv:2007.01546) and other re-identification methods with a
  batch-hard triplet loss (Hermans et al., arXiv:1703.07737), which needs K > 1 positives of each
  identity in every batch. Reference: open-reid `reid/utils/data/sampler.py`
  (github.com/Cysu/open-reid). Each round shuffles the identities and draws K examples of each,
  without replacement when the identity has at least K examples and with replacement otherwise;
  consecutive runs of P identities form a batch, so a batch holds exactly P distinct identities,
  each as K consecutive entries. A round yields `num_identities // P` batches (the leftover
  identities wait for the next round); more rounds are drawn until `num_batches` are filled.

  Args:
    num_instances: K, examples per identity in a batch.
  """

  def __init__(self, num_instances: int = 4):
    if (isinstance(num_instances, bool) or not isinstance(num_instances, (int, np.integer))
        or num_instances < 1):
      raise ConfigError(f"PK sampler num_instances must be a positive integer, got "
                        f"{num_instances!r}.")
    self.num_instances = int(num_instances)

  def _identities(self, global_batch_size: int, num_examples: int,
                  labels: np.ndarray | None) -> tuple[int, list[np.ndarray]]:
    """P and the example indices of every identity (in ascending label order)."""
    k = self.num_instances
    _check_batching(global_batch_size, None)
    if global_batch_size % k:
      raise ConfigError(f"PK sampling needs the global batch size ({global_batch_size}) to be "
                        f"divisible by num_instances K={k}; change one of them.")
    if labels is None:
      raise ConfigError("The PK sampler needs labels (identity or pseudo-label per example); "
                        "pass labels=... or use the 'uniform' sampler.")
    labels = _check_labels(labels, num_examples)
    valid = np.flatnonzero(labels >= 0)
    # A stable sort groups each identity's examples in ascending index order.
    order = valid[np.argsort(labels[valid], kind="stable")]
    ids, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order.astype(np.int64), starts[1:]) if len(ids) else []
    p = global_batch_size // k
    if len(ids) < p:
      raise ConfigError(f"PK sampling needs P={p} identities per batch (batch "
                        f"{global_batch_size} / K={k}) but the labels hold only {len(ids)} "
                        "identities; lower the batch size or num_instances.")
    return p, groups

  def natural_num_batches(self, num_examples: int, global_batch_size: int,
                          labels: np.ndarray | None = None) -> int:
    p, groups = self._identities(global_batch_size, num_examples, labels)
    return len(groups) // p

  def epoch_order(self, epoch: int, num_examples: int, global_batch_size: int,
                  num_batches: int | None = None, labels: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    _check_batching(global_batch_size, num_batches)
    p, groups = self._identities(global_batch_size, num_examples, labels)
    k = self.num_instances
    per_round = len(groups) // p
    if num_batches is None:
      num_batches = per_round
    parts, have, r = [], 0, 0
    while have < num_batches:
      rng = np.random.default_rng([seed, epoch, r])
      chosen = rng.permutation(len(groups))[:per_round * p]
      for i in chosen:
        group = groups[i]
        parts.append(rng.choice(group, size=k, replace=len(group) < k))
      have += per_round
      r += 1
    order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return order[:num_batches * global_batch_size].astype(np.int64)


_SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "uniform": Uniform, "sequential": Sequential, "pk": PK}


def register(name: str) -> Callable[[Callable[..., Sampler]], Callable[..., Sampler]]:
  """Registers a sampler factory `(**kwargs) -> Sampler` under `name`."""
  def wrap(factory: Callable[..., Sampler]) -> Callable[..., Sampler]:
    _SAMPLERS[name] = factory
    return factory
  return wrap


def names() -> list[str]:
  """All sampler names known to the registry."""
  return sorted(_SAMPLERS)


def get(name: str, **kwargs: Any) -> Sampler:
  """The sampler registered as `name`, built with `kwargs`.

  Args:
    name: "uniform", "sequential", "pk" or a registered name.
    **kwargs: constructor arguments, e.g. `num_instances=4` for "pk".

  Returns:
    A `Sampler`.

  Raises:
    ConfigError: unknown name (listing the known ones) or arguments the sampler does not take.
  """
  if name not in _SAMPLERS:
    raise ConfigError(f"Unknown sampler {name!r}; known: {names()}. Set config.data.sampler to "
                      "one of them.")
  try:
    return _SAMPLERS[name](**kwargs)
  except TypeError as e:
    raise ConfigError(f"Sampler {name!r} does not accept arguments {sorted(kwargs)}: {e}.") from e
