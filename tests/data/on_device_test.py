"""Tests for jaxcompress.data.on_device: the on-device stream and its augmentation."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import errors
from jaxcompress.data import augment, on_device, pipeline, sources
from jaxcompress.train import runners


def _images(n=16, h=5, w=6, c=2, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype(np.uint8)


def _candidates(image, padding):
  """Every output augment.augment can produce for `image` (NumPy reference of the recipe)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  for top, left in itertools.product(range(2 * padding + 1), repeat=2):
    crop = padded[top:top + h, left:left + w]
    yield (top, left, False), crop
    yield (top, left, True), crop[:, ::-1]


@pytest.mark.parametrize("jit", [False, True])
def test_augment_batch_is_a_crop_of_the_padded_image_then_a_flip(jit):
  images = _images(n=64)
  fn = jax.jit(on_device.augment_batch, static_argnames=("crop_padding", "flip")) if jit \
      else on_device.augment_batch
  out = np.asarray(fn(jnp.asarray(images), jax.random.key(3), crop_padding=2, flip=True))
  assert out.dtype == np.uint8 and out.shape == images.shape
  drawn = []
  for image, got in zip(images, out):
    matches = [params for params, want in _candidates(image, 2) if np.array_equal(got, want)]
    assert matches, "output is not a padded crop (+ flip) of its input"
    drawn.append(matches[0])
  # Offsets and flips really vary across the batch (64 draws from 25 offsets x 2 flips).
  assert len({d[:2] for d in drawn}) > 10
  assert 10 < sum(d[2] for d in drawn) < 54


def test_augment_batch_without_augmentation_is_identity():
  images = _images()
  out = on_device.augment_batch(jnp.asarray(images), jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out), images)


def test_normalize_matches_the_host_pipeline():
  images = _images()
  opts = pipeline.ImageOptions(mean=(0.3, 0.6), std=(0.2, 0.25))
  np.testing.assert_allclose(np.asarray(on_device.normalize(jnp.asarray(images), opts)),
                             augment.normalize(images, opts.mean, opts.std), rtol=1e-6,
                             atol=1e-6)


def _stream(n=40, batch=8, seed=0, **options):
  src = sources.ArraySource(_images(n=n, h=3, w=3, c=1, seed=1),
                            np.arange(n, dtype=np.int32), n)
  spe = pipeline.steps_per_epoch(n, batch)
  opts = pipeline.ImageOptions(mean=(0.0,), std=(1.0,), **options)
  return src, on_device.Stream(batch, spe, seed, opts)


def test_each_epoch_is_a_permutation_in_whole_batches():
  src, stream = _stream(n=43, batch=8)  # 5 steps, 3 examples dropped per epoch
  data = on_device.put(src, jax.devices()[0])
  orders = []
  for epoch in range(3):
    perm, val_perm = stream.permutations(data, jnp.int32(epoch))
    assert val_perm is None
    labels = [np.asarray(stream.batch(data, perm, None, jnp.int32(epoch), jnp.int32(i))["label"])
              for i in range(stream.steps_per_epoch)]
    seen = np.concatenate(labels)
    assert len(seen) == 40 and len(set(seen.tolist())) == 40  # no repeats within an epoch
    orders.append(seen)
  assert not np.array_equal(orders[0], orders[1])  # a fresh order every epoch


def test_batches_pair_images_with_their_labels_and_are_deterministic():
  src, stream = _stream()
  data = on_device.put(src, jax.devices()[0])
  perm, _ = stream.permutations(data, jnp.int32(2))
  batch = stream.batch(data, perm, None, jnp.int32(2), jnp.int32(1))
  for image, label in zip(np.asarray(batch["image"]), np.asarray(batch["label"])):
    np.testing.assert_allclose(image, src.images[label] / 255.0, rtol=1e-6)
  # Same batch when jitted (to the last bit of the label draw; the GPU may fuse x / 255 into a
  # multiply, 1 ulp away).
  again = jax.jit(stream.batch)(data, perm, None, jnp.int32(2), jnp.int32(1))
  np.testing.assert_array_equal(np.asarray(batch["label"]), np.asarray(again["label"]))
  np.testing.assert_allclose(np.asarray(batch["image"]), np.asarray(again["image"]), rtol=1e-6)
  assert batch["image"].dtype == jnp.float32 and batch["label"].dtype == jnp.int32


def test_bilevel_batches_carry_held_out_examples():
  src, stream = _stream(n=48)
  train, val = sources.SubsetSource(src, 0.0, 0.5), sources.SubsetSource(src, 0.5, 1.0)
  stream = on_device.Stream(8, 3, 0, stream.options)
  data = on_device.put(train, jax.devices()[0], val_source=val)
  perm, val_perm = stream.permutations(data, jnp.int32(0))
  batch = stream.batch(data, perm, val_perm, jnp.int32(0), jnp.int32(2))
  assert set(np.asarray(batch["label"]).tolist()) <= set(range(24))
  assert set(np.asarray(batch["val_label"]).tolist()) <= set(range(24, 48))
  for image, label in zip(np.asarray(batch["val_image"]), np.asarray(batch["val_label"])):
    np.testing.assert_allclose(image, src.images[label] / 255.0, rtol=1e-6)


def test_source_arrays_reads_generic_sources():
  src, _ = _stream(n=10)
  images, labels = on_device.source_arrays(sources.SubsetSource(src, 0.2, 0.7))
  np.testing.assert_array_equal(images, src.images[2:7])
  np.testing.assert_array_equal(labels, src.labels[2:7])


def test_put_refuses_large_or_unsuitable_sources():
  src, _ = _stream(n=10)
  with pytest.raises(errors.ConfigError, match="on_device=False"):
    on_device.put(src, jax.devices()[0], max_bytes=16)

  class Pairs:
    def __len__(self):
      return 2

    def __getitem__(self, i):
      return {"lr": np.zeros((2, 2, 3)), "hr": np.zeros((4, 4, 3))}

  with pytest.raises(errors.ConfigError, match="'image', 'label'"):
    on_device.put(Pairs(), jax.devices()[0])


@pytest.mark.parametrize("step,want", [(0, 4), (3, 4), (4, 6), (6, 8), (9, 12), (10, 12)])
def test_chunk_end_stops_at_every_event(step, want):
  # 4 steps per epoch, eval every 6, checkpoint every 8, 12 steps in all, at most 5 per scan.
  assert runners.chunk_end(step, total_steps=12, boundaries=(4, 6, 8), max_steps=5) == \
      min(want, step + 5)
