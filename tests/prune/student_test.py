"""The cut-stage hand-over: student.json + student.msgpack written whole and read back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jaxcompress.errors import ConfigError
from jaxcompress.prune import student


def test_roundtrip_and_no_partial_files(tmp_path):
  variables = {"params": {"conv": {"kernel": np.arange(6.0).reshape(2, 3)}},
               "model_state": {"batch_stats": {"bn": {"mean": np.ones(3)}}}}
  path = student.write_student(str(tmp_path), {"widths": {"a": 3}, "macs": 7}, variables)
  info = student.load_student(path, "cogd.student", "cogd_materialize")
  assert info == {"widths": {"a": 3}, "macs": 7, "variables_file": "student.msgpack"}
  assert json.loads((tmp_path / "student.json").read_text()) == info
  saved = student.load_student_variables(path, info)
  np.testing.assert_array_equal(saved["params"]["conv"]["kernel"], np.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(saved["model_state"]["batch_stats"]["bn"]["mean"], np.ones(3))
  assert not list(tmp_path.glob("*.tmp"))


def test_missing_file_names_the_key_and_the_stage(tmp_path):
  with pytest.raises(ConfigError, match=r"config.dmad.student .* run the dmad_materialize stage"):
    student.load_student(str(tmp_path / "none.json"), "dmad.student", "dmad_materialize")
