"""The hand-over of a materialized network between a pipeline's cut and fine-tuning stages.

A cut stage (`dmad_materialize`, `cogd_materialize`) writes `student.json` (the widths the
smaller network is built with, its sizes, the name of the variables file) and `student.msgpack`
(its variables) in its directory; the fine-tuning stage finds them through `paths_from` and
builds the network with those widths. Both files are written beside and renamed into place, so
an interrupted stage never leaves half a file.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax
import jax
import numpy as np

from jaxcompress.errors import ConfigError

STUDENT_FILE = "student.json"
VARIABLES_FILE = "student.msgpack"


def _replace(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_student(stage_dir: str, info: Mapping[str, Any], variables: Any) -> str:
  """Writes `student.msgpack` (the variables) and `student.json` (`info` + the file name).

  Args:
    stage_dir: the cut stage's directory.
    info: JSON-serialisable description ("widths", sizes, ...).
    variables: a tree of arrays.

  Returns:
    The path of `student.json`.
  """
  os.makedirs(stage_dir, exist_ok=True)
  _replace(os.path.join(stage_dir, VARIABLES_FILE), flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, variables)))
  path = os.path.join(stage_dir, STUDENT_FILE)
  _replace(path, json.dumps({**info, "variables_file": VARIABLES_FILE}, indent=2).encode())
  return path


def load_student(path: str, config_key: str, stage: str) -> dict[str, Any]:
  """The description in `student.json`.

  Args:
    path: the file (a config value filled by `paths_from`).
    config_key: that config key, for the error message (e.g. "cogd.student").
    stage: the report that writes it, for the error message (e.g. "cogd_materialize").

  Raises:
    ConfigError: the file does not exist.
  """
  if not path or not os.path.exists(path):
    raise ConfigError(f"config.{config_key} = {path!r} does not exist: run the {stage} stage "
                      f"first (paths_from=(('{config_key}', '<stage>', '{STUDENT_FILE}'),)).")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_student_variables(path: str, student: Mapping[str, Any]) -> Any:
  """The variables written beside `path` (the `student.json` `student` was read from)."""
  with open(os.path.join(os.path.dirname(path), student["variables_file"]), "rb") as f:
    return flax.serialization.msgpack_restore(f.read())
