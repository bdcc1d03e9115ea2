"""Stages: one command runs an ordered list of engine runs with declared hand-overs.

Teacher -> students, search -> retrain, pretrain -> fine-tune are stages, not launchers:

    config.stage_order = ("teacher", "student")
    config.stages.teacher = <an ordinary engine config>
    config.stages.student = <an ordinary engine config>
    config.stages.student.init_from = dict(stage="teacher", include=r".*", exclude=r"",
                                           rename=(), collections=("params", "batch_stats"))
    config.stages.student.paths_from = (("model.kwargs.genotype", "search", "genotype.json"),)
    config.stages.table = dict(report="pams_table", inputs=("fp", "8bit", "4bit"))

Each training stage is an ordinary resumable run in `workdir/<stage>/` with the usual workdir
contract. Hand-overs:

* `init_from`: when the stage starts fresh (no checkpoint of its own), its initial state takes
  the earlier stage's final parameters (and, listed in `collections`, model-state collections
  such as batch statistics) wherever a path, after the `rename` regex substitutions, matches in
  name and shape and passes `include` / `exclude`; everything else keeps its initial value. At
  least one array must be handed over, and a matching path with another shape is an error.
* `paths_from`: (config key, stage, file) triples: the config key is set to that stage's
  workdir joined with the file (a genotype, a teacher run) before the stage is built.
* `report`: a stage without training that calls a report registered with the methods
  (`jaxcompress.methods.get_report`) on the workdirs of its `inputs` (e.g. the PAMS table).

A finished stage leaves `workdir/<stage>/stage_done.json`; rerunning the command skips finished
stages and resumes the unfinished one from its checkpoints.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from jaxcompress import distributed
from jaxcompress import methods as methods_lib
from jaxcompress.errors import ConfigError
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train.state import TrainState

DONE_FILE = "stage_done.json"


def last_eval(workdir: str) -> dict[str, Any]:
  """The last "eval" row of a run's metrics.jsonl ({} when it has none), for report stages."""
  path = os.path.join(workdir, "metrics.jsonl")
  row: dict[str, Any] = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        entry = json.loads(line)
        if entry.get("split") == "eval":
          row = entry
  return row


def stage_order(config: ml_collections.ConfigDict) -> list[str]:
  """The stage names in run order (`config.stage_order`), checked against `config.stages`."""
  names = list(config.stages.keys())
  order = list(config.get("stage_order", ()) or ())
  if not order:
    raise ConfigError("A staged config needs config.stage_order, a tuple of the names in "
                      f"config.stages in run order (stages: {names}).")
  unknown = [n for n in order if n not in names]
  if unknown or len(set(order)) != len(order):
    raise ConfigError(f"config.stage_order {order} must list distinct names of config.stages "
                      f"({names}); unknown: {unknown}.")
  return order


