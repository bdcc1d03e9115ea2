"""Small datasets held on the devices, for training by a jitted `lax.scan` (`data.on_device`).

The data side of the fastest path on any accelerator; the scan itself is the engine's
`jaxcompress.train.runners.ScanRunner`.

The host pipeline (`pipeline.train_dataset`) hands every step a batch from Python: one host-to-
device copy and one dispatch per step, which dominates when a step takes a millisecond or two
(digits, MNIST or CIFAR-sized models on a GPU). Here the whole training split is copied once, as
stored (uint8 images), replicated on every device of the mesh, and a run of steps is one jitted
call: the per-epoch permutation, the gather of each batch, the augmentation (random crop after
zero padding, random flip) and the normalisation all happen on device inside the scan.

The stream is deterministic and a pure function of the step, like the host pipeline's, so a
resumed run reads exactly the batches of an uninterrupted one:
  - epoch e visits `jax.random.permutation(fold_in(perm_key, e), N)` in whole global batches (the
    remainder is dropped, as in the host pipeline);
  - the crop offsets and flips of global step s come from `fold_in(aug_key, s)`.
It is a *different* random stream from the host pipeline's NumPy one (same distribution), so
results match the host pipeline in distribution, not bit for bit.

Bilevel search (`data.search_split`) is supported: each batch also carries "val_image" /
"val_label" drawn from the held-out part with its own per-epoch permutation. Per-example
transforms (`data.transform`, e.g. paired LR/HR crops for super-resolution) are NumPy code and
are not supported here: those configs keep the host pipeline.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.data.pipeline import ImageOptions
from jaxcompress.errors import ConfigError

Batch = dict[str, jax.Array]

# Above this the copy per device is refused (the error names the fix). CIFAR-10's training split
# is 150 MiB as uint8; ImageNet is far above it.
DEFAULT_MAX_BYTES = 4 << 30


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeviceDataset:
  """A training split held on device as stored.

  Attributes:
    images: (N, H, W, C) images as the source stores them (uint8 in [0, 255]).
    labels: (N,) int32 labels.
    val_images, val_labels: the held-out half of a bilevel search, or None.
  """
  images: jax.Array
  labels: jax.Array
  val_images: jax.Array | None = None
  val_labels: jax.Array | None = None


def source_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
  """All examples of a random-access source as two stacked arrays (images, labels).

  Sources that hold NumPy arrays (`sources.ArraySource`) are read without a Python loop; other
  sources (TFDS, `SubsetSource`) are read example by example.

  Args:
    source: a sequence of {"image": HWC array, "label": int} examples.

  Returns:
    (images (N, H, W, C) in the source's dtype, labels (N,) int32).

  Raises:
    ConfigError: the examples are not {"image", "label"} pairs of one shape.
  """
  if isinstance(getattr(source, "images", None), np.ndarray):
    return np.asarray(source.images), np.asarray(source.labels, np.int32)
  examples = [source[i] for i in range(len(source))]
  if not examples or not {"image", "label"} <= set(examples[0]):
    raise ConfigError("config.data.on_device needs a classification source of {'image', 'label'} "
                      f"examples; got keys {sorted(examples[0]) if examples else []}. Set "
                      "config.data.on_device=False for this dataset.")
  shapes = {np.shape(e["image"]) for e in examples}
  if len(shapes) != 1:
    raise ConfigError(f"config.data.on_device needs images of one shape; this source has "
                      f"{sorted(shapes)[:4]}. Set config.data.on_device=False.")
  images = np.stack([np.asarray(e["image"]) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  return images, labels


def put(source: Any, sharding: jax.sharding.Sharding, *, val_source: Any = None,
        max_bytes: int = DEFAULT_MAX_BYTES) -> DeviceDataset:
  """Copies a training split (and the bilevel held-out part) onto the devices once.

  Args:
    source: the training source.
    sharding: where the arrays live (replicated over the mesh: every device gathers its own
      part of each batch locally).
    val_source: the held-out source of a bilevel search, or None.
    max_bytes: refuse splits larger than this per device.

  Returns:
    The DeviceDataset. With several processes each process passes the same full split.

  Raises:
    ConfigError: the split is too large or not a classification split.
  """
  arrays = [source_arrays(source)]
  if val_source is not None:
    arrays.append(source_arrays(val_source))
  size = sum(a.nbytes for pair in arrays for a in pair)
  if size > max_bytes:
    raise ConfigError(f"config.data.on_device would copy {size / 2**20:.0f} MiB onto every device, "
                      f"over the {max_bytes / 2**20:.0f} MiB limit. Set config.data.on_device=False "
                      "(the streamed grain pipeline) for a dataset this size.")

  def place(x: np.ndarray) -> jax.Array:
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)

  placed = [place(a) for pair in arrays for a in pair]
  return DeviceDataset(*placed) if len(placed) == 4 else DeviceDataset(*placed, None, None)


def augment_batch(images: jax.Array, key: jax.Array, *, crop_padding: int = 0,
                  flip: bool = False) -> jax.Array:
  """The device twin of `augment.augment` for a batch: zero-pad and random crop, then flip.

  Each image gets its own crop offset (top, left), uniform in [0, 2 * crop_padding], and is
  mirrored left-right with probability 1/2, in that order (the CIFAR recipe, as the host
  pipeline applies it).

  Args:
    images: (B, H, W, C) images.
    key: PRNG key for this batch.
    crop_padding: pixels of zero padding per side; 0 disables the crop.
    flip: whether to flip.

  Returns:
    (B, H, W, C) augmented images of the same dtype.
  """
  b, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  if crop_padding > 0:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * p + 1)
    images = jax.vmap(lambda x, o: jax.lax.dynamic_slice(x, (o[0], o[1], 0), (h, w, x.shape[-1])))(
        padded, offsets)
  if flip:
    mirrored = jax.random.bernoulli(flip_key, 0.5, (b,))
    images = jnp.where(mirrored[:, None, None, None], images[:, :, ::-1], images)
  return images


def normalize(images: jax.Array, options: ImageOptions) -> jax.Array:
  """[0, 255] images to float32 `(x / 255 - mean) / std`, as `augment.normalize` on the host."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(options.mean, jnp.float32)) / jnp.asarray(options.std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Stream:
  """The on-device training stream: which examples and augmentations each global step reads.

  Attributes:
    global_batch_size: examples per step over all devices.
    steps_per_epoch: whole global batches per epoch.
    seed: the data seed (`config.seed`).
    options: normalisation and augmentation.
  """
  global_batch_size: int
  steps_per_epoch: int
  seed: int
  options: ImageOptions

  def _keys(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    perm_key, aug_key, val_key = jax.random.split(jax.random.key(self.seed), 3)
    return perm_key, aug_key, val_key

  def permutations(self, data: DeviceDataset, epoch: jax.Array
                   ) -> tuple[jax.Array, jax.Array | None]:
    """Epoch `epoch`'s order of the training examples (and of the held-out ones)."""
    perm_key, _, val_key = self._keys()
    perm = jax.random.permutation(jax.random.fold_in(perm_key, epoch), data.labels.shape[0])
    val_perm = None
    if data.val_labels is not None:
      val_perm = jax.random.permutation(jax.random.fold_in(val_key, epoch),
                                        data.val_labels.shape[0])
    return perm, val_perm

  def batch(self, data: DeviceDataset, perm: jax.Array, val_perm: jax.Array | None,
            epoch: jax.Array, step_in_epoch: jax.Array) -> Batch:
    """The global batch of step `epoch * steps_per_epoch + step_in_epoch`.

    Args:
      data: the on-device split.
      perm, val_perm: this epoch's `permutations`.
      epoch, step_in_epoch: where in the stream (traced integers).

    Returns:
      {"image": float32 (B, H, W, C), "label": int32 (B,)} plus "val_image" / "val_label" for a
      bilevel search.
    """
    b = self.global_batch_size
    _, aug_key, _ = self._keys()
    step_key = jax.random.fold_in(aug_key, epoch * self.steps_per_epoch + step_in_epoch)
    train_key, val_aug_key = jax.random.split(step_key)
    index = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * b, b)
    out = {"image": self._images(data.images[index], train_key),
           "label": data.labels[index]}
    if val_perm is not None:
      m = val_perm.shape[0]
      # The held-out part may be shorter than the training part: wrap around its permutation.
      val_index = val_perm[(step_in_epoch * b + jnp.arange(b)) % m]
      out["val_image"] = self._images(data.val_images[val_index], val_aug_key)
      out["val_label"] = data.val_labels[val_index]
    return out

  def _images(self, images: jax.Array, key: jax.Array) -> jax.Array:
    images = augment_batch(images, key, crop_padding=self.options.crop_padding,
                           flip=self.options.flip)
    return normalize(images, self.options)
