"""Adversarial training ("adversarial"): Madry PGD training of any classifier, robust evaluation.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv 1706.06083,
as ABanditNAS (arXiv 2008.00698, ECCV 2020) trains and evaluates its found networks: PGD-7,
epsilon 0.031, step 0.0078, uniform random start, all in [0, 1] pixel space with the
normalisation inside the model (`config.data.mean = 0`, `std = 1`). By default the model is the
ABanditNAS evaluation network of a genotype (`config.model.name = "abandit_network"`).
`eval_step` returns sums of the clean and attacked accuracies named in `config.adv.eval_attacks`
("clean", "fgsm", "mi_fgsm", "pgd<k>"), attacks run with BN in eval mode. `robust_eval(...)`
writes the table of clean / FGSM / MI-FGSM / PGD-7 / PGD-20 accuracy to the workdir.
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
import optax

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.methods.classification import Classification, cross_entropy
from jaxcompress.nas import abandit_network as an
from jaxcompress.optim import builder
from jaxcompress.robust import attacks
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


def _block(config: ml_collections.ConfigDict, name: str, defaults: dict[str, Any]) -> dict:
  block = dict(defaults)
  given = config.get(name, None)
  if given is not None:
    unknown = sorted(set(given.keys()) - set(defaults))
    if unknown:
      raise ConfigError(f"Unknown config.{name} keys {unknown}; known: {sorted(defaults)}.")
    block.update(dict(given))
  return block


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


def initializer_key(rng: jax.Array) -> jax.Array:
  """The key the adversarial methods draw their models' initial parameters with.

  An `unsafe_rbg` key seeded from `rng`: the same initialisers, but XLA compiles the many
  independent draws several times faster than with threefry.

  Args:
    rng: the method's init key.

  Returns:
    An `unsafe_rbg` key.
  """
  return jax.random.key(jax.random.bits(jax.random.fold_in(rng, 11), dtype=jnp.uint32),
                        impl="unsafe_rbg")


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
    variables = self.init_variables(initializer_key(rng), example_batch)
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


def _format_table(results: dict[str, float]) -> str:
  head = "| " + " | ".join(results) + " |"
  sep = "|" + "|".join("---" for _ in results) + "|"
  row = "| " + " | ".join(f"{100 * v:.2f}" for v in results.values()) + " |"
  return "\n".join([head, sep, row])


def robust_eval(config: ml_collections.ConfigDict, workdir: str | None,
                state: TrainState | None = None, attack_names: Sequence[str] = ROBUST_TABLE,
                *, method: AdversarialTraining | None = None) -> dict[str, float]:
  """Accuracy (fraction) under clean, FGSM, MI-FGSM, PGD-7 and PGD-20 on `config.data.eval_split`.

  The "robust" evaluator (`jaxcompress.evals.robust`) run by the engine's `evaluate`.

  Args:
    config: the experiment config (data, model, `adv` epsilon / step size).
    workdir: where `robust_eval.json`, `robust_eval.md` go and whose `final_report.json` gets a
      "robust_eval" entry; None writes nothing. Also the checkpoint source when `state` is None.
    state: a trained state (e.g. `loop.run(...)["state"]`); None restores the newest intact
      checkpoint of `workdir`.
    attack_names: attacks of the table ("clean", "fgsm", "mi_fgsm", "pgd<k>").
    method: unused (kept for callers that pass the method object).

  Returns:
    {attack: accuracy} in `attack_names` order.
  """
  del method
  from jaxcompress.train import loop  # pylint: disable=g-import-not-at-top
  if state is None and workdir is None:
    raise ConfigError("robust_eval needs a state or a workdir with checkpoints.")
  names = tuple(attack_names)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.evals = ml_collections.ConfigDict(
      {"robust": {"type": "robust", "split": config.data.eval_split, "attacks": names}})
  metrics = loop.evaluate(cfg, state if state is not None else workdir, names=["robust"])
  results = {name: float(metrics[f"robust/{name}_accuracy"]) for name in names}
  if workdir is not None and jax.process_index() == 0:
    adv = _block(config, "adv", DEFAULT_ADV)
    os.makedirs(workdir, exist_ok=True)
    table = {"epsilon": adv["epsilon"], "step_size": adv["step_size"], "accuracy": results}
    with open(os.path.join(workdir, "robust_eval.json"), "w", encoding="utf-8") as f:
      json.dump(table, f, indent=2)
    with open(os.path.join(workdir, "robust_eval.md"), "w", encoding="utf-8") as f:
      f.write(f"Accuracy (%) under L-inf attacks, epsilon {adv['epsilon']}, step "
              f"{adv['step_size']}\n\n" + _format_table(results) + "\n")
    report_path = os.path.join(workdir, "final_report.json")
    report = {}
    if os.path.exists(report_path):
      with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    report["robust_eval"] = results
    with open(report_path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return results
