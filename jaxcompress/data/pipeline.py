"""grain input pipelines: deterministic, per-process sharded, resumable by step.

Design: the train stream is a `grain.MapDataset` indexed by step, so the
data position is a pure function of the step — resuming at step s reads exactly the batches an
uninterrupted run reads, with no iterator state to checkpoint. Each epoch is a fresh permutation
(seed + epoch) truncated to whole global batches; each example's augmentation is seeded by its
global position. Global batch b is the concatenation of the local batches of processes
0..P-1, so `jax.make_array_from_process_local_data` rebuilds the single-process batch exactly.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

import grain
import numpy as np

from jaxcompress.data import augment as augment_lib
from jaxcompress.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How examples become batches.

  Attributes:
    mean, std: per-channel normalisation of [0, 1] images.
    crop_padding: random-crop padding (0 = off).
    flip: random horizontal flips.
  """
  mean: tuple[float, ...] = (0.5,)
  std: tuple[float, ...] = (0.5,)
  crop_padding: int = 0
  flip: bool = False

  @classmethod
  def from_config(cls, data_config: Any) -> "ImageOptions":
    """The options of a `config.data` block (mean, std, crop_padding, flip)."""
    return cls(mean=tuple(data_config.mean), std=tuple(data_config.std),
               crop_padding=data_config.get("crop_padding", 0),
               flip=data_config.get("flip", False))


# Batch entries holding uint8 images or clips, normalised by `ImageOptions` (besides "image":
# the bilevel search's validation image, and the second and third views of contrastive clips).
IMAGE_KEYS = ("image", "val_image", "positive", "negative")


def _stack(examples: list[dict[str, Any]], options: ImageOptions) -> dict[str, np.ndarray]:
  """Stacks examples key by key: `IMAGE_KEYS` are normalised to float32; integer and boolean
  scalars per example (labels, identities, cameras, domains, "index") become int32; masks and
  any other array (e.g. super-resolution "lr"/"hr" pairs) float32."""
  batch = {}
  for key in examples[0]:
    values = np.stack([np.asarray(e[key]) for e in examples])
    if key in IMAGE_KEYS:
      values = augment_lib.normalize(values, options.mean, options.std)
    elif key in ("label", "val_label", "index") or (key != "mask" and values.ndim == 1 and (
        np.issubdtype(values.dtype, np.integer) or values.dtype == bool)):
      values = values.astype(np.int32)
    else:
      values = values.astype(np.float32)
    batch[key] = values
  return batch


ExampleFn = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]
OrderFn = Callable[[int, int], np.ndarray]
AugmentFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _cached(order_fn: OrderFn) -> OrderFn:
  """`order_fn` remembering its latest epoch (one order per epoch, per worker)."""
  cache: dict[int, np.ndarray] = {}

  def order(epoch: int, num_examples: int) -> np.ndarray:
    if epoch not in cache:
      cache.clear()
      cache[epoch] = order_fn(epoch, num_examples)
    return cache[epoch]

  return order


