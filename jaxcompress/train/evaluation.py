"""Running the evaluators of `config.evals` over their named splits (see `jaxcompress.evals`).

Each evaluator's per-batch function is jitted once with the run's mesh. "sum" outputs accumulate
on device (the jitted function already reduces over the global batch, so devices and processes
are summed by XLA); "gather" outputs are fetched per batch as whole global arrays (every process
receives all rows, in dataset order), and padding rows are dropped with the batch mask. So a
gathered metric is the same on 1 or 8 devices, over several processes, and as on one batch.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxcompress import distributed, evals
from jaxcompress.data import pipeline, sources, transforms
from jaxcompress.train import compile_options


def to_host(x: jax.Array) -> np.ndarray:
  """The whole global array on every process's host (rows in global order)."""
  if jax.process_count() == 1 or x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@jax.jit
def _count(mask: jax.Array) -> jax.Array:
  return jnp.sum(mask)


class Evaluation:
  """The run's evaluators, their splits' datasets and the best value of each metric.

  Args:
    config: the experiment config (`config.evals`, `config.data`).
    method: the run's Method.
    mesh: the device mesh.
    every: the default evaluation period in steps (`config.eval_every` or one epoch).
    options: the pipeline's ImageOptions (normalisation).
    compiler_options: XLA options of the run's steps.
  """

  def __init__(self, config: ml_collections.ConfigDict, method: Any, mesh: jax.sharding.Mesh,
               every: int, options: pipeline.ImageOptions,
               compiler_options: dict[str, Any] | None = None):
    self.config = config
    self.mesh = mesh
    self.options = options
    self.evaluators = evals.build(config, method, every)
    self.batch_size = config.data.get("eval_batch_size", config.data.batch_size)
    distributed.check_batch_size(self.batch_size, mesh)
    self._datasets: dict[tuple[str, str], Any] = {}
    batch_sharding = distributed.batch_sharding(mesh)
    replicated = distributed.replicated(mesh)
    traced = compile_options.step_tracing(config)
    self._fns = {e.name: jax.jit(traced(e.batch_outputs), in_shardings=(replicated, batch_sharding),
                                 compiler_options=compiler_options)
                 for e in self.evaluators if not getattr(e, "runs_on_host", False)}
    self.best: dict[str, float] = {}
    for e in self.evaluators:  # the splits must exist before anything is compiled
      for split in e.splits:
        self.source(e, split)

  def source(self, evaluator: evals.Evaluator, split: str) -> Any:
    """The random-access source of `split` (the evaluator's `data` block or `config.data`)."""
    data = self.config.data
    block = evaluator.cfg.get("data", None) or {}
    name = block.get("name", data.name)
    kwargs = dict(block.get("source_kwargs", data.get("source_kwargs", {})) or {})
    transforms.load_providers()
    return sources.get_configured(name, split, block.get("data_dir", data.get("data_dir", None)),
                                  kwargs)

  def dataset(self, evaluator: evals.Evaluator, split: str) -> Any:
    """The padded eval dataset of `split` (built once per split and data block)."""
    block = dict(evaluator.cfg.get("data", None) or {})
    key = (split, json.dumps(dict(block), sort_keys=True, default=str))
    if key not in self._datasets:
      data = self.config.data
      # An evaluator's data block may name its own transform (e.g. single clips for a video
      # pretraining run whose training transform makes clip triplets).
      example_fn = transforms.get(
          block.get("transform", data.get("transform", "")), train=False,
          **dict(block.get("transform_kwargs", data.get("transform_kwargs", {})) or {}))
      self._datasets[key] = pipeline.eval_dataset(
          self.source(evaluator, split), global_batch_size=self.batch_size, options=self.options,
          process_index=jax.process_index(), process_count=jax.process_count(),
          example_fn=example_fn)
    return self._datasets[key]

  def due(self, step: int, total_steps: int) -> list[evals.Evaluator]:
    """The evaluators to run after `step`: those whose period divides it, all at the end."""
    return [e for e in self.evaluators if step % e.every == 0 or step == total_steps]

  def outputs(self, evaluator: evals.Evaluator, state: Any, split: str) -> evals.Outputs:
    """The combined outputs of `evaluator` on `split`, plus "count" (valid examples)."""
    fn = evaluator.fn if isinstance(evaluator, _MapBatches) else self._fns[evaluator.name]
    sums: dict[str, jax.Array] = {}
    rows: dict[str, list[np.ndarray]] = {}
    count = None
    for local in pipeline.iterate(self.dataset(evaluator, split)):
      batch = distributed.global_batch(local, self.mesh)
      out = fn(state, batch)
      gathered = {k: v for k, v in out.items() if evaluator.combine.get(k) == evals.GATHER}
      if gathered:
        mask = to_host(batch["mask"])
        for k, v in evals.gather_rows({k: to_host(v) for k, v in gathered.items()}, mask).items():
          rows.setdefault(k, []).append(v)
      summed = {k: v for k, v in out.items() if k not in gathered}
      summed["count"] = _count(batch["mask"])
      sums = summed if count is None else jax.tree.map(jnp.add, sums, summed)
      count = True
    result = {k: np.asarray(v) for k, v in jax.device_get(sums).items()}
    result.update({k: np.concatenate(v) for k, v in rows.items()})
    return result

  def map_batches(self, fn: Any, state: Any, split: str) -> dict[str, np.ndarray]:
    """`fn(state, batch)`'s per-example outputs over `split`, gathered (see HookContext)."""
    key = ("map", id(fn))
    if key not in self._fns:
      self._fns[key] = jax.jit(fn)
    probe = _MapBatches(split, self._fns[key])
    out = self.outputs(probe, state, split)
    out.pop("count", None)
    return out

  def evaluate(self, state: Any, evaluators: list[evals.Evaluator] | None = None
               ) -> dict[str, Any]:
    """Runs `evaluators` (default all); returns their metrics under their logged names."""
    metrics: dict[str, Any] = {}
    for e in self.evaluators if evaluators is None else evaluators:
      if getattr(e, "runs_on_host", False):
        result = e.evaluate_host(state, {s: self.source(e, s) for s in e.splits})
      else:
        result = e.finalize({s: self.outputs(e, state, s) for s in e.splits})
      for k, v in result.items():
        metrics[evals.metric_name(e, k)] = v
    return metrics

  def update_best(self, metrics: dict[str, Any]) -> dict[str, float]:
    """Folds scalar `metrics` into the best values; returns the `best_<metric>` entries."""
    for name, value in metrics.items():
      if not np.isscalar(value) or not np.isfinite(value):
        continue
      better = min if evals.lower_is_better(name) else max
      self.best[name] = better(self.best.get(name, value), float(value))
    return {f"best_{k}": v for k, v in self.best.items() if k in metrics}

  def restore_best(self, metrics_path: str) -> None:
    """Seeds the best values from an earlier run's eval rows (resumption)."""
    if not os.path.exists(metrics_path):
      return
    with open(metrics_path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if row.get("split") == "eval":
          self.update_best({k: v for k, v in row.items()
                            if k not in ("step", "split") and not k.startswith("best_")
                            and isinstance(v, (int, float))})


class _MapBatches:
  """A gather-everything pseudo-evaluator for `map_batches`."""

  def __init__(self, split: str, fn: Any):
    self.splits = (split,)
    self.fn = fn
    self.cfg = ml_collections.ConfigDict()
    self.combine = _GatherAll()


class _GatherAll(dict):
  def get(self, key: str, default: Any = None) -> str:
    del key, default
    return evals.GATHER
