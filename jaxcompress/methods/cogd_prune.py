"""CoGD channel pruning: cogradient descent on soft channel masks, then fine-tuning the cut network.

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142) names network pruning as its
third application of Eq. 1, min over (A, x) of `L(A, x) + lambda ||x||_1`: A the weights and x
the soft channel masks (the sparse factor), `ChannelGate`s after the normalisations the
`config.cogd.gates` pattern selects. The official pruning code was never released, so which
variable carries the mask, the loss and its constants are unconfirmed (the paper gives no
equations for them); this method follows the released sparse-coding solver's structure
(`jaxcompress.optim.cogd`) on a network instead of a dictionary:

1. x-step: `x <- S_{lr_x lambda}(x - lr_x grad_x L(A_t, x_t))` (proximal gradient, soft threshold);
2. A-step: the configured optimizer on `grad_A L(A_t, x_{t+1})` (Gauss-Seidel, two gradients
   per step, as FFCSC);
3. correction of A: `none` (plain alternation, the baseline) or `matlab_heuristic`: the released
   rule (`optim.cogd.pull_back_columns`) on every gated layer, the conv kernel's output channels
   as the columns of A and that gate's mask as x; `saturate` keeps the uint8 loop counter of the
   release. `paper` (the projection rule) raises, as in `optim.cogd`.

`cogd_finetune` trains the network `cogd_materialize` cut to its FLOPs target
(`jaxcompress.methods.cogd_prune_stages`), starting from the searched weights.

Config block `config.cogd`: variant ("matlab_heuristic"), saturate (True), lambda_l1 (1e-4),
mask_lr (0.1), gates (regex over gate names, default every block's inner gate "gate1$"),
flops_target (fraction of the unpruned MACs to keep) and input_shape ((H, W, C) of one example, to
count MACs), both used by `cogd_materialize`; torchvision (a torchvision ImageNet state_dict file
for `config.model.name`, e.g. resnet50: the search starts from it, masks at 1).
"""
from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.methods.classification import Classification
from jaxcompress.models import factory
from jaxcompress.optim import cogd as cogd_lib
from jaxcompress.prune import student as student_lib
from jaxcompress.train.state import TrainState

MASK = "mask"
DEFAULTS = dict(variant="matlab_heuristic", saturate=True, lambda_l1=1e-4, mask_lr=0.1,
                gates=r"gate1$", flops_target=0.5, input_shape=(), torchvision="")


