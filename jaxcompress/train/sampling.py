"""The training stream's epoch order: a sampler (`config.data.sampler`) and its labels' origin.

    config.data.sampler = dict(name="pk", num_instances=4, labels="label")      # dataset labels
    config.data.sampler = dict(name="pk", num_instances=4, labels="state:pseudo_labels")

With `labels="state:<key>"` the labels are `state.extra[<key>]` (one int per training example,
-1 to leave one out): a method sets them, e.g. from a clustering in a host epoch hook, and the
engine reads them at every epoch start (after `on_epoch_start`). When they changed, the stream
is rebuilt from the current step, so the next batches follow the new labels. Being part of the
state, they are saved with every checkpoint, and a resumed run reads exactly the batches of an
uninterrupted one.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcompress.data import samplers
from jaxcompress.errors import ConfigError

STATE_PREFIX = "state:"


def source_labels(source: Any, key: str) -> np.ndarray:
  """Every example's `key` value as an int64 array (the source's `labels`, `cameras` or
  `domains` array when it has one, so image folders are not decoded to read their labels)."""
  attribute = {"label": "labels", "camera": "cameras", "domain": "domains"}.get(key)
  if attribute and hasattr(source, attribute):
    return np.asarray(getattr(source, attribute)).astype(np.int64)
  return np.asarray([int(source[i][key]) for i in range(len(source))], np.int64)


class EpochOrder:
  """`order(epoch, num_examples)` for `pipeline.train_dataset`, from `config.data.sampler`.

  Args:
    cfg: the sampler block (`name`, sampler kwargs, `labels`), or None for uniform shuffling.
    source: the training source.
    seed: the data seed.
    global_batch_size: examples per step.
    epoch_steps: `config.steps_per_epoch` (> 0) or None for the sampler's natural epoch.
  """

  def __init__(self, cfg: ml_collections.ConfigDict | None, source: Any, seed: int,
               global_batch_size: int, epoch_steps: int | None):
    cfg = dict(cfg or {})
    self.labels_from = cfg.pop("labels", None)
    self.sampler = samplers.get(cfg.pop("name", "uniform"), **cfg)
    self.seed = seed
    self.global_batch_size = global_batch_size
    self.state_key = None
    self.labels = None
    if self.labels_from and self.labels_from.startswith(STATE_PREFIX):
      self.state_key = self.labels_from[len(STATE_PREFIX):]
      if not epoch_steps:
        raise ConfigError(f"config.data.sampler.labels = {self.labels_from!r} (labels from the "
                          "method's state) needs a fixed epoch length: set config.steps_per_epoch.")
    elif self.labels_from:
      self.labels = source_labels(source, self.labels_from)
    self.num_batches = epoch_steps or self.sampler.natural_num_batches(
        len(source), global_batch_size, self.labels)
    self._cache: dict[int, np.ndarray] = {}

  def __call__(self, epoch: int, num_examples: int) -> np.ndarray:
    if epoch not in self._cache:
      sampler = self.sampler
      if self.state_key is not None and self.labels is None:
        # The engine draws a shape-only example batch before the state, and so any label from
        # it, exists; that batch (never trained on: `refresh` restarts the stream) is uniform.
        sampler = samplers.Uniform()
      self._cache = {epoch: sampler.epoch_order(
          epoch, num_examples, self.global_batch_size, num_batches=self.num_batches,
          labels=self.labels, seed=self.seed)}
    return self._cache[epoch]

  def refresh(self, state: Any) -> bool:
    """Takes the labels from the state; True when they changed (the stream must restart)."""
    if self.state_key is None:
      return False
    extra = state.extra if hasattr(state, "extra") else {}
    if self.state_key not in extra:
      raise ConfigError(f"config.data.sampler.labels = {self.labels_from!r}, but the method's "
                        f"state.extra has no {self.state_key!r}; set it in init or an epoch hook.")
    labels = np.asarray(jax.device_get(extra[self.state_key])).astype(np.int64)
    if self.labels is not None and np.array_equal(labels, self.labels):
      return False
    self.labels = labels
    self._cache = {}
    return True
