"""Data tests: offline sources, TFDS through mock_data, determinism, process sharding, padding."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcompress import errors
from jaxcompress.data import augment, pipeline, sources


def test_digits_is_real_and_split_is_fixed():
  train, test = sources.digits("train"), sources.digits("test")
  assert (len(train), len(test)) == (1437, 360)
  assert train[0]["image"].shape == (8, 8, 1) and train[0]["image"].dtype == np.uint8
  assert sorted(set(int(test[i]["label"]) for i in range(len(test)))) == list(range(10))
  np.testing.assert_array_equal(sources.digits("train")[5]["image"], train[5]["image"])


def test_tfds_source_reads_through_data_source_with_mock_data():
  with tfds.testing.mock_data(num_examples=12):
    source = sources.get("cifar10", "train")
    assert len(source) == 12
    example = source[3]
    assert example["image"].shape == (32, 32, 3) and 0 <= int(example["label"]) < 10
    ds = pipeline.train_dataset(source, global_batch_size=4, num_steps=3, seed=0,
                                options=pipeline.ImageOptions(mean=(0.5,) * 3, std=(0.25,) * 3,
                                                              crop_padding=4, flip=True))
    batch = ds[2]
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32


def test_missing_tfds_dataset_error_has_prepare_command(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError, match="tfds build cifar100 --file_format"):
    sources.get("cifar100", "train", data_dir=str(tmp_path))


def test_train_stream_is_a_function_of_the_step():
  src = sources.synthetic("train", num_examples=50, image_shape=(4, 4, 1))
  opts = pipeline.ImageOptions(crop_padding=1)
  a = pipeline.train_dataset(src, global_batch_size=8, num_steps=20, seed=3, options=opts)
  b = pipeline.train_dataset(src, global_batch_size=8, num_steps=20, seed=3, options=opts)
  resumed = list(pipeline.iterate(b, start=13))
  for step in range(13, 20):
    np.testing.assert_array_equal(a[step]["image"], resumed[step - 13]["image"])
  # 50 // 8 = 6 steps per epoch: epoch 1 is a different permutation of the same examples.
  assert not np.array_equal(a[0]["label"], a[6]["label"])
  c = pipeline.train_dataset(src, global_batch_size=8, num_steps=20, seed=4, options=opts)
  assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_every_epoch_visits_distinct_examples():
  src = sources.ArraySource(np.arange(24, dtype=np.uint8).reshape(24, 1, 1, 1),
                            np.arange(24, dtype=np.int32), 24)
  ds = pipeline.train_dataset(src, global_batch_size=6, num_steps=8, seed=0,
                              options=pipeline.ImageOptions())
  epoch0 = np.concatenate([ds[s]["label"] for s in range(4)])
  assert sorted(epoch0.tolist()) == list(range(24))


def test_process_shards_concatenate_to_the_single_process_batch():
  src = sources.synthetic("train", num_examples=40, image_shape=(4, 4, 1))
  opts = pipeline.ImageOptions(crop_padding=1)
  whole = pipeline.train_dataset(src, global_batch_size=8, num_steps=5, seed=0, options=opts)
  parts = [pipeline.train_dataset(src, global_batch_size=8, num_steps=5, seed=0, options=opts,
                                  process_index=p, process_count=2) for p in range(2)]
  for step in range(5):
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step]["image"], parts[1][step]["image"]]), whole[step]["image"])


def test_eval_covers_every_example_once_with_padding_mask():
  src = sources.synthetic("test", num_examples=10, image_shape=(2, 2, 1))
  ds = pipeline.eval_dataset(src, global_batch_size=4, options=pipeline.ImageOptions())
  batches = list(pipeline.iterate(ds))
  assert len(batches) == 3
  masks = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert masks.sum() == 10 and masks[-2:].sum() == 0
  np.testing.assert_array_equal(labels[:10], [src[i]["label"] for i in range(10)])


def test_random_crop_reference():
  image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
  rng = np.random.default_rng(0)
  out = augment.random_crop(image, rng, 1)
  top, left = np.random.default_rng(0).integers(0, 3, size=2)
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
  np.testing.assert_array_equal(out, padded[top:top + 4, left:left + 4])


def test_batch_larger_than_dataset_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="exceeds"):
    pipeline.steps_per_epoch(10, 16)


def test_imagenet_crop_transform_shapes_and_determinism():
  from jaxcompress.data import transforms  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
  train = transforms.get("imagenet_crop", train=True)
  evaluate = transforms.get("imagenet_crop", train=False)
  a = train({"image": image, "label": 1}, np.random.default_rng(5))["image"]
  b = train({"image": image, "label": 1}, np.random.default_rng(5))["image"]
  assert a.shape == (224, 224, 3) and np.array_equal(a, b)
  c = evaluate({"image": image, "label": 1}, np.random.default_rng(0))["image"]
  assert c.shape == (224, 224, 3)
  # Eval is the centre of the 256-short-side resize: a constant image stays constant.
  flat = np.full((300, 400, 3), 7, np.uint8)
  assert np.all(evaluate({"image": flat}, np.random.default_rng(0))["image"] == 7)
  with pytest.raises(errors.ConfigError, match="Unknown data transform"):
    transforms.get("nope", train=True)
