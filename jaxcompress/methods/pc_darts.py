"""PC-DARTS search (Xu et al., arXiv 1907.05737, ICLR 2020) on the DARTS bilevel scheme.

Follows `yuhuixu1993/PC-DARTS` `train_search.py` / `architect.py` (and `quark0/darts` for the
second-order step):

* supernet: `jaxcompress.nas.search.SearchNetwork` (partial channels K = 4, edge normalisation);
  architecture parameters in `params["arch"]`, network weights in the rest of the tree;
* two optimizers in one `TrainState` (`opt_state = {"model": ..., "arch": ...}`):
  weights: clip_by_global_norm(5) -> coupled L2 3e-4 -> SGD(0.1, momentum 0.9), cosine to 0
  (`config.optim`, `config.optim.grad_clip`); architecture: coupled L2 1e-3 -> Adam(6e-4,
  b1 0.5, b2 0.999) (`config.nas.arch_optim`);
* one jitted `train_step` per batch: first the architecture step on the validation half
  (`batch["val_image"]`, `config.data.search_split = 0.5`) at the current weights, then the
  weight step on the training half with the updated architecture, as the official loop
  (`architect.step(...)` then `optimizer.step()`). Gradients are isolated: the architecture
  gradient is taken w.r.t. `params["arch"]` only, on the validation loss; the weight gradient
  w.r.t. the weights only, on the training loss;
* the architecture step is on from epoch `config.nas.arch_start_epoch` (15 in PC-DARTS):
  `on_epoch_start` writes `extra["arch_on"] = epoch >= start` from the traced epoch, and the step
  branches with `lax.cond`, so nothing recompiles and no architecture work is done before;
* `config.nas.unrolled = True`: the DARTS second-order step (w' = w - xi (momentum buffer +
  grad + wd w) with xi the current weights learning rate, architecture gradient
  dL_val(w', a)/da - xi * Hessian-vector product); `config.nas.hvp = "finite_difference"`
  (official, eps = 0.01 / ||dL_val/dw'||) or `"exact"` (autodiff through the unrolled step);
  Note: the official finite difference is coarse on small nets with many kinks (ReLU, max pool):
  on the 3-cell test net its Hessian-vector product was 2-8x off the autodiff value at eps 0.01,
  while float64 finite differences at eps 1e-6 matched autodiff to 1e-2 relative; `"exact"` is
  the accurate choice, `"finite_difference"` the faithful one;
* `final_report` derives the genotype (`nas.genotype_from_arch`) and writes `genotype.json`
  (and `normal.png` / `reduce.png` when matplotlib is present) into the workdir.

Choices: the cosine schedule is per step (optax) instead of PyTorch's per-epoch
CosineAnnealingLR; the BN running statistics are also updated by the validation forward of the
first-order architecture step, as in PyTorch (the model is in train mode there); metric
`val_loss`/`val_accuracy` are 0 while the architecture is frozen.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.methods.classification import cross_entropy
from jaxcompress.nas import edge_layout, search
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.optim import builder
from jaxcompress.train import one_shot
from jaxcompress.train.state import TrainState


def default_nas_config() -> ml_collections.ConfigDict:
  """The `config.nas` block with the official PC-DARTS CIFAR-10 search settings."""
  n = ml_collections.ConfigDict()
  n.init_channels = 16
  n.layers = 8
  n.steps = 4
  n.multiplier = 4
  n.stem_multiplier = 3
  n.partial_channels = 4
  n.edge_normalization = True
  n.primitives = tuple(search.space.PRIMITIVES)
  n.op_set = "darts"
  n.binary_activations = False
  n.skip_dead = False
  n.arch_start_epoch = 15
  n.unrolled = False
  n.hvp = "finite_difference"
  n.write_png = True
  n.output_dir = ""   # where genotype.json goes when the engine does not give the workdir
  n.arch_optim = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=6e-4, b1=0.5, b2=0.999, eps=1e-8, weight_decay=1e-3,
      schedule="constant"))
  return n


class PCDarts(Method):
  """PC-DARTS / DARTS architecture search with the bilevel step in one jitted train step."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    nas = default_nas_config()
    nas.update(config.get("nas", ml_collections.ConfigDict()))
    self.nas = nas
    self.primitives = tuple(nas.primitives)
    self.model = search.SearchNetwork(
        num_classes=config.model.num_classes, init_channels=nas.init_channels,
        layers=nas.layers, steps=nas.steps, multiplier=nas.multiplier,
        stem_multiplier=nas.stem_multiplier, partial_channels=nas.partial_channels,
        edge_norm=nas.edge_normalization, primitives=self.primitives, op_set=nas.op_set,
        binary_activations=nas.binary_activations, skip_dead=nas.skip_dead)
    if not config.data.get("search_split", 0.0):
      raise ConfigError("PC-DARTS needs config.data.search_split (0.5: weights on the first half "
                       "of the train split, architecture on the second).")

  def legacy_layout(self, state: TrainState) -> tuple[Any, Any] | None:
    """Checkpoints of supernets whose edge loops kept one entry per edge load and convert
    (`nas.edge_layout`: the loops' variables are now stacked)."""
    if not self.model.scan_edges:
      return None
    layout = (self.model.steps, self.model.reduction_layers())
    return (edge_layout.unstack(state, *layout),
            lambda old: edge_layout.stack(old, *layout))

  # ---------------------------------------------------------------- model
  def alive(self, state: TrainState) -> jax.Array | None:
    """Alive-op masks (2, num_edges, num_ops) or None (all alive); BNAS overrides."""
    del state
    return None

  def apply(self, params: Any, model_state: Any, images: jax.Array, train: bool,
            **kwargs: Any) -> tuple[jax.Array, Any]:
    """Supernet forward; returns (logits, new model_state)."""
    variables = {"params": params, **model_state}
    if train:
      logits, updates = self.model.apply(variables, images, train=True,
                                         mutable=list(model_state), **kwargs)
      return logits, {**model_state, **updates}
    return self.model.apply(variables, images, train=False, **kwargs), model_state

  def _loss(self, weights, arch, model_state, images, labels, alive):
    logits, new_state = self.apply(search.merge_params(weights, arch), model_state, images, True,
                                   alive=alive)
    loss = jnp.mean(cross_entropy(logits, labels))
    return loss, (logits, new_state)

  # ---------------------------------------------------------------- init
  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    x = example_batch["image"][:1]
    num_ops = self.nas.layers * search.num_edges(self.nas.steps) * len(self.primitives)
    # With edge loops the init program holds one edge per loop (`SearchCell._init_edges`), so
    # it stays small whatever the supernet's size; unrolled, every (cell, edge, op) is in it.
    if self.model.scan_edges or num_ops <= one_shot.JIT_INIT_MAX_OPS:
      variables = self.model.init(rng, x, train=False)
    else:  # an unrolled supernet: drawn op by op, not as one huge program (`one_shot.eager_init`)
      variables = one_shot.eager_init(self.model.init, rng, x, seed=int(self.config.seed),
                                      train=False)
    variables = dict(variables)
    params = dict(variables.pop("params"))
    model_state = dict(variables)
    weights, arch = search.split_params(params)
    self.lr_schedule = builder.make_schedule(self.config.optim, self.total_steps,
                                             self.steps_per_epoch)
    # config.optim.grad_clip (5 in the paper configs) clips the weight gradients in the builder.
    self.tx = builder.make_optimizer(self.config.optim, weights, self.total_steps,
                                     self.steps_per_epoch)
    self.arch_tx = builder.make_optimizer(self.nas.arch_optim, arch, self.total_steps,
                                          self.steps_per_epoch)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, weights), "arch": (self.arch_tx, arch)},
                             extra=self.init_extra(params))

  def init_extra(self, params: Any) -> dict[str, Any]:
    del params
    return {"epoch": jnp.zeros((), jnp.int32), "arch_on": jnp.zeros((), bool)}

  # ---------------------------------------------------------------- steps
  def arch_grad(self, state: TrainState, batch: Batch, weights: Any, arch: Any,
                alive: Any) -> tuple[Any, Any, jax.Array, jax.Array]:
    """(d L_val / d arch, new model_state, val loss, val accuracy) at the current weights."""
    ms = state.model_state
    if not self.nas.unrolled:
      (loss, (logits, ms)), g = jax.value_and_grad(
          lambda a: self._loss(weights, a, ms, batch["val_image"], batch["val_label"], alive),
          has_aux=True)(arch)
      acc = jnp.mean(jnp.argmax(logits, -1) == batch["val_label"])
      return g, ms, loss, acc
    return self._unrolled_arch_grad(state, batch, weights, arch, alive)

  def _unrolled_arch_grad(self, state, batch, weights, arch, alive):
    """DARTS second-order architecture gradient (architect._backward_step_unrolled)."""
    ms = state.model_state
    xi = self.lr_schedule(state.step)
    wd = self.config.optim.get("weight_decay", 0.0)
    momentum = self.config.optim.get("momentum", 0.9) or 0.0
    buf = optax.tree_utils.tree_get(state.opt_state["model"], "trace", None)
    if buf is None:
      buf = jax.tree.map(jnp.zeros_like, weights)

    def train_loss(w, a):
      return self._loss(w, a, ms, batch["image"], batch["label"], alive)[0]

    def val_loss(w, a):
      return self._loss(w, a, ms, batch["val_image"], batch["val_label"], alive)

    def unroll(w, a):
      g = jax.grad(train_loss)(w, a)
      return jax.tree.map(lambda p, gi, b: p - xi * (momentum * b + gi + wd * p), w, g, buf)

    if self.nas.hvp == "exact":
      (loss, (logits, _)), g = jax.value_and_grad(
          lambda a: val_loss(unroll(weights, a), a), has_aux=True)(arch)
    elif self.nas.hvp == "finite_difference":
      w_un = unroll(weights, arch)
      (loss, (logits, _)), (dw, da) = jax.value_and_grad(val_loss, argnums=(0, 1),
                                                         has_aux=True)(w_un, arch)
      norm = optax.global_norm(dw)
      r = 0.01 / norm
      w_p = jax.tree.map(lambda p, d: p + r * d, weights, dw)
      w_m = jax.tree.map(lambda p, d: p - r * d, weights, dw)
      g_p = jax.grad(train_loss, argnums=1)(w_p, arch)
      g_m = jax.grad(train_loss, argnums=1)(w_m, arch)
      g = jax.tree.map(lambda d, p, m: d - xi * (p - m) / (2 * r), da, g_p, g_m)
    else:
      raise ConfigError(f"Unknown nas.hvp {self.nas.hvp!r}; use 'finite_difference' or 'exact'.")
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["val_label"])
    return g, ms, loss, acc

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    weights, arch = search.split_params(state.params)
    alive = self.alive(state)

    def arch_step(operand):
      arch, arch_opt, _ = operand
      g, ms, loss, acc = self.arch_grad(state, batch, weights, arch, alive)
      arch, arch_opt = builder.apply_updates(self.arch_tx, g, arch_opt, arch)
      return arch, arch_opt, ms, loss, acc.astype(jnp.float32)

    def frozen(operand):
      arch, arch_opt, ms = operand
      zero = jnp.zeros((), jnp.float32)
      return arch, arch_opt, ms, zero, zero

    arch, arch_opt, model_state, val_loss, val_acc = jax.lax.cond(
        state.extra["arch_on"], arch_step, frozen,
        (arch, state.opt_state["arch"], state.model_state))

    (loss, (logits, model_state)), grads = jax.value_and_grad(
        lambda w: self._loss(w, arch, model_state, batch["image"], batch["label"], alive),
        has_aux=True)(weights)
    weights, w_opt = builder.apply_updates(self.tx, grads, state.opt_state["model"], weights)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = state.replace(step=state.step + 1, params=search.merge_params(weights, arch),
                              model_state=model_state,
                              opt_state={**state.opt_state, "model": w_opt, "arch": arch_opt})
    return new_state, {"loss": loss, "accuracy": accuracy, "val_loss": val_loss,
                       "val_accuracy": val_acc, "arch_on": state.extra["arch_on"].astype(
                           jnp.float32), "lr": self.lr_schedule(state.step)}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    logits, _ = self.apply(state.params, state.model_state, batch["image"], train=False,
                           alive=self.alive(state))
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "accuracy": jnp.sum(correct * mask)}

  def on_epoch_start(self, state: TrainState, epoch: Any) -> TrainState:
    epoch = jnp.asarray(epoch, jnp.int32)
    extra = {**state.extra, "epoch": epoch,
             "arch_on": epoch >= jnp.asarray(self.nas.arch_start_epoch, jnp.int32)}
    return state.replace(extra=extra)

  # ---------------------------------------------------------------- outputs
  def genotype(self, state: TrainState) -> genotype_lib.Genotype:
    """The current discrete genotype (DARTS top-2 rule over softmax(alpha) x edge weights)."""
    _, arch = search.split_params(state.params)
    alive = self.alive(state)
    return search.genotype_from_arch(jax.device_get(arch),
                                     None if alive is None else np.asarray(alive),
                                     self.nas.steps, self.primitives, self.nas.multiplier)

  def report_extras(self, state: TrainState) -> dict[str, Any]:
    """Method-specific additions to final_report (BNAS: alive ops)."""
    del state
    return {}

  def final_report(self, state: TrainState) -> dict[str, Any]:
    geno = self.genotype(state)
    _, arch = search.split_params(jax.device_get(state.params))
    alive = self.alive(state)
    alive = None if alive is None else np.asarray(alive)
    report = {
        "genotype": json.loads(genotype_lib.to_json(geno)),
        "op_weights_normal": np.asarray(search.op_weights(
            arch["alphas_normal"], None if alive is None else alive[0])).round(4).tolist(),
        "op_weights_reduce": np.asarray(search.op_weights(
            arch["alphas_reduce"], None if alive is None else alive[1])).round(4).tolist(),
        "primitives": list(self.primitives),
        **self.report_extras(state),
    }
    workdir = self.workdir or self.nas.get("output_dir")
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "genotype.json"), "w", encoding="utf-8") as f:
        f.write(genotype_lib.to_json(geno) + "\n")
      report["genotype_path"] = os.path.join(workdir, "genotype.json")
      if self.nas.get("write_png", True):
        for cell in ("normal", "reduce"):
          genotype_lib.plot_cell(getattr(geno, cell), os.path.join(workdir, f"{cell}.png"),
                                 getattr(geno, f"{cell}_concat"), title=cell)
    return report

  def summary(self, example_batch: Batch) -> str:
    shapes = jax.eval_shape(lambda: self.model.init(
        jax.random.key(0), jnp.zeros((1, *example_batch["image"].shape[1:])), train=False))
    weights, arch = search.split_params(dict(shapes["params"]))
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
    return (f"{type(self).__name__} search network: {self.nas.layers} cells, C = "
            f"{self.nas.init_channels}, {self.nas.steps} nodes, K = {self.nas.partial_channels}, "
            f"ops {list(self.primitives)}, op_set {self.nas.op_set}\n"
            f"network weights: {count(weights):,} parameters; architecture: {count(arch):,}")
