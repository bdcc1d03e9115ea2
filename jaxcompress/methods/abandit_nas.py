"""ABanditNAS: anti-bandit architecture search with adversarial training, and robust evaluation.

Chen et al., "Anti-Bandit Neural Architecture Search for Model Defense", arXiv 2008.00698
(ECCV 2020). Two methods share the adversarial machinery:

* `AdversarialTraining` ("adversarial", `jaxcompress.methods.adversarial`): PGD training of the
  found network and the robust table (`robust_eval`), re-exported here.
* `ABanditNAS` ("abandit_nas"): the search. Every edge of every distinct cell is a bandit over
  the candidate ops (`nas.bandit.BanditState` of shape (num_cells, 10, K) in `state.extra`).
  One engine epoch trains one sampled architecture:

  1. `init` / `on_epoch_end` sample one op per edge: untried arms first (without replacement,
     so every arm is pulled once before a bound is used), then p(k) proportional to
     exp(-LCB_k) = exp(-(m_k - sqrt(2 ln N / n_k))) over the alive arms.
  2. `train_step` adversarially trains the sampled network (single-path supernet: each
     (layer, edge, op) owns its weights; the op indices are traced, so nothing recompiles) and
     accumulates its accuracy on the held-out half of the training split ("val_image"), measured
     after each update with batch statistics (clean by default, `nas.reward = "adversarial"`
     for PGD accuracy; `nas.reward_steps` restricts it to the last steps of the epoch).
  3. `on_epoch_end` (jitted, traced epoch): the epoch's validation accuracy a updates every
     sampled arm, m <- (1 - lambda) m + lambda a (the first reward initialises m), n <- n + 1,
     N <- N + 1; after K * T samples since the last abandonment (K = arms alive per edge) the
     arm with the lowest UCB m + sqrt(2 ln N / n) is removed on every edge; then the next
     architecture is sampled.

  A search therefore takes T * sum_{k=2..K} k epochs (`num_search_samples`; 132 for K = 9,
  T = 3), after which one op per edge is alive. Removed arms are masks, so the jitted rules
  never recompile. `final_report` derives the genotype (per node the incoming edge whose
  surviving op has the largest m) and writes it with the bandit statistics (final_report.json)
  and alone (genotype.json, read by the evaluation configs).

`eval_step` of the search scores the best-so-far ops (highest m among alive arms) inside the
shared supernet, with batch statistics by default (`nas.eval_bn`): the running averages are mixed
over all sampled architectures. The supernet's initial parameters are drawn from its shapes
alone, by one small jitted program when the cells run their edges as loops
(`ABanditNAS.make_variables`).

The bandit decisions live in `on_epoch_end` because one sample is one epoch of training in the
paper: the hook is the natural boundary and keeps `train_step` a plain adversarial step.

Example:
  >>> from jaxcompress.train import loop
  >>> from configs.abandit_nas import digits_search
  >>> out = loop.run(digits_search.get_config(), "/tmp/abandit_search")
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress.errors import ConfigError
from jaxcompress.methods.adversarial import (  # noqa: F401  (re-exported for users of this module)
  DEFAULT_ADV,
  ROBUST_TABLE,
  AdversarialTraining,
  _block,
  initializer_key,
  parse_attack,
  robust_eval,
  run_attack,
)
from jaxcompress.methods.base import Batch
from jaxcompress.nas import abandit_network as an
from jaxcompress.nas import bandit as bandit_lib
from jaxcompress.nas import edge_layout, robust_ops
from jaxcompress.train import one_shot
from jaxcompress.train.state import TrainState

DEFAULT_NAS = dict(
    C=16,
    layers=6,
    num_cells=6,
    primitives=tuple(robust_ops.ABANDIT_PRIMITIVES),
    affine=False,
    T=3,
    lam=0.7,
    reward="clean",         # "clean" or "adversarial" validation accuracy
    reward_steps=-1,        # last steps of each epoch that measure the reward (-1: all)
    eval_bn="batch",        # search-net evaluation with batch statistics ("batch") or the
                            # running averages ("running", mixed over sampled architectures)
)


def num_search_samples(num_ops: int, t: int = 3) -> int:
  """Sampled architectures of a full search, T * sum_{k=2..K} k (132 for K = 9, T = 3)."""
  return t * sum(range(2, num_ops + 1))


class ABanditNAS(AdversarialTraining):
  """Anti-bandit search (see the module docstring). Config block `nas` (`DEFAULT_NAS`) and the
  adversarial block `adv`; `data.search_split = 0.5` supplies the validation half."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    self.nas = _block(config, "nas", DEFAULT_NAS)
    if self.nas["eval_bn"] not in ("batch", "running"):
      raise ConfigError(f"config.nas.eval_bn must be 'batch' or 'running', got "
                        f"{self.nas['eval_bn']!r}.")
    if self.nas["reward"] not in ("clean", "adversarial"):
      raise ConfigError(f"config.nas.reward must be 'clean' or 'adversarial', got "
                        f"{self.nas['reward']!r}.")
    self._init_programs: dict[tuple[Any, ...], Any] = {}  # make_variables' jitted draws
    unknown = [p for p in self.nas["primitives"] if p not in robust_ops.ABANDIT_OPS]
    if unknown or "none" in self.nas["primitives"]:
      raise ConfigError(f"config.nas.primitives {unknown or ['none']} are not ABanditNAS ops; "
                        f"use names from {robust_ops.ABANDIT_PRIMITIVES}.")
    super().__init__(config, **kwargs)

  @property
  def primitives(self) -> tuple[str, ...]:
    return tuple(self.nas["primitives"])

  def build_model(self, config: ml_collections.ConfigDict) -> Any:
    kwargs = dict(config.model.get("kwargs", {}))
    mean = tuple(kwargs.get("mean", an.CIFAR_MEAN))
    std = tuple(kwargs.get("std", an.CIFAR_STD))
    return an.SearchNetwork(C=self.nas["C"], num_classes=config.model.num_classes,
                            layers=self.nas["layers"], num_cells=self.nas["num_cells"],
                            primitives=self.primitives, affine=self.nas["affine"],
                            mean=mean, std=std)

  def forward(self, params, model_state, x, *, train, update_stats=True, arch=None, rng=None,
              drop_prob=None):
    del rng, drop_prob
    variables = {"params": params, **model_state}
    if train or self.nas["eval_bn"] == "batch":
      mutable = [k for k in model_state if k != "params"]
      logits, updates = self.model.apply(variables, x, arch, train=True, mutable=mutable)
      return logits, None, ({**model_state, **updates} if update_stats and train else model_state)
    return self.model.apply(variables, x, arch, train=False), None, model_state

  def make_variables(self, rng, example_batch):
    """Initial supernet variables, computed while the engine traces `init` (constants for it).

    `_initial_variables` draws them: flax's initialisers from the network's shapes alone
    (`lazy_init`: no forward pass) with `initializer_key`'s `unsafe_rbg` key, then
    the he_fout redraw over the per-edge layout (two draws: `an.reinit_he_fout`), so loops and
    unrolled cells get the same convolution and linear weights. Networks whose cells run their
    edges as loops (the default) and unrolled supernets of at most `one_shot.JIT_INIT_MAX_OPS`
    (layer, edge, op) triples run it as one jitted program; larger unrolled supernets op by op
    (`jax.ensure_compile_time_eval`: one jitted initialisation of 540 unrolled switched ops took
    about 8 minutes of XLA compilation on an H100 host). The draw is seeded by `config.seed`
    (the engine's init key is `jax.random.key(config.seed)` as well), so `rng` is not used.
    """
    del rng
    if "val_image" not in example_batch:
      raise ConfigError("ABanditNAS scores sampled networks on held-out data: set "
                        "config.data.search_split = 0.5 so batches carry 'val_image'.")
    shape = (1,) + tuple(example_batch["image"].shape[1:])
    num_ops = self.nas["layers"] * an.num_edges() * len(self.primitives)
    with jax.ensure_compile_time_eval():
      key = jax.random.key(int(self.config.seed))
      if self.model.scan_edges or num_ops <= one_shot.JIT_INIT_MAX_OPS:
        program = (shape, self.model.scan_edges)   # one jitted draw per input shape and layout
        if program not in self._init_programs:
          self._init_programs[program] = one_shot.jit_once(
              functools.partial(self._initial_variables, shape=shape))
        return self._init_programs[program](key)
      return self._initial_variables(key, shape=shape)

  def _initial_variables(self, key: jax.Array, shape: tuple[int, ...]) -> tuple[Any, dict]:
    """(params, other collections) of the supernet for inputs of `shape` (see make_variables)."""
    init_key = initializer_key(key)
    ops = jnp.zeros((self.nas["num_cells"], an.num_edges()), jnp.int32)
    variables = dict(flax.core.unfreeze(self.model.lazy_init(
        init_key, jax.ShapeDtypeStruct(shape, jnp.float32), ops, train=False)))
    params = variables.pop("params")
    if self.config.model.get("init", "he_fout") == "he_fout":
      loops = self.model.scan_edges
      layout = dict(steps=an.STEPS, reduction_layers=(), cell_loops=self.model.cell_loops())
      params = an.reinit_he_fout(edge_layout.unstack(params, **layout) if loops else params,
                                 jax.random.fold_in(key, 12))
      params = edge_layout.stack(params, **layout) if loops else params
    return params, variables

  def legacy_layout(self, state: TrainState) -> tuple[Any, Any] | None:
    """Checkpoints of search networks whose edges were unrolled (one entry `edge_<i>_<j>` per
    edge) load and convert (`abandit_edge_loops`: the loops' variables are stacked)."""
    if not self.model.scan_edges:
      return None
    layout = dict(steps=an.STEPS, reduction_layers=(), cell_loops=self.model.cell_loops())
    return (edge_layout.unstack(state, **layout),
            lambda old: edge_layout.stack(old, **layout))

  def init_extra(self, rng: jax.Array) -> Any:
    bandit = bandit_lib.BanditState.create((self.nas["num_cells"], an.num_edges()),
                                           len(self.primitives))
    return {
        "bandit": bandit,
        "ops": bandit_lib.sample(bandit, jax.random.fold_in(rng, 21)),
        "phase_samples": jnp.zeros((), jnp.int32),   # samples since the last abandonment
        "removals": jnp.zeros((), jnp.int32),        # abandonment rounds so far
        "reward_sum": jnp.zeros((), jnp.float32),    # correct validation predictions
        "reward_count": jnp.zeros((), jnp.float32),  # validation examples seen
        "last_reward": jnp.zeros((), jnp.float32),
    }

  def train_arch(self, state):
    return state.extra["ops"]

  def eval_arch(self, state):
    """The current best op per edge (highest m among alive arms)."""
    return bandit_lib.best_ops(state.extra["bandit"]).astype(jnp.int32)

  def _reward(self, state: TrainState, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(correct, count) of the sampled network on the validation batch, batch statistics."""
    arch = state.extra["ops"]
    x, y = batch["val_image"], batch["val_label"]
    if self.nas["reward"] == "adversarial":
      x = self.attack_inputs(state.params, state, x, y, state.step_rng(5), "pgd", arch, "train")
    logits = self.forward(state.params, state.model_state, x, train=True, update_stats=False,
                          arch=arch)[0]
    correct = jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.float32)
    return correct, jnp.asarray(y.shape[0], jnp.float32)

  def train_step(self, state, batch):
    position = state.step % self.steps_per_epoch
    new_state, metrics = self.adversarial_step(state, batch)
    window = self.nas["reward_steps"]
    if window <= 0 or window >= self.steps_per_epoch:
      correct, count = self._reward(new_state, batch)
    else:
      correct, count = jax.lax.cond(position >= self.steps_per_epoch - window,
                                    lambda: self._reward(new_state, batch),
                                    lambda: (jnp.zeros((), jnp.float32),) * 2)
    extra = dict(new_state.extra)
    extra["reward_sum"] = extra["reward_sum"] + correct
    extra["reward_count"] = extra["reward_count"] + count
    metrics["val_accuracy"] = correct / jnp.maximum(count, 1.0)
    metrics["alive_ops"] = jnp.mean(extra["bandit"].num_alive().astype(jnp.float32))
    return new_state.replace(extra=extra), metrics

  def on_epoch_end(self, state: TrainState, epoch: Any) -> TrainState:
    """Credit the epoch's validation accuracy, abandon after K * T samples, sample anew."""
    del epoch
    extra = dict(state.extra)
    reward = extra["reward_sum"] / jnp.maximum(extra["reward_count"], 1.0)
    bandit = bandit_lib.update(extra["bandit"], extra["ops"], reward, self.nas["lam"])
    phase = extra["phase_samples"] + 1
    k_alive = jnp.max(bandit.num_alive())
    remove = (phase >= k_alive * self.nas["T"]) & (k_alive > 1)
    pruned = bandit_lib.remove_worst(bandit, "ucb")
    bandit = jax.tree.map(lambda a, b: jnp.where(remove, a, b), pruned, bandit)
    extra.update(
        bandit=bandit,
        ops=bandit_lib.sample(bandit, state.step_rng(17)),
        phase_samples=jnp.where(remove, 0, phase).astype(jnp.int32),
        removals=extra["removals"] + remove.astype(jnp.int32),
        reward_sum=jnp.zeros((), jnp.float32),
        reward_count=jnp.zeros((), jnp.float32),
        last_reward=reward.astype(jnp.float32))
    return state.replace(extra=extra)

  def genotype(self, state: TrainState) -> an.AbanditGenotype:
    b = jax.device_get(state.extra["bandit"])
    return an.derive_genotype(b.mean, b.alive, self.primitives)

  def final_report(self, state: TrainState) -> dict[str, Any]:
    """The derived genotype and the bandit statistics (written to final_report.json).

    The genotype alone also goes to `<workdir>/genotype.json` (process 0), the file the
    evaluation configs read: `--config.model.kwargs.genotype=<workdir>/genotype.json`.
    """
    b = jax.device_get(state.extra["bandit"])
    alive = np.asarray(b.alive)
    genotype = an.genotype_to_dict(self.genotype(state))
    workdir = getattr(self, "workdir", None)
    if workdir is not None and jax.process_index() == 0:
      with open(os.path.join(workdir, "genotype.json"), "w", encoding="utf-8") as f:
        json.dump(genotype, f, indent=2)
    return {
        "genotype": genotype,
        "primitives": list(self.primitives),
        "search_complete": bool((alive.sum(-1) == 1).all()),
        "samples": int(b.total),
        "removals": int(jax.device_get(state.extra["removals"])),
        "num_alive": alive.sum(-1).tolist(),
        "mean": np.asarray(b.mean).round(6).tolist(),
        "count": np.asarray(b.count).tolist(),
        "alive": alive.tolist(),
    }


__all__ = ["ABanditNAS", "AdversarialTraining", "DEFAULT_ADV", "DEFAULT_NAS", "ROBUST_TABLE",
           "num_search_samples", "parse_attack", "robust_eval", "run_attack"]
