"""RBNN: Rotated Binary Neural Network (Lin et al., NeurIPS 2020, arXiv 2009.13055).

Classification with the `"rbnn"` layer set (`quant.layers.RBNNConv`: 1-bit weights and
activations, bi-rotated latent weights, training-aware sign surrogate) plus one epoch hook, run
by the engine before the first gradient step of every epoch (epoch 0 included):

1. `(t, k) = quant.rbnn_schedule(epoch, num_epochs)` is written into every layer's
   `"rbnn_schedule"` variables (a traced value in the state: nothing recompiles per epoch);
2. the bi-rotation `(R1, R2)` of every RBNN layer is re-solved on the CURRENT latent weights,
   warm-started from the previous rotations, `rounds` (official 3) alternations each
   (`quant.rotation.rbnn_rotate_params`), and stored in the `"rbnn"` collection;
3. the signs of the weights the layers actually binarise, `sign(w2 + |sin theta| (R^T w2 - w2))`
   with the new rotations, are kept in `state.extra`; the fraction that changed since the previous
   epoch's start is `flip_ratio`. `rotation_flip_ratio` is the fraction where that binarised sign
   differs from the sign of the unrotated standardised weight (the paper's "~50 % weight flips").

Both ratios, and `t`, `k`, are added to the train metrics, so they land in metrics.jsonl.
`flip_ratio` is 0 for epoch 0 (nothing to compare with).

Config block `config.rbnn` (all optional; defaults are the official code's):
  rounds: alternations of the rotation solve per epoch (3).
  t_min, t_max: the surrogate schedule's T_min, T_max (1e-2, 10).
  rotate: re-solve the rotations each epoch (True). False keeps the Haar-random init rotations
    (an ablation; the layer still mixes by |sin theta|).
  rotation_every: solve every `rotation_every` epochs (official `--rotation_update`, 1).
  theta_init: "uniform" (official code: `rand * pi / 2`, each angle uniform in [0, pi/2)) or
    "pi_2" (every angle pi/2, the layer's own init; the latent weights then get no gradient
    through the mixed weight until weight decay moves theta, since d w3 / d w = 1 - |sin theta|
    and d w3 / d theta = cos theta (R w - w) both vanish at pi/2). On digits (ResNet-20, batch 128,
    30 epochs, T_max 10) "pi_2" peaked at 0.27 eval accuracy, "uniform" at 0.72.

The paper-vs-code switches of the layer itself (standardisation, stop-gradient on the rotated
weight, activation surrogate t/k) are fixed to the official code in `quant.rotation.rbnn_conv2d`.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.methods.classification import Classification
from jaxcompress.quant import estimators, rotation
from jaxcompress.quant import layers as quant_layers
from jaxcompress.train.state import TrainState

ROTATIONS = "rbnn"            # r1 / r2 per RBNN layer
SCHEDULE = "rbnn_schedule"    # t / k per RBNN layer


def _rbnn_layers(params: Any, rotations: Any, prefix: tuple[str, ...] = ()) -> list[tuple]:
  """(path, layer params, layer rotations) for every RBNN layer, in a fixed order."""
  if "r1" in rotations and "r2" in rotations:
    return [(prefix, params, rotations)]
  out = []
  for key in sorted(rotations):
    out += _rbnn_layers(params[key], rotations[key], prefix + (key,))
  return out


def binarized_weight_signs(params: Any, rotations: Any) -> dict[str, jax.Array]:
  """`sign(w3)` (int8) of every RBNN layer: the weight bits the forward pass actually uses.

  `w3 = w2 + |sin theta| (R1^T X R2 - w2)`, `w2` the standardised latent kernel, as in
  `rotation.rbnn_conv2d`. Keys are the layers' module paths joined by "/".
  """
  out = {}
  for path, p, r in _rbnn_layers(params, rotations):
    w3 = rotation.rbnn_mixed_weight(p["kernel"], r["r1"], r["r2"], p["theta"])
    out["/".join(path)] = jnp.sign(w3).astype(jnp.int8)
  return out


def _unrotated_signs(params: Any, rotations: Any) -> dict[str, jax.Array]:
  return {"/".join(path): jnp.sign(rotation.standardize_weight(p["kernel"])).astype(jnp.int8)
          for path, p, _ in _rbnn_layers(params, rotations)}


def _uniform_thetas(params: Any, rotations: Any, rng: jax.Array) -> Any:
  """Redraws every RBNN layer's theta uniform in [0, pi/2) (official `torch.rand(O) * pi / 2`)."""
  params = jax.tree.map(lambda x: x, params)  # a copy we may edit in place
  for i, (path, _, _) in enumerate(_rbnn_layers(params, rotations)):
    node = params
    for key in path:
      node = node[key]
    theta = node["theta"]
    node["theta"] = jax.random.uniform(jax.random.fold_in(rng, i), theta.shape, theta.dtype,
                                       0.0, math.pi / 2)
  return params


def _fraction_changed(old: dict[str, jax.Array], new: dict[str, jax.Array]) -> jax.Array:
  total = sum(v.size for v in new.values())
  if not total:
    return jnp.zeros((), jnp.float32)
  changed = sum(jnp.sum(old[k] != new[k]) for k in new)
  return (changed / total).astype(jnp.float32)


