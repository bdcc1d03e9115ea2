"""ABanditNAS: anti-bandit architecture search with adversarial training, and robust evaluation.

Chen et al., "Anti-Bandit Neural Architecture Search for Model Defense", arXiv 2008.00698
(ECCV 2020). Two methods share the adversarial machinery:

* `AdversarialTraining` ("adversarial"): Madry PGD training of any classifier (by default the
  ABanditNAS evaluation network of a genotype, `config.model.name = "abandit_network"`):
  PGD-7, epsilon 0.031, step 0.0078, uniform random start, all in [0, 1] pixel space with the
  normalisation inside the model (`config.data.mean = 0`, `std = 1`). `eval_step` returns sums of
  the clean and attacked accuracies named in `config.adv.eval_attacks` ("clean", "fgsm",
  "mi_fgsm", "pgd<k>"), attacks run with BN in eval mode. `robust_eval(...)` writes the table of
  clean / FGSM / MI-FGSM / PGD-7 / PGD-20 accuracy to the workdir.
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
over all sampled architectures. The supernet's initial parameters are computed eagerly
(`ABanditNAS.make_variables`), because a jitted initialisation of 540 switched ops took about 8
minutes of XLA compilation on an H100 host.

The bandit decisions live in `on_epoch_end` because one sample is one epoch of training in the
paper: the hook is the natural boundary and keeps `train_step` a plain adversarial step.

Example:
  >>> from jaxcompress.train import loop
  >>> from configs.abandit_nas import digits_search
  >>> out = loop.run(digits_search.get_config(), "/tmp/abandit_search")
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.methods.classification import Classification, cross_entropy
from jaxcompress.nas import abandit_network as an
from jaxcompress.nas import bandit as bandit_lib
from jaxcompress.nas import robust_ops
from jaxcompress.optim import builder
from jaxcompress.robust import attacks
from jaxcompress.train import one_shot
from jaxcompress.train.state import TrainState

# The CIFAR-10 table of the paper / `defenses/defense_all.py` (plus FGSM).
ROBUST_TABLE: tuple[str, ...] = ("clean", "fgsm", "mi_fgsm", "pgd7", "pgd20")

DEFAULT_ADV = dict(
    epsilon=0.031,          # L-inf budget in [0, 1] pixel units (8/255)
    step_size=0.0078,       # 2/255
    num_steps=7,            # PGD-k of adversarial training
    random_start=True,
    train_attack="pgd",     # "pgd", "fgsm" or "none" (clean training)
    attack_bn="train",      # BN mode while crafting training attacks: batch stats ("train",
                            # statistics not updated) or running averages ("eval")
    eval_attacks=("clean", "pgd7"),
    mi_fgsm_steps=10,       # `--nb_iter 10` of the evaluation script
    mi_fgsm_decay=1.0,
    aux_weight=0.4,         # DARTS auxiliary-loss weight (used when the model has a head)
    robust_eval_at_end=False,  # final_report runs `ROBUST_TABLE` attacks on the eval split and
                               # writes robust_eval.json / robust_eval.md to the workdir
    robust_eval_attacks=ROBUST_TABLE,
)

# Supernets with at most this many (layer, edge, op) triples initialise under one `jax.jit`
# (measured on a loaded 2-core CPU: 40 ops 3.8 s jitted vs 7.3 s eagerly; 80 ops 12.4 s vs
# 12.6 s; 540 ops about 8 minutes of compilation on an H100 host).
JIT_INIT_MAX_OPS = 64

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


def _block(config: ml_collections.ConfigDict, name: str, defaults: dict[str, Any]) -> dict:
  block = dict(defaults)
  given = config.get(name, None)
  if given is not None:
    unknown = sorted(set(given.keys()) - set(defaults))
    if unknown:
      raise ConfigError(f"Unknown config.{name} keys {unknown}; known: {sorted(defaults)}.")
    block.update(dict(given))
  return block


def num_search_samples(num_ops: int, t: int = 3) -> int:
  """Sampled architectures of a full search, T * sum_{k=2..K} k (132 for K = 9, T = 3)."""
  return t * sum(range(2, num_ops + 1))


def parse_attack(name: str) -> tuple[str, int]:
  """"pgd20" -> ("pgd", 20); "fgsm" -> ("fgsm", 1); "mi_fgsm" -> ("mi_fgsm", 0); "clean"."""
  m = re.fullmatch(r"pgd(\d+)", name)
  if m:
    return "pgd", int(m.group(1))
  if name in ("clean", "fgsm", "mi_fgsm"):
    return name, 0
  raise ConfigError(f"Unknown attack {name!r}; use clean, fgsm, mi_fgsm or pgd<k> (pgd7, pgd20).")


def run_attack(name: str, fn: Any, x: jax.Array, labels: jax.Array, rng: jax.Array,
               adv: dict[str, Any]) -> jax.Array:
  """The adversarial inputs of attack `name` (see `parse_attack`) against `fn(x) -> logits`."""
  kind, steps = parse_attack(name)
  eps, alpha = adv["epsilon"], adv["step_size"]
  if kind == "clean":
    return x
  if kind == "fgsm":
    return attacks.fgsm(fn, x, labels, eps)
  if kind == "mi_fgsm":
    return attacks.mi_fgsm(fn, x, labels, eps, alpha, adv["mi_fgsm_steps"], adv["mi_fgsm_decay"])
  return attacks.pgd(fn, x, labels, eps, alpha, steps, rng=rng,
                     random_start=adv["random_start"])


def _first(out: Any) -> jax.Array:
  return out[0] if isinstance(out, (tuple, list)) else out


class AdversarialTraining(Classification):
  """PGD adversarial training of a classifier; robust accuracies in evaluation.

  Config:
    model.name: "abandit_network" builds `abandit_network.AbanditNetwork` from
      `model.kwargs` (genotype: a released name such as "ABANDIT_CIFAR_1", a JSON string/file
      or a search's final_report.json; C, layers, auxiliary, manual_denoising, mean, std,
      drop_path_prob, dropout); any other name goes through the model registry.
    model.init: "he_fout" (official `--model_init he_fout`) or "default".
    adv: see `DEFAULT_ADV`.
    optim.grad_clip: optional global-norm clipping (DARTS uses 5).
  """

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    Method.__init__(self, config, **kwargs)  # pylint: disable=non-parent-init-called
    self.adv = _block(config, "adv", DEFAULT_ADV)
    for name in tuple(self.adv["eval_attacks"]) + tuple(self.adv["robust_eval_attacks"]):
      parse_attack(name)
    self.model = self.build_model(config)

  # ---- model ---------------------------------------------------------------------------------
  def build_model(self, config: ml_collections.ConfigDict) -> Any:
    m = config.model
    kwargs = dict(m.get("kwargs", {}))
    if m.name == "abandit_network":
      genotype = an.get_genotype(kwargs.pop("genotype", "ABANDIT_CIFAR_1"))
      for key in ("mean", "std"):
        if key in kwargs:
          kwargs[key] = tuple(kwargs[key])
      return an.AbanditNetwork(genotype=genotype, num_classes=m.num_classes, **kwargs)
    return models.build(m.name, layers=m.get("layers", "float"),
                        layer_kwargs=dict(m.get("layer_kwargs", {})),
                        num_classes=m.num_classes, **kwargs)

  def _uses_drop_path(self) -> bool:
    return float(getattr(self.model, "drop_path_prob", 0.0)) > 0

  def forward(self, params: Any, model_state: Any, x: jax.Array, *, train: bool,
              update_stats: bool = True, arch: Any = None, rng: jax.Array | None = None,
              drop_prob: Any = None) -> tuple[jax.Array, jax.Array | None, Any]:
    """(logits, aux_logits or None, new model_state). `arch` is unused here (search ops)."""
    del arch
    variables = {"params": params, **model_state}
    kwargs = {}
    if isinstance(self.model, an.AbanditNetwork):
      kwargs["drop_prob"] = 0.0 if drop_prob is None else drop_prob
    rngs = {}
    if train and rng is not None:
      rngs = {"drop_path": jax.random.fold_in(rng, 1), "dropout": jax.random.fold_in(rng, 2)}
    if train:
      mutable = [k for k in model_state if k != "params"]
      out, updates = self.model.apply(variables, x, train=True, mutable=mutable, rngs=rngs,
                                      **kwargs)
      new_state = {**model_state, **updates} if update_stats else model_state
    else:
      out, new_state = self.model.apply(variables, x, train=False, **kwargs), model_state
    if isinstance(out, (tuple, list)):
      return out[0], out[1], new_state
    return out, None, new_state

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    params, model_state = self.make_variables(rng, example_batch)
    self.tx = self.make_tx(params)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params)},
                             extra=self.init_extra(rng))

  def make_variables(self, rng: jax.Array, example_batch: Batch) -> tuple[Any, dict]:
    """(params, model_state): the model's initialisers, then `model.init = "he_fout"`."""
    # Parameters are drawn with an `unsafe_rbg` key: the same initialisers, but XLA compiles the
    # many independent draws several times faster than with threefry.
    init_key = jax.random.key(jax.random.bits(jax.random.fold_in(rng, 11), dtype=jnp.uint32),
                              impl="unsafe_rbg")
    variables = self.init_variables(init_key, example_batch)
    params = variables.pop("params")
    if self.config.model.get("init", "he_fout") == "he_fout":
      params = an.reinit_he_fout(params, jax.random.fold_in(rng, 12))
    return params, dict(flax.core.unfreeze(variables))

  def init_variables(self, key: jax.Array, example_batch: Batch) -> dict:
    return dict(flax.core.unfreeze(self.model.init(key, example_batch["image"][:1], train=False)))

  def init_extra(self, rng: jax.Array) -> Any:
    del rng
    return {}

  def make_tx(self, params: Any) -> optax.GradientTransformation:
    # optim.grad_clip (global norm) is applied by the builder.
    return builder.make_optimizer(self.config.optim, params, self.total_steps,
                                  self.steps_per_epoch)

  # ---- steps ---------------------------------------------------------------------------------
  def train_arch(self, state: TrainState) -> Any:
    """The architecture trained in this step (None: a fixed network)."""
    del state
    return None

  def eval_arch(self, state: TrainState) -> Any:
    """The architecture evaluated (None: a fixed network)."""
    del state
    return None

  def attack_inputs(self, params: Any, state: TrainState, x: jax.Array, labels: jax.Array,
                    rng: jax.Array, attack: str, arch: Any, bn: str) -> jax.Array:
    """Adversarial examples of `attack` with BN in batch-stat ("train") or eval mode."""
    if attack == "none" or attack == "clean":
      return x
    train = bn == "train"
    fn = lambda v: self.forward(params, state.model_state, v, train=train, update_stats=False,
                                arch=arch, rng=rng, drop_prob=0.0)[0]
    return jax.lax.stop_gradient(run_attack(attack if attack != "pgd" else
                                            f"pgd{self.adv['num_steps']}", fn, x, labels, rng,
                                            self.adv))

  def drop_prob(self, state: TrainState) -> jax.Array:
    """Linear drop-path schedule drop_path_prob * epoch / epochs (DARTS), traced."""
    p = float(getattr(self.model, "drop_path_prob", 0.0))
    epochs = max(self.total_steps // max(self.steps_per_epoch, 1), 1)
    return p * (state.step // self.steps_per_epoch).astype(jnp.float32) / epochs

  def adversarial_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    arch = self.train_arch(state)
    rng_attack, rng_model = jax.random.split(state.step_rng(3))
    x_adv = self.attack_inputs(state.params, state, batch["image"], batch["label"], rng_attack,
                               self.adv["train_attack"], arch, self.adv["attack_bn"])
    drop_prob = self.drop_prob(state)

    def loss_fn(params):
      logits, aux, model_state = self.forward(params, state.model_state, x_adv, train=True,
                                              arch=arch, rng=rng_model, drop_prob=drop_prob)
      loss = jnp.mean(cross_entropy(logits, batch["label"]))
      if aux is not None:
        loss = loss + self.adv["aux_weight"] * jnp.mean(cross_entropy(aux, batch["label"]))
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(self.tx, grads, model_state=model_state)
    adv_acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "adv_accuracy": adv_acc}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    return self.adversarial_step(state, batch)

  def attack_metrics(self, state: TrainState, batch: Batch,
                     attack_names: Sequence[str]) -> Metrics:
    """Sums over valid examples: clean "loss" and "accuracy", "<attack>_accuracy" per attack."""
    arch = self.eval_arch(state)
    mask = batch["mask"]
    x, y = batch["image"], batch["label"]
    logits = self.forward(state.params, state.model_state, x, train=False, arch=arch)[0]
    out = {"loss": jnp.sum(cross_entropy(logits, y) * mask),
           "accuracy": jnp.sum((jnp.argmax(logits, -1) == y) * mask)}
    for k, name in enumerate(attack_names):
      if name == "clean":
        out["clean_accuracy"] = out["accuracy"]
        continue
      x_adv = self.attack_inputs(state.params, state, x, y, state.step_rng(1000 + k), name,
                                 arch, "eval")
      adv_logits = self.forward(state.params, state.model_state, x_adv, train=False, arch=arch)[0]
      out[f"{name}_accuracy"] = jnp.sum((jnp.argmax(adv_logits, -1) == y) * mask)
    return out

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    return self.attack_metrics(state, batch, tuple(self.adv["eval_attacks"]))

  def summary(self, example_batch: Batch) -> str:
    try:
      return super().summary(example_batch)
    except Exception:  # pylint: disable=broad-except  # the table is optional
      return ""

  def final_report(self, state: TrainState) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if isinstance(self.model, an.AbanditNetwork):
      report["genotype"] = an.genotype_to_dict(self.model.genotype)
    if self.adv["robust_eval_at_end"]:
      # With the engine's workdir the table also lands in robust_eval.json / robust_eval.md.
      report["robust_eval"] = robust_eval(self.config, getattr(self, "workdir", None), state,
                                          tuple(self.adv["robust_eval_attacks"]), method=self)
    return report


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
    """Initial supernet variables, computed eagerly while the engine traces `init`.

    Under `jit`, the initialisation of every (layer, edge, op) of a full search network is a
    huge program (measured: about 8 minutes of XLA compilation on an H100 host for 6 cells x 10
    edges x 9 ops, against 27 s for the switched forward). `jax.ensure_compile_time_eval`
    runs it op by op instead and hands the engine constants; supernets of at most
    `JIT_INIT_MAX_OPS` (layer, edge, op) triples are initialised by one jitted call inside it
    (the same draws; about 2x faster for the 40-op quick search on a CPU). The draw is seeded by
    `config.seed` (the engine's init key is `jax.random.key(config.seed)` as well), so `rng`
    is not used for the parameters.
    """
    del rng
    if "val_image" not in example_batch:
      raise ConfigError("ABanditNAS scores sampled networks on held-out data: set "
                        "config.data.search_split = 0.5 so batches carry 'val_image'.")
    shape = tuple(example_batch["image"].shape[1:])
    with jax.ensure_compile_time_eval():
      key = jax.random.key(int(self.config.seed))
      ops = jnp.zeros((self.nas["num_cells"], an.num_edges()), jnp.int32)
      x = jnp.zeros((1,) + shape, jnp.float32)
      init = self.model.init
      if self.nas["layers"] * an.num_edges() * len(self.primitives) <= JIT_INIT_MAX_OPS:
        init = jax.jit(init, static_argnames="train")   # small supernets: one XLA program
      variables = dict(flax.core.unfreeze(init(jax.random.fold_in(key, 11), x, ops,
                                               train=False)))
      params = variables.pop("params")
      if self.config.model.get("init", "he_fout") == "he_fout":
        params = an.reinit_he_fout(params, jax.random.fold_in(key, 12))
    return params, variables

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


def _format_table(results: dict[str, float]) -> str:
  head = "| " + " | ".join(results) + " |"
  sep = "|" + "|".join("---" for _ in results) + "|"
  row = "| " + " | ".join(f"{100 * v:.2f}" for v in results.values()) + " |"
  return "\n".join([head, sep, row])


def robust_eval(config: ml_collections.ConfigDict, workdir: str | None,
                state: TrainState | None = None, attack_names: Sequence[str] = ROBUST_TABLE,
                *, method: AdversarialTraining | None = None) -> dict[str, float]:
  """Accuracy (fraction) under clean, FGSM, MI-FGSM, PGD-7 and PGD-20 on `config.data.eval_split`.

  Args:
    config: the experiment config (data, model, `adv` epsilon / step size).
    workdir: where `robust_eval.json`, `robust_eval.md` go and whose `final_report.json` gets a
      "robust_eval" entry; None writes nothing. Also the checkpoint source when `state` is None.
    state: a trained state (e.g. `loop.run(...)["state"]`); None restores the latest checkpoint.
    attack_names: attacks of the table ("clean", "fgsm", "mi_fgsm", "pgd<k>").
    method: the method object (built from `config` when None).

  Returns:
    {attack: accuracy} in `attack_names` order.
  """
  # pylint: disable=g-import-not-at-top
  from jaxcompress import distributed
  from jaxcompress import methods as methods_lib
  from jaxcompress.data import pipeline, sources, transforms
  from jaxcompress.train import checkpoint as checkpoint_lib
  from jaxcompress.train import loop
  # pylint: enable=g-import-not-at-top
  if method is None:
    method = methods_lib.get(config.method)(config)
  num_devices = config.get("num_devices", -1)
  mesh = distributed.make_mesh(jax.devices()[:num_devices] if num_devices > 0 else None)
  batch_size = config.data.get("eval_batch_size", config.data.batch_size)
  transforms.load_providers()
  src = sources.get(config.data.name, config.data.eval_split,
                    data_dir=config.data.get("data_dir", None),
                    **config.data.get("source_kwargs", {}))
  eval_fn_example = transforms.get(config.data.get("transform", ""), train=False,
                                   **dict(config.data.get("transform_kwargs", {})))
  eval_ds = pipeline.eval_dataset(src, global_batch_size=batch_size,
                                  options=loop.image_options(config.data),
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count(), example_fn=eval_fn_example)
  if state is None:
    if workdir is None:
      raise ValueError("robust_eval needs a state or a workdir with checkpoints.")
    example = dict(eval_ds[0])
    example.setdefault("val_image", example["image"])
    example.setdefault("val_label", example["label"])
    example = distributed.global_batch(example, mesh)
    state = one_shot.jit_once(method.init)(jax.random.key(config.seed), example)
    checkpointer = checkpoint_lib.Checkpointer(workdir, async_save=False)
    if checkpointer.latest_step() is None:
      raise ValueError(f"No checkpoint in {workdir}; train first or pass state=.")
    state = checkpointer.restore(state)
    checkpointer.close()
  names = tuple(attack_names)
  eval_fn = jax.jit(lambda s, b: method.attack_metrics(s, b, names))
  metrics = loop.evaluate(eval_fn, state, eval_ds, mesh)
  results = {name: float(metrics[f"{name}_accuracy"]) for name in names}
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    table = {"epsilon": method.adv["epsilon"], "step_size": method.adv["step_size"],
             "accuracy": results}
    with open(os.path.join(workdir, "robust_eval.json"), "w", encoding="utf-8") as f:
      json.dump(table, f, indent=2)
    with open(os.path.join(workdir, "robust_eval.md"), "w", encoding="utf-8") as f:
      f.write(f"Accuracy (%) under L-inf attacks, epsilon {method.adv['epsilon']}, step "
              f"{method.adv['step_size']}\n\n" + _format_table(results) + "\n")
    report_path = os.path.join(workdir, "final_report.json")
    report = {}
    if os.path.exists(report_path):
      with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    report["robust_eval"] = results
    with open(report_path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return results


__all__ = ["ABanditNAS", "AdversarialTraining", "DEFAULT_ADV", "DEFAULT_NAS", "ROBUST_TABLE",
           "num_search_samples", "parse_attack", "robust_eval", "run_attack"]