def _set_path(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node or node[p] is None:
      with node.unlocked():
        node[p] = ml_collections.ConfigDict()
    node = node[p]
  with node.unlocked():
    node[leaf] = value


def stage_config(config: ml_collections.ConfigDict, name: str,
                 workdirs: dict[str, str]) -> ml_collections.ConfigDict:
  """Stage `name`'s own config with its `paths_from` filled in."""
  cfg = ml_collections.ConfigDict(config.stages[name].to_dict())
  for key, source, filename in cfg.get("paths_from", ()) or ():
    if source not in workdirs:
      raise ConfigError(f"Stage {name!r} takes {key} from stage {source!r}, which does not run "
                        f"before it (config.stage_order).")
    _set_path(cfg, key, os.path.join(workdirs[source], filename) if filename
              else workdirs[source])
  return cfg


def merge_tree(like: Any, loaded: Any, *, include: str = ".*", exclude: str = "",
               rename: tuple[tuple[str, str], ...] = (), what: str = "parameters"
               ) -> tuple[Any, list[str]]:
  """`like` with leaves replaced by `loaded`'s at matching paths.

  Args:
    like: the target tree (e.g. a fresh model's params).
    loaded: the source tree (e.g. an earlier run's params).
    include, exclude: regexes on the target's "/"-joined paths (exclude "" excludes nothing).
    rename: (pattern, replacement) regex substitutions turning a source path into a target path,
      applied in order.
    what: how to name the trees in errors.

  Returns:
    (merged tree, the target paths that were taken from `loaded`).

  Raises:
    ConfigError: a matching path whose shapes differ.
  """
  source = {}
  for path, value in traverse_util.flatten_dict(flax.core.unfreeze(loaded), sep="/").items():
    for pattern, replacement in rename:
      path = re.sub(pattern, replacement, path)
    source[path] = value
  flat = traverse_util.flatten_dict(flax.core.unfreeze(like), sep="/")
  taken = []
  for path, ref in flat.items():
    if path not in source or not re.search(include, path) or (exclude and re.search(exclude,
                                                                                    path)):
      continue
    value = np.asarray(source[path])
    if value.shape != tuple(ref.shape):
      raise ConfigError(f"Hand-over of {what}: {path} is {value.shape} in the earlier stage and "
                        f"{tuple(ref.shape)} here. Exclude it (init_from.exclude) or rename it.")
    flat[path] = jnp.asarray(value, ref.dtype)
    taken.append(path)
  return traverse_util.unflatten_dict(flat, sep="/"), taken


def params_initializer(spec: ml_collections.ConfigDict, workdirs: dict[str, str],
                       stage: str) -> Callable[[TrainState], TrainState]:
  """The `initialize` function of an `init_from` hand-over (see the module docstring)."""
  source = spec.get("stage", None)
  if source not in workdirs:
    raise ConfigError(f"Stage {stage!r} initialises from stage {source!r}, which does not run "
                      "before it (config.stage_order).")
  collections = tuple(spec.get("collections", ("params",)))
  kwargs = dict(include=spec.get("include", ".*"), exclude=spec.get("exclude", ""),
                rename=tuple(tuple(r) for r in spec.get("rename", ()) or ()))

  def initialize(state: TrainState) -> TrainState:
    loaded = checkpoint_lib.load_run_state(workdirs[source])
    params, taken = merge_tree(state.params, loaded["params"], what="params", **kwargs)
    model_state = dict(state.model_state)
    for name in collections:
      if name == "params" or name not in model_state:
        continue
      if name not in loaded.get("model_state", {}):
        raise ConfigError(f"Stage {source!r} has no {name!r} collection to hand over to stage "
                          f"{stage!r}; remove it from init_from.collections.")
      model_state[name], more = merge_tree(model_state[name], loaded["model_state"][name],
                                           what=name, **kwargs)
      taken += more
    if not taken:
      raise ConfigError(f"Stage {stage!r}: no parameter of stage {source!r} matches this model "
                        "(init_from.include / exclude / rename).")
    sharding = jax.tree.map(lambda x: x.sharding, (state.params, state.model_state))
    params, model_state = jax.device_put((params, model_state), sharding)
    return state.replace(params=params, model_state=model_state)

  return initialize


def _read_done(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, DONE_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_done(workdir: str, result: dict[str, Any]) -> None:
  if not distributed.is_main_process():
    return
  tmp = os.path.join(workdir, DONE_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, default=float)
  os.replace(tmp, os.path.join(workdir, DONE_FILE))  # never a half-written marker


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
  """The numeric scalars of a stage's metrics or report (names and tables are left out)."""
  return {k: float(v) for k, v in metrics.items()
          if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number)}


def run_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.stages` in `config.stage_order` (see the module docstring).

  Returns:
    The last stage's result ({"state", "eval", "steps"}; "state" is None when that stage had
    finished before), plus "stages": {name: its final eval metrics or report}.
  """
  from jaxcompress.train import loop  # pylint: disable=g-import-not-at-top
  order = stage_order(config)
  root = os.path.abspath(workdir)
  os.makedirs(root, exist_ok=True)
  if distributed.is_main_process():
    with open(os.path.join(root, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  workdirs: dict[str, str] = {}
  summaries: dict[str, Any] = {}
  result: dict[str, Any] = {"state": None, "eval": {}, "steps": 0}
  for name in order:
    stage_dir = os.path.join(root, name)
    os.makedirs(stage_dir, exist_ok=True)
    done = _read_done(stage_dir)
    cfg = stage_config(config, name, workdirs)
    workdirs[name] = stage_dir
    if done is not None:
      summaries[name] = done["eval"]
      result = {"state": None, "eval": done["eval"], "steps": done.get("steps", 0)}
      continue
    if cfg.get("report", None):
      inputs = {s: workdirs[s] for s in cfg.get("inputs", ()) or ()}
      report = methods_lib.get_report(cfg.report)(cfg, inputs, stage_dir, root)
      metrics = _scalars(report)
      result = {"state": None, "eval": metrics, "steps": 0}
    else:
      spec = cfg.get("init_from", None)
      initialize = params_initializer(spec, workdirs, name) if spec else None
      result = loop.run_single(cfg, stage_dir, initialize=initialize)
      metrics = _scalars(result["eval"])
    _write_done(stage_dir, {"eval": metrics, "steps": result["steps"]})
    summaries[name] = metrics
  if distributed.is_main_process():
    with open(os.path.join(root, "stages.json"), "w", encoding="utf-8") as f:
      json.dump({n: summaries[n] for n in order}, f, indent=2)
  return {**result, "stages": summaries}
