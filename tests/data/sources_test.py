"""Tests for jaxcompress.data.sources error messages that need no prepared data."""
from __future__ import annotations

import builtins
import sys
from unittest import mock

import numpy as np
import pytest

from jaxcompress import errors
from jaxcompress.data import sources


def test_missing_tensorflow_datasets_names_the_install_and_the_build_command():
  real_import = builtins.__import__

  def without_tfds(name, *args, **kwargs):
    if name == "tensorflow_datasets":
      raise ModuleNotFoundError(name)
    return real_import(name, *args, **kwargs)

  with mock.patch.dict(sys.modules, {"tensorflow_datasets": None}), \
      mock.patch.object(builtins, "__import__", without_tfds):
    with pytest.raises(errors.DatasetNotFoundError,
                       match=r"(?s)not installed.*pip install -e \..*tfds build cifar10 "
                             r"--file_format=array_record --data_dir=/nowhere"):
      sources.open_tfds("cifar10", "train", "/nowhere")


def test_data_dir_reaches_registered_builders_that_take_it():
  seen = {}

  def reads_prepared_data(split, data_dir=None, size=1):
    seen.update(split=split, data_dir=data_dir, size=size)
    return sources.ArraySource(np.zeros((size, 2, 2, 1), np.uint8), np.zeros(size, int), 1)

  def offline_only(split, size=1):
    return sources.ArraySource(np.zeros((size, 2, 2, 1), np.uint8), np.zeros(size, int), 1)

  sources.register("_reads_prepared_data", reads_prepared_data)
  sources.register("_offline_only", offline_only)
  sources.get("_reads_prepared_data", "train", data_dir="prepared", size=2)
  assert seen == {"split": "train", "data_dir": "prepared", "size": 2}
  # source_kwargs naming their own data_dir win over config.data.data_dir.
  sources.get_configured("_reads_prepared_data", "test", "prepared", {"data_dir": "own"})
  assert seen["data_dir"] == "own"
  assert len(sources.get("_offline_only", "train", data_dir="prepared", size=3)) == 3