def uniform_order(epoch: int, num_examples: int, *, seed: int, length: int) -> np.ndarray:
  """Epoch `epoch`'s example order: a permutation from (seed, epoch), continued with further
  permutations from (seed, epoch, r), r = 1, 2, ..., until `length` indices."""
  parts = [np.random.default_rng([seed, epoch]).permutation(num_examples)]
  while sum(len(p) for p in parts) < length:
    parts.append(np.random.default_rng([seed, epoch, len(parts)]).permutation(num_examples))
  return np.concatenate(parts)[:length]


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Whole global batches per epoch (the remainder of each permutation is dropped)."""
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ConfigError(f"Global batch size {global_batch_size} exceeds the {num_examples} training "
                     "examples; lower config.data.batch_size.")
  return steps


def train_dataset(source: Any, *, global_batch_size: int, num_steps: int, seed: int,
                  options: ImageOptions, process_index: int = 0,
                  process_count: int = 1, val_source: Any = None,
                  example_fn: ExampleFn | None = None,
                  epoch_steps: int | None = None,
                  order_fn: OrderFn | None = None,
                  augment_fn: AugmentFn | None = None) -> grain.MapDataset:
  """The training stream as a MapDataset of this process's local batches, one per step.

  With `val_source` (bilevel search: DARTS trains weights on one half of the training split and
  architecture parameters on the other), every batch also carries "val_image"/"val_label" drawn
  from `val_source` with its own per-epoch permutation.

  Args:
    source: random-access source of {"image", "label"} examples.
    global_batch_size: examples per step over all processes.
    num_steps: length of the stream in steps.
    seed: data seed (permutations and augmentation).
    options: normalisation and augmentation.
    process_index, process_count: this process's shard of every global batch.
    val_source: optional second source paired with every example.
    example_fn: optional per-example transform `(example, rng) -> example` applied before the
      image augmentation (e.g. paired LR/HR patch cropping for super-resolution).
    epoch_steps: the epoch length in steps (`config.steps_per_epoch`; default: whole
      batches of one pass over `source`).
    order_fn: `(epoch, num_examples) -> example indices` of at least one epoch's length (a
      sampler: PK identities, pseudo labels); default a fresh permutation per epoch, continued
      with further permutations when an epoch is longer than one pass. Called for every
      example: it caches its epoch's order itself.
    augment_fn: `(image, rng) -> image` replacing the crop/flip of `options` (a composition of
      named augmentations, `augment.compose`; clips (T, H, W, C) get one draw for all frames).

  Returns:
    `ds` with `ds[step]` the local batch (dict of NumPy arrays) of global step `step`.
  """
  if global_batch_size % process_count:
    raise ConfigError(f"Global batch {global_batch_size} is not divisible by the {process_count} "
                     "processes.")
  n = len(source)
  epoch_steps = epoch_steps or steps_per_epoch(n, global_batch_size)
  per_epoch = epoch_steps * global_batch_size
  local = global_batch_size // process_count
  order_fn = order_fn or _cached(functools.partial(uniform_order, seed=seed, length=per_epoch))
  if augment_fn is None:
    augment_fn = functools.partial(augment_lib.augment, crop_padding=options.crop_padding,
                                   flip=options.flip)

  def example(position: int) -> dict[str, Any]:
    epoch, offset = divmod(position, per_epoch)
    index = int(order_fn(epoch, n)[offset])
    item = {**source[index], "index": index}
    rng = np.random.default_rng([seed, 1_000_003, position])
    if example_fn is not None:
      item = example_fn(item, rng)
    if "image" in item:
      item["image"] = augment_fn(np.asarray(item["image"]), rng)
    if val_source is not None:
      m = len(val_source)
      val_epoch, val_offset = divmod(position, m)
      val_perm = np.random.default_rng([seed, 7, val_epoch]).permutation(m)
      val = val_source[int(val_perm[val_offset])]
      item["val_image"] = augment_lib.augment(np.asarray(val["image"]), rng,
                                              crop_padding=options.crop_padding, flip=options.flip)
      item["val_label"] = val["label"]
    return item

  ds = grain.MapDataset.range(num_steps * global_batch_size).map(example)
  ds = ds.batch(local, drop_remainder=True, batch_fn=lambda xs: _stack(xs, options))
  return ds[process_index::process_count]


def with_streams(train_ds: grain.MapDataset, streams: dict[str, grain.MapDataset]
                 ) -> grain.MapDataset:
  """Every step's batch of `train_ds` plus, for each named stream, that stream's batch of the
  same step under "<stream>/<key>" keys (source/target domains, several datasets).

  Each stream is its own step-indexed dataset (own source, sampler, augmentation and batch
  size), so the combined stream stays a pure function of the step.
  """
  if not streams:
    return train_ds
  for name, ds in streams.items():
    if len(ds) < len(train_ds):
      raise ConfigError(f"Stream {name!r} has {len(ds)} batches for {len(train_ds)} steps.")

  def merged(step: int) -> dict[str, Any]:
    batch = dict(train_ds[step])
    for name, ds in streams.items():
      batch.update({f"{name}/{k}": v for k, v in ds[step].items()})
    return batch

  return grain.MapDataset.range(len(train_ds)).map(merged)


def eval_dataset(source: Any, *, global_batch_size: int, options: ImageOptions,
                 process_index: int = 0, process_count: int = 1,
                 example_fn: ExampleFn | None = None) -> grain.MapDataset:
  """Every eval example exactly once, the last global batch padded with `mask` = 0 examples.

  `example_fn` (deterministic: it gets a fixed-seed generator) maps raw examples first.
  """
  n = len(source)
  num_batches = -(-n // global_batch_size)
  local = global_batch_size // process_count

  def load(i: int) -> dict[str, Any]:
    item = dict(source[i])
    return example_fn(item, np.random.default_rng(i)) if example_fn is not None else item

  pad = {k: np.zeros_like(np.asarray(v)) for k, v in load(0).items()}

  def example(i: int) -> dict[str, Any]:
    if i < n:
      return {**load(i), "mask": 1.0}
    return {**pad, "mask": 0.0}

  ds = grain.MapDataset.range(num_batches * global_batch_size).map(example)
  ds = ds.batch(local, drop_remainder=True, batch_fn=lambda xs: _stack(xs, options))
  return ds[process_index::process_count]


def iterate(ds: grain.MapDataset, start: int = 0, *, num_threads: int = 2,
            num_workers: int = 0, prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """Iterates `ds[start:]` with thread prefetch (and worker processes when `num_workers` > 0)."""
  it = ds[start:].to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                    prefetch_buffer_size=prefetch))
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)
