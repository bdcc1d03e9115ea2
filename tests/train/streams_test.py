"""Named streams, PK batches, concatenated sources with identity offsets, integer keys."""
from __future__ import annotations

import os
import sys

import ml_collections
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import loop_test  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

from jaxcompress import errors  # noqa: E402
from jaxcompress.data import sources  # noqa: E402
from jaxcompress.train import loop  # noqa: E402


def stream_config(**overrides):
  c = loop_test.toy_config(**overrides)
  c.data.sampler = ml_collections.ConfigDict({"name": "pk", "num_instances": 4,
                                              "labels": "label"})
  c.data.streams = ml_collections.ConfigDict({"target": {
      "name": "concat", "split": "train", "batch_size": 8,
      "source_kwargs": {"parts": [
          {"name": "synthetic", "source_kwargs": {"num_examples": 24, "image_shape": (4, 4, 1),
                                                  "num_classes": 3}},
          {"name": "synthetic", "source_kwargs": {"num_examples": 40, "image_shape": (4, 4, 1),
                                                  "num_classes": 5, "seed": 3}}]},
      "augment": [["flip", {}], ["random_erasing", {"probability": 0.5}]]}})
  return c


def test_batches_carry_named_streams_with_integer_keys_and_pk_identities():
  setup = loop.build(stream_config())
  for step in range(setup.steps_per_epoch):
    batch = setup.train_ds[step]
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    assert batch["target/domain"].dtype == np.int32 and batch["target/image"].shape[0] == 8
    labels = batch["label"]  # PK: 16 = 4 identities x 4 instances, consecutive
    assert len(set(labels.tolist())) == 4
    assert all(len(set(labels[i:i + 4].tolist())) == 1 for i in range(0, 16, 4))
    src = setup.train_source
    np.testing.assert_array_equal(labels, np.asarray(src.labels)[batch["index"]])
    # Identities of the second part are offset past the first part's 3 classes.
    domain, label = batch["target/domain"], batch["target/label"]
    assert np.all(label[domain == 0] < 3) and np.all(label[domain == 1] >= 3)


def test_concat_source_offsets_identities_and_names_domains():
  a = sources.synthetic("train", num_examples=5, num_classes=3)
  b = sources.synthetic("train", num_examples=4, num_classes=2, seed=1)
  both = sources.ConcatSource([a, b])
  assert len(both) == 9 and both.num_classes == 5 and both.id_offsets == (0, 3)
  assert both[6]["label"] == int(b[1]["label"]) + 3 and both[6]["domain"] == 1
  np.testing.assert_array_equal(both.labels, np.concatenate([a.labels, b.labels + 3]))


@loop_test.needs_eight_devices
def test_a_run_with_streams_trains_on_eight_devices(tmp_path):
  out = loop.run(stream_config(), str(tmp_path))
  # PK epochs: 4 identities / 4 per batch = 1 step per epoch, 2 epochs.
  assert int(out["state"].step) == 2 and all(np.isfinite(v) for v in out["eval"].values())


def test_on_device_refuses_streams(tmp_path):
  c = stream_config()
  c.data.on_device = True
  with pytest.raises(errors.ConfigError, match="on_device"):
    loop.run(c, str(tmp_path))