class RBNN(Classification):
  """Rotated Binary Neural Network training (see the module docstring)."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    rb = config.get("rbnn", {}) or {}
    self.rounds = int(rb.get("rounds", 3))
    self.t_min = float(rb.get("t_min", 1e-2))
    self.t_max = float(rb.get("t_max", 10.0))
    self.rotate = bool(rb.get("rotate", True))
    self.rotation_every = max(1, int(rb.get("rotation_every", 1)))
    self.theta_init = str(rb.get("theta_init", "uniform"))
    if self.theta_init not in ("uniform", "pi_2"):
      raise ConfigError(f"rbnn.theta_init must be 'uniform' or 'pi_2', got {self.theta_init!r}.")
    # The schedule's E: epochs of the run (num_steps, when set, rounds up to whole epochs).
    self.num_epochs = max(1, math.ceil(self.total_steps / max(self.steps_per_epoch, 1)))

  # ---- model ----
  def apply(self, params: Any, model_state: Any, images: jax.Array, train: bool,
            **kwargs: Any) -> tuple[jax.Array, Any]:
    """Forward; only batch statistics are mutable (rotations and schedule are read-only)."""
    variables = {"params": params, **model_state}
    if train:
      mutable = [k for k in model_state if k not in ("params", ROTATIONS, SCHEDULE)]
      logits, updates = self.model.apply(variables, images, train=True, mutable=mutable, **kwargs)
      return logits, {**model_state, **updates}
    return self.model.apply(variables, images, train=False, **kwargs), model_state

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    state = super().init(rng, example_batch)
    rotations = state.model_state.get(ROTATIONS, {})
    if not rotations:
      raise ConfigError("Method 'rbnn' found no RBNN layers in the model. Set "
                        "config.model.layers = 'rbnn'.")
    params = state.params
    if self.theta_init == "uniform":
      params = _uniform_thetas(params, rotations, jax.random.fold_in(rng, 0x7e7a))
    state = state.replace(params=params)
    signs = binarized_weight_signs(params, rotations)
    extra = dict(state.extra, signs=signs, flip_ratio=jnp.zeros((), jnp.float32),
                 rotation_flip_ratio=jnp.zeros((), jnp.float32),
                 rotated_at_step=jnp.full((), -1, jnp.int32))
    return state.replace(extra=extra)

  # ---- epoch hook ----
  def schedule(self, epoch: Any) -> tuple[jax.Array, jax.Array]:
    """(t, k) of `epoch` (traced)."""
    return estimators.rbnn_schedule(epoch, self.num_epochs, self.t_min, self.t_max)

  def on_epoch_start(self, state: TrainState, epoch: Any) -> TrainState:
    """Sets t/k, re-solves every layer's (R1, R2) on the current weights, records weight flips.

    Pure and jit-able with a traced `epoch`; never touches `state.params` or the optimizer.
    """
    epoch = jnp.asarray(epoch, jnp.int32)
    t, k = self.schedule(epoch)
    model_state = dict(state.model_state)
    model_state[SCHEDULE] = quant_layers.set_rbnn_schedule(model_state[SCHEDULE], t, k)
    rotations = model_state[ROTATIONS]
    if self.rotate:
      solved = rotation.rbnn_rotate_params(state.params, rotations, self.rounds)
      if self.rotation_every > 1:
        due = (epoch % self.rotation_every) == 0
        solved = jax.tree.map(lambda new, old: jnp.where(due, new, old), solved, rotations)
      rotations = solved
      rotated_at = jnp.where(epoch % self.rotation_every == 0, state.step,
                             state.extra["rotated_at_step"])
    else:
      rotated_at = state.extra["rotated_at_step"]
    model_state[ROTATIONS] = rotations
    signs = binarized_weight_signs(state.params, rotations)
    flips = jnp.where(epoch > 0, _fraction_changed(state.extra["signs"], signs), 0.0)
    extra = dict(state.extra, signs=signs, flip_ratio=flips.astype(jnp.float32),
                 rotation_flip_ratio=_fraction_changed(
                     _unrotated_signs(state.params, rotations), signs),
                 rotated_at_step=rotated_at.astype(jnp.int32))
    return state.replace(model_state=model_state, extra=lax.stop_gradient(extra))

  # ---- steps ----
  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    new_state, metrics = super().train_step(state, batch)
    layer0 = _first_leaf_dict(state.model_state[SCHEDULE])
    metrics = dict(metrics, flip_ratio=state.extra["flip_ratio"],
                   rotation_flip_ratio=state.extra["rotation_flip_ratio"],
                   t=layer0["t"].astype(jnp.float32), k=layer0["k"].astype(jnp.float32))
    return new_state, metrics


def _first_leaf_dict(tree: Any) -> Any:
  """The first dict holding `t`/`k` (every layer holds the same values)."""
  if "t" in tree and "k" in tree:
    return tree
  return _first_leaf_dict(tree[sorted(tree)[0]])
