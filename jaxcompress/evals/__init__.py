"""Evaluators: per-batch sums (accuracy) and metrics that are not (retrieval mAP/CMC, FID).

An evaluator is three things:

* `batch_outputs(state, batch) -> {name: array}`: a pure per-batch function the engine jits and
  shards like a step;
* `combine`: for each output (outputs not named are sums), how it combines across batches,
  devices and processes — "sum" (a scalar or fixed-shape sum over the valid examples, e.g.
  correct predictions) or "gather"
  (one row per example, e.g. an embedding; padding rows are dropped by the engine, and rows
  arrive in dataset order whatever the number of devices or processes);
* `finalize(outputs) -> {metric: float | array}` on the host, with `outputs[split][name]` the
  combined arrays of every split the evaluator reads (plus "count", the number of valid
  examples of each split).

Configured by `config.evals`, one entry per evaluator (big_vision style):

    config.evals.eval = dict(type="method", split="test")               # the method's eval_step
    config.evals.query = dict(type="retrieval", splits=("query", "gallery"), every=500)

`split` (or `splits`) names splits of `config.data.name`; an entry may override the dataset with
`data=dict(name=..., source_kwargs=..., transform=..., transform_kwargs=...)`. `every` is in steps
(default: `config.eval_every`).
Metrics are logged as "<evaluator>/<metric>" except for the evaluator named "eval", whose
metrics keep their plain names; the best value of each is logged as "best_<metric>".

Register your own with `@evals.register("name")` on an `Evaluator` subclass.
"""
from __future__ import annotations

import abc
import importlib
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from jaxcompress.errors import ConfigError

Outputs = dict[str, np.ndarray]

SUM = "sum"
GATHER = "gather"

_BUILTIN = {
    "method": "jaxcompress.evals.classification:MethodMetrics",
    "classification": "jaxcompress.evals.classification:Accuracy",
    "sr": "jaxcompress.evals.sr:FullImageSR",
    "robust": "jaxcompress.evals.robust:RobustAccuracy",
    "retrieval": "jaxcompress.evals.retrieval:Retrieval",
    "fid": "jaxcompress.evals.fid:FrechetDistance",
    "video_classification": "jaxcompress.evals.video:VideoClassification",
    "video_retrieval": "jaxcompress.evals.video:VideoRetrieval",
}
_REGISTERED: dict[str, type["Evaluator"]] = {}


class Evaluator(abc.ABC):
  """Base class: per-batch outputs, how they combine, and a host finalize.

  Attributes:
    name: the evaluator's key in `config.evals`.
    method: the run's Method (evaluators call its `predict`/`eval_step`).
    cfg: the evaluator's config entry.
    splits: the split names it reads, in order.
    every: evaluation period in steps.
    combine: {output name: "sum" | "gather"}.
  """

  combine: Mapping[str, str] = {}

  def __init__(self, name: str, method: Any, cfg: ml_collections.ConfigDict, every: int):
    self.name = name
    self.method = method
    self.cfg = cfg
    splits = cfg.get("splits", None) or (cfg.get("split", None),)
    if any(s is None for s in splits):
      raise ConfigError(f"config.evals.{name} needs `split` (a split name of config.data.name, "
                        "e.g. 'test') or `splits` (a tuple of them).")
    self.splits = tuple(splits)
    self.every = int(cfg.get("every", every) or every)

  @abc.abstractmethod
  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-batch arrays: sums over the valid examples, or one row per example (pure, jit-able)."""

  @abc.abstractmethod
  def finalize(self, outputs: Mapping[str, Outputs]) -> dict[str, Any]:
    """Metrics from the combined outputs of every split (host NumPy)."""



def lower_is_better(metric: str) -> bool:
  """Whether a metric's best value is its minimum (names with loss, fid, error or distance, and
  the reconstruction errors l1, l2, mse, mae)."""
  name = metric.lower()
  return (any(word in name for word in ("loss", "fid", "error", "distance")) or
          name.split("/")[-1] in ("l1", "l2", "mse", "mae"))


def register(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
  """Class decorator registering an Evaluator subclass under `name` (its config `type`)."""
  def wrap(cls: type[Evaluator]) -> type[Evaluator]:
    _REGISTERED[name] = cls
    return cls
  return wrap


def names() -> list[str]:
  """All evaluator types known to the registry."""
  return sorted(set(_BUILTIN) | set(_REGISTERED))


def get(kind: str) -> type[Evaluator]:
  """The Evaluator class registered as `kind`.

  Raises:
    ConfigError: naming the known types when `kind` is unknown.
  """
  if kind in _REGISTERED:
    return _REGISTERED[kind]
  if kind not in _BUILTIN:
    raise ConfigError(f"Unknown evaluator type {kind!r}. Known: {', '.join(names())}. Set "
                      "config.evals.<name>.type to one of them.")
  module, attr = _BUILTIN[kind].split(":")
  return getattr(importlib.import_module(module), attr)


def default_evals(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.evals`, or the method's own eval_step on `config.data.eval_split` when absent."""
  evals = config.get("evals", None)
  if evals:
    return evals
  return ml_collections.ConfigDict({"eval": {"type": "method", "split": config.data.eval_split}})


def build(config: ml_collections.ConfigDict, method: Any, every: int) -> list[Evaluator]:
  """The run's evaluators, from `config.evals` (see the module docstring)."""
  evals = default_evals(config)
  built = []
  for name in evals.keys():
    cfg = evals[name]
    if not isinstance(cfg, (ml_collections.ConfigDict, dict)) or "type" not in cfg:
      raise ConfigError(f"config.evals.{name} must be a dict with a `type` (one of "
                        f"{', '.join(names())}), got {cfg!r}.")
    cfg = ml_collections.ConfigDict(dict(cfg)) if isinstance(cfg, dict) else cfg
    built.append(get(cfg.type)(name, method, cfg, every))
  return built


def metric_name(evaluator: Evaluator, metric: str) -> str:
  """The logged name of an evaluator's metric ("eval" keeps plain names)."""
  return metric if evaluator.name == "eval" else f"{evaluator.name}/{metric}"


def gather_rows(outputs: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
  """Keeps the rows of real examples (mask 1) of gathered outputs."""
  keep = np.asarray(mask) > 0
  return {k: np.asarray(v)[keep] for k, v in outputs.items()}
