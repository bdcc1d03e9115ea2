"""Tests for jaxcompress.data.sources error messages that need no prepared data."""
from __future__ import annotations

import builtins
import sys
from unittest import mock

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
