"""DMAD search (Li et al., arXiv 2011.08382, Sec. 3.1-3.2): differentiable channel masks on a GAN.

The CycleGAN ("dmad_cyclegan") or Pix2Pix ("dmad_pix2pix") training step of
`jaxcompress.methods.cyclegan` / `.pix2pix`, with a `prune.MaskGate` after every normalisation of
each generator (the layer factory's gate slot) and the mask sparsity loss added to the generator
loss, as SJLeo/DMAD `models/MaskCycleGAN.py` / `models/MaskPix2Pix.py` (`backward_G`):

  L_G += lambda_mask * sum over generators of `prune.dmad_mask_loss(ordinary, sampling, group,
         bound, group_coeff)`,  lambda_mask = 1e-3 (CycleGAN) / 1e-2 (Pix2Pix).

Mask roles (official `get_mask_weight_loss`): the gates of a residual stream of the model's
`prune_spec()` form the group (cross-block group sparsity with the adaptive coefficients of
`prune.dmad_group_coefficients`, when `lambda_update` > 0); gates whose path matches
`dmad.sampling_gates` use the "bound" penalty times `sampling_coeff` = 100 (CycleGAN: the masks
after the stem, the first stride-2 conv and both transposed convs, `--upconv_bound`); every
other gate is ordinary ("relu").

Bound updates (official `train.py` / `update_masklayer`, about 150 in a run) run on the host at
the end of every `dmad.update_every` epochs, so the bound is data of the jitted step (the
`mask_bound` collection of each generator's model state), never a compiled constant. Each update:
  1. the group coefficients are recomputed from the masks and the bound in force;
  2. early stop: the generator the masks imply (channels with m > -b; a residual channel kept
     when more than `threshold` of its gates keep it) is counted on a 1x3xSxS input (GAN MAC
     convention, `jaxcompress.summary`, S = `dmad.macs_input_size`, 256); a generator at or under
     `dmad.macs_target` has its masks binarised (m > -b -> +1, else -1) and its bound pinned
     to 0 for the rest of the run;
  3. Pix2Pix only (`dmad.frozen_threshold`, 0.8 / 0.7 in the official scripts): a gate with
     more than that fraction of its masks under -b is binarised the same way (frozen);
  4. the new bound `prune.dmad_bound(step, total, rule)` (0 for stopped generators).
`iteration` and `total` are optimisation steps (the bound reaches 0 at 75% of the run, as the
paper says); `dmad.official_total = True` multiplies the total by the batch size as the official
loop does (it counts samples against dataset size x batch x epochs), which for batch 1 is the
same and for batch 4 leaves the bound above 0.3 at the end.

Config block `config.dmad`: lambda_mask, lambda_update [1.0], sampling_gates (regex),
sampling_coeff [100], sampling_kind ["bound"], kind ["relu"], official_clamp [False],
rule ["cube"], update_every [1] (epochs), macs_target (MACs, one for every generator or
{generator: MACs}; <= 0: no early stop),
macs_input_size [256], threshold [0], frozen_threshold [None], official_total [False].
The final report writes `dmad_search.json` (bound, stopped flags, implied MACs and widths).
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import prune
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, HookContext
from jaxcompress.methods.cyclegan import CycleGAN
from jaxcompress.methods.pix2pix import Pix2Pix
from jaxcompress.models import factory
from jaxcompress.train.state import TrainState

# CycleGAN ResNet generator: the "bound"-penalty (sampling) masks of the official script.
CYCLEGAN_SAMPLING_GATES = r"^(stem|down1|up1|up2)_gate$"


def implied_generator(model: Any, masks: dict[str, Any], bound: float, threshold: float
                      ) -> tuple[Any, dict[str, int]]:
  """The plain generator the masks imply at `bound` (official `get_cfg*` with bound = -b).

  Returns:
    (the narrowed model without gates, its widths).
  """
  shifted = {g: np.asarray(m, np.float64) + float(bound) for g, m in masks.items()}
  widths = prune.pruned_widths(model, shifted, threshold)
  return model.clone(widths=widths, layers=model.layers.replace(gate=None)), widths


def generator_macs(model: Any, input_size: int, channels: int) -> int:
  """MACs of `model` on one (1, S, S, channels) input, GAN convention (thop's count)."""
  from jaxcompress.summary import summary  # pylint: disable=g-import-not-at-top
  x = jax.ShapeDtypeStruct((1, input_size, input_size, channels), jnp.float32)
  return int(summary(model, x, mac_convention="gan").total_macs)


class _MaskSearch:
  """The DMAD search on top of a GAN method (CycleGAN or Pix2Pix); see the module docstring."""

  DEFAULT_LAMBDA_MASK = 1e-3
  DEFAULT_SAMPLING_GATES = ""
  host_hooks = frozenset({"on_epoch_end"})

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    d = config.get("dmad", None) or ml_collections.ConfigDict()
    self.dmad = d
    self.lambda_mask = float(d.get("lambda_mask", self.DEFAULT_LAMBDA_MASK))
    self.lambda_update = float(d.get("lambda_update", 1.0))
    self.sampling_gates = re.compile(d.get("sampling_gates", self.DEFAULT_SAMPLING_GATES) or "$^")
    self.official_clamp = bool(d.get("official_clamp", False))
    self.rule = d.get("rule", "cube")
    self.update_every = int(d.get("update_every", 1))
    self.macs_targets = self._targets(d.get("macs_target", 0))
    self.threshold = float(d.get("threshold", 0))
    self.frozen_threshold = d.get("frozen_threshold", None)
    if self.update_every < 1 or self.lambda_mask < 0:
      raise ConfigError(f"config.dmad: update_every must be >= 1 epoch and lambda_mask >= 0, "
                        f"got {self.update_every} and {self.lambda_mask}.")
    prune.dmad_bound(0, 1, self.rule)  # ValueError naming the rules for an unknown one
    super().__init__(config, **kwargs)
    self.roles = {g: self._mask_roles(g) for g in self.GENERATORS}
    self._macs_cache: dict[tuple[Any, ...], int] = {}

  # -- networks --------------------------------------------------------------------------------

  def generator_layers(self, name: str) -> factory.Layers:
    spec = self.config.model.generator
    base = factory.get(spec.get("layers", "float") or "float",
                       **dict(spec.get("layer_kwargs", {}) or {}))
    return base.replace(gate=functools.partial(prune.MaskGate,
                                               official_clamp=self.official_clamp))

  def _mask_roles(self, name: str) -> dict[str, tuple[str, ...]]:
    """{"group": residual-stream gates, "sampling": ..., "ordinary": ...} of generator `name`."""
    spec = self.nets[name].prune_spec()
    group = [g for r in spec.roles.values() if r.residual for g in r.gates]
    if self.lambda_update <= 0:  # the official code then treats the group masks as ordinary
      group = []
    gates = [g for r in spec.roles.values() for g in r.gates if g not in group]
    sampling = [g for g in gates if self.sampling_gates.search(g)]
    ordinary = [g for g in gates if g not in sampling]
    return {"group": tuple(group), "sampling": tuple(sampling), "ordinary": tuple(ordinary)}

  # -- state -----------------------------------------------------------------------------------

  def init_extra(self, rng: jax.Array, example_batch: Batch, params: Any) -> dict[str, Any]:
    extra = super().init_extra(rng, example_batch, params)
    coeff, stopped = {}, {}
    for g in self.GENERATORS:
      masks = prune.mask_params(params[g])
      group = self.roles[g]["group"]
      # The official coefficients start at 1 for every residual channel.
      # (A generator without a residual group keeps a placeholder: checkpoints refuse empty
      # arrays.)
      coeff[g] = jnp.ones_like(masks[group[0]]) if group else jnp.ones((1,), jnp.float32)
      stopped[g] = jnp.zeros((), jnp.bool_)
    return {**extra, "dmad": {"coeff": coeff, "stopped": stopped,
                              "bound": {g: jnp.ones((), jnp.float32) for g in self.GENERATORS}}}

  # -- loss ------------------------------------------------------------------------------------

  def mask_loss(self, params: Any, state: TrainState) -> jax.Array:
    """sum over generators of `prune.dmad_mask_loss` at each generator's bound (unweighted)."""
    total = jnp.zeros((), jnp.float32)
    d = self.dmad
    for g in self.GENERATORS:
      masks = prune.mask_params(params[g])
      roles, bound = self.roles[g], state.extra["dmad"]["bound"][g]
      total = total + prune.dmad_mask_loss(
          [masks[k] for k in roles["ordinary"]], [masks[k] for k in roles["sampling"]],
          [masks[k] for k in roles["group"]], bound, state.extra["dmad"]["coeff"][g],
          kind=d.get("kind", "relu"), sampling_kind=d.get("sampling_kind", "bound"),
          sampling_coeff=float(d.get("sampling_coeff", 100.0)))
    return total

  def generator_loss(self, params: Any, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    loss, aux = super().generator_loss(params, state, batch, rng)
    mask = self.mask_loss(params, state) * self.lambda_mask
    return loss + mask, {**aux, "metrics": {**aux["metrics"], "mask_weight": mask}}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Any]:
    state, metrics = super().train_step(state, batch)
    metrics = dict(metrics)
    for g in self.GENERATORS:
      metrics[f"bound_{g}"] = state.extra["dmad"]["bound"][g]
    return state, metrics

  # -- bound updates (host) --------------------------------------------------------------------

  def _total(self) -> float:
    total = float(self.total_steps)
    if self.dmad.get("official_total", False):
      total *= float(self.config.data.batch_size)
    return total

  def on_epoch_end(self, state: TrainState, epoch: int, context: HookContext) -> TrainState:
    """One official `update_masklayer` every `update_every` epochs (module docstring)."""
    if (epoch + 1) % self.update_every:
      return state
    params = jax.device_get(state.params)
    extra = jax.device_get(state.extra["dmad"])
    step = int(jax.device_get(state.step))
    new_bound = float(prune.dmad_bound(step, self._total(), self.rule))
    coeff, stopped, bounds, log = dict(extra["coeff"]), dict(extra["stopped"]), {}, {}
    new_params, model_state = dict(params), dict(state.model_state)
    for g in self.GENERATORS:
      b = float(extra["bound"][g])
      masks = {k: np.asarray(v) for k, v in prune.mask_params(params[g]).items()}
      group = self.roles[g]["group"]
      if group:
        coeff[g] = np.asarray(prune.dmad_group_coefficients(
            np.stack([masks[k] for k in group]), b, self.lambda_update))
      g_params = params[g]
      if not bool(stopped[g]):
        macs = self.implied_macs(g, masks, b)
        log[f"implied_macs_{g}"] = macs
        if 0 < self.macs_targets[g] and macs <= self.macs_targets[g]:
          g_params = prune.binarize_masks(g_params, b)
          stopped[g] = np.asarray(True)
        elif self.frozen_threshold is not None:
          g_params = self._freeze_sparse(g_params, masks, b)
      bounds[g] = 0.0 if bool(stopped[g]) else new_bound
      new_params[g] = g_params
      model_state[g] = prune.set_bound(model_state[g], bounds[g])
      log[f"bound_{g}"] = bounds[g]
    if context.writer is not None:
      context.writer.write(step, "dmad", log)
    dmad = {"coeff": {g: jnp.asarray(v, jnp.float32) for g, v in coeff.items()},
            "stopped": {g: jnp.asarray(v, jnp.bool_) for g, v in stopped.items()},
            "bound": {g: jnp.asarray(v, jnp.float32) for g, v in bounds.items()}}
    return state.replace(params=new_params, model_state=model_state,
                         extra={**state.extra, "dmad": dmad})

  def _targets(self, target: Any) -> dict[str, float]:
    """`dmad.macs_target` per generator: one number for all, or {generator: MACs} (the official
    `--AtoB_macs_threshold` / `--BtoA_macs_threshold`); a generator left out never stops early."""
    if isinstance(target, (Mapping, ml_collections.ConfigDict)):
      target = dict(target)
      unknown = sorted(set(target) - set(self.GENERATORS))
      if unknown:
        raise ConfigError(f"config.dmad.macs_target names {unknown}; this method's generators "
                          f"are {list(self.GENERATORS)}.")
      return {g: float(target.get(g, 0) or 0) for g in self.GENERATORS}
    return {g: float(target or 0) for g in self.GENERATORS}

  def _freeze_sparse(self, g_params: Any, masks: dict[str, np.ndarray], bound: float) -> Any:
    """Official Pix2Pix `update_sparsity_factor`: binarise the gates sparser than the threshold."""
    frozen = {k for k, m in masks.items()
              if np.mean(m < -bound) > float(self.frozen_threshold)}
    if not frozen:
      return g_params

    def freeze(path, leaf):
      keys = [str(getattr(p, "key", p)) for p in path]
      if keys[-1] == "mask" and "/".join(keys[:-1]) in frozen:
        return np.where(np.asarray(leaf) >= -bound, 1.0, -1.0).astype(np.asarray(leaf).dtype)
      return leaf
    return jax.tree_util.tree_map_with_path(freeze, g_params)

  def implied_macs(self, name: str, masks: dict[str, np.ndarray], bound: float) -> int:
    """MACs of the generator `name`'s masks imply at `bound` (the early-stop count)."""
    model, widths = implied_generator(self.nets[name], masks, bound, self.threshold)
    key = (name, tuple(sorted(widths.items())))
    if key not in self._macs_cache:  # widths change slowly between bound updates
      self._macs_cache[key] = generator_macs(
          model, int(self.dmad.get("macs_input_size", 256)), self._in_channels())
    return self._macs_cache[key]

  def _in_channels(self) -> int:
    return int(self.dmad.get("input_channels", 3))

  def final_report(self, state: TrainState) -> dict[str, Any]:
    """`dmad_search.json`: per generator the bound, the stop flag, implied widths and MACs."""
    params = jax.device_get(state.params)
    extra = jax.device_get(state.extra["dmad"])
    report = {}
    for g in self.GENERATORS:
      masks = {k: np.asarray(v) for k, v in prune.mask_params(params[g]).items()}
      b = float(extra["bound"][g])
      model, widths = implied_generator(self.nets[g], masks, b, self.threshold)
      report[g] = {"bound": b, "stopped": bool(extra["stopped"][g]), "widths": widths,
                   "macs": generator_macs(model, int(self.dmad.get("macs_input_size", 256)),
                                          self._in_channels())}
    if self.workdir and jax.process_index() == 0:
      with open(os.path.join(self.workdir, "dmad_search.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return {f"{g}/macs": r["macs"] for g, r in report.items()}


class CycleGANSearch(_MaskSearch, CycleGAN):
  """DMAD search on CycleGAN ("dmad_cyclegan"): lambda_mask 1e-3, sampling masks as upconv_bound."""
  DEFAULT_LAMBDA_MASK = 1e-3
  DEFAULT_SAMPLING_GATES = CYCLEGAN_SAMPLING_GATES


class Pix2PixSearch(_MaskSearch, Pix2Pix):
  """DMAD search on Pix2Pix ("dmad_pix2pix"): lambda_mask 1e-2, every mask ordinary."""
  DEFAULT_LAMBDA_MASK = 1e-2