def cogd_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.cogd` over `DEFAULTS`, checked."""
  given = dict(config.get("cogd", {}) or {})
  unknown = set(given) - set(DEFAULTS) - {"student"}
  if unknown:
    raise ConfigError(f"config.cogd has unknown keys {sorted(unknown)}; known: "
                      f"{sorted(DEFAULTS)}.")
  out = {**DEFAULTS, **given}
  if out["variant"] not in cogd_lib.VARIANTS:
    raise ConfigError(f"config.cogd.variant = {out['variant']!r}; use one of "
                      f"{cogd_lib.VARIANTS[:2]}.")
  if not 0 < float(out["flops_target"]) <= 1:
    raise ConfigError(f"config.cogd.flops_target = {out['flops_target']} is the fraction of the "
                      "unpruned MACs to keep: give a value in (0, 1].")
  return out


def gated_layers(pattern: str) -> factory.Layers:
  """The float layer set with a `ChannelGate` on every gate whose name matches `pattern`."""
  regex = re.compile(pattern)

  def gate(features: int, name: str):
    if regex.search(name):
      return factory.ChannelGate(features, name=name)
    return lambda x: x
  return factory.get("float").replace(gate=gate)


def gate_modules(model: Any) -> dict[str, tuple[str, ...]]:
  """Gate path -> the paths of the modules whose output channels it masks (conv, norm)."""
  out: dict[str, tuple[str, ...]] = {}
  for role in model.prune_spec().roles.values():
    out.update({g: tuple(modules) for g, modules in role.gates.items()})
  return out


class CoGDPrune(Classification):
  """Classification with CoGD on soft channel masks (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    self.cogd = cogd_options(config)
    if self.cogd["variant"] == "paper":
      cogd_lib.csc_correction("paper")  # raises, naming what is unconfirmed
    super().__init__(config, **kwargs)
    m = config.model
    self.model = models.build(m.name, layers=gated_layers(self.cogd["gates"]),
                              num_classes=m.num_classes, **dict(m.get("kwargs", {})))
    if not hasattr(self.model, "prune_spec"):
      raise ConfigError(f"cogd_prune needs a model with a prune spec (e.g. resnet20); "
                        f"{m.name!r} has none.")
    self.gates = {g: mods for g, mods in gate_modules(self.model).items()
                  if re.search(self.cogd["gates"], g.split("/")[-1])}
    if not self.gates:
      raise ConfigError(f"config.cogd.gates = {self.cogd['gates']!r} selects none of the model's "
                        f"gates {sorted(gate_modules(self.model))}.")

  @staticmethod
  def _masks(params: Any) -> dict[tuple[str, ...], jax.Array]:
    """The mask leaves of `params` by flattened path."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params))
    return {k: v for k, v in flat.items() if k[-1] == MASK}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    c = self.cogd
    grad_loss = jax.grad(lambda p: self.loss_fn(p, state, batch)[0])
    # (1) x-step at (A_t, x_t): proximal gradient on the masks.
    masks, g_x = self._masks(state.params), self._masks(grad_loss(state.params))
    lr_x, lam = c["mask_lr"], c["lambda_l1"]
    new_masks = {k: cogd_lib.soft_threshold(m - lr_x * g_x[k], lr_x * lam)
                 for k, m in masks.items()}
    grad_norm_x = jnp.sqrt(sum(jnp.sum(((masks[k] - new_masks[k]) / lr_x) ** 2) for k in masks))
    flat = traverse_util.flatten_dict(flax.core.unfreeze(state.params))
    params_x = traverse_util.unflatten_dict({**flat, **new_masks})
    # (2) A-step at (A_t, x_{t+1}); the masks' own gradients are not applied.
    (loss, (logits, model_state)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        params_x, state, batch)
    flat_g = traverse_util.flatten_dict(flax.core.unfreeze(grads))
    grads = traverse_util.unflatten_dict(
        {k: jnp.zeros_like(v) if k[-1] == MASK else v for k, v in flat_g.items()})
    grad_norm_a = jnp.sqrt(sum(jnp.sum(v ** 2) for k, v in flat_g.items() if k[-1] != MASK))
    new_state = state.replace(params=params_x).apply_gradients(self.tx, grads,
                                                               model_state=model_state)
    new_flat = traverse_util.flatten_dict(flax.core.unfreeze(new_state.params))
    new_flat.update(new_masks)  # weight decay / momentum never move the masks
    # (3) the correction of A, per gated layer: kernel output channels are A's columns.
    if c["variant"] == "matlab_heuristic":
      t = state.step.astype(jnp.float32) + 1
      for gate, (conv, *_) in self.gates.items():
        key = (*conv.split("/"), "kernel")
        k_new, k_old = new_flat[key], flat[key]
        corrected = cogd_lib.pull_back_columns(
            k_new.reshape(-1, k_new.shape[-1]), k_old.reshape(-1, k_old.shape[-1]),
            new_masks[(*gate.split("/"), MASK)], t, self.total_steps, saturate=c["saturate"])
        new_flat[key] = corrected.reshape(k_new.shape)
    new_state = new_state.replace(params=traverse_util.unflatten_dict(new_flat))
    mask_values = jnp.concatenate([m.ravel() for m in new_masks.values()])
    return new_state, {
        "loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "mask_l1": jnp.sum(jnp.abs(mask_values)), "mask_zero": jnp.mean(mask_values == 0),
        "grad_norm_a": grad_norm_a, "grad_norm_x": grad_norm_x}


  def load_initial(self, state: TrainState) -> TrainState:
    """The torchvision weights of `config.cogd.torchvision`, when given (masks stay at 1)."""
    path = self.cogd["torchvision"]
    if not path:
      return state
    from jaxcompress.models import torchvision_weights  # pylint: disable=g-import-not-at-top
    converted = torchvision_weights.convert_torchvision(
        self.config.model.name, path, num_classes=self.config.model.num_classes)
    flat = traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(
        {"params": state.params, **state.model_state})))
    for key, value in traverse_util.flatten_dict(converted).items():
      if key not in flat or flat[key].shape != value.shape:
        raise ConfigError(f"{path}: {'/'.join(key)} does not fit the gated "
                          f"{self.config.model.name}; give the torchvision file of that model.")
      flat[key] = value
    variables = traverse_util.unflatten_dict(flat)
    params = variables.pop("params")
    return state.replace(params=params, model_state={**state.model_state, **variables})


def load_student(path: str) -> dict[str, Any]:
  """`cogd_materialize`'s description: {"widths", "variables_file", "macs", ...}."""
  return student_lib.load_student(path, "cogd.student", "cogd_materialize")


class CoGDFinetune(Classification):
  """Fine-tunes the network `cogd_materialize` cut (its widths, its variables)."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    self.student_path = (config.get("cogd", {}) or {}).get("student", "")
    self.student = load_student(self.student_path)
    m = config.model
    self.model = models.build(m.name, layers=m.get("layers", "float"), num_classes=m.num_classes,
                              **{**dict(m.get("kwargs", {})), "widths": self.student["widths"]})

  def load_initial(self, state: TrainState) -> TrainState:
    saved = student_lib.load_student_variables(self.student_path, self.student)
    params = flax.serialization.from_state_dict(jax.device_get(state.params), saved["params"])
    model_state = flax.serialization.from_state_dict(jax.device_get(state.model_state),
                                                     saved["model_state"])
    shapes = jax.tree.map(jnp.shape, (params, model_state))
    if shapes != jax.tree.map(jnp.shape, (state.params, state.model_state)):
      raise ConfigError(f"The variables beside {self.student_path} do not match its network; rerun the "
                        "cogd_materialize stage.")
    return state.replace(params=params, model_state=model_state)
