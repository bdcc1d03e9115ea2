"""optax transforms from `config.optim`: optimizer and schedule registries, gradient clipping,
weight decay and regex parameter groups.

The transform `make_optimizer` builds is, in order:

1. `grad_clip > 0`: clip the gradients of every parameter the optimizer updates to one global L2
   norm, with `torch.nn.utils.clip_grad_norm_` semantics (`clip_grad_norm`);
2. per parameter group (`groups`, see `make_optimizer`): the registered optimizer `name` with the
   learning-rate schedule `schedule`; weight decay is coupled L2 added to the gradient before
   momentum, as PyTorch's SGD/Adam `weight_decay` (every paper here trains with PyTorch
   semantics); `adamw` decouples it.

Keys of `config.optim` (defaults in brackets):
  name ["sgd"]: "sgd" (momentum [0.9], nesterov [False]), "adam" (b1 [0.9], b2 [0.999],
    eps [1e-8]), "adamw" (b1, b2, eps) or a name added with `register_optimizer`.
  learning_rate, weight_decay [0.0], grad_clip [0.0 = no clipping].
  schedule ["constant"]: one of `schedule_names()`; its keys are listed at `make_schedule`.
  groups [[]]: regex parameter groups.

Users add optimizers and schedules without touching this file:

  >>> builder.register_schedule("halve_each_epoch", lambda cfg, total, spe:
  ...     optax.exponential_decay(cfg.learning_rate, spe, 0.5, staircase=True))
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcompress.errors import ConfigError
from jaxcompress.optim import groups as groups_lib

# (config.optim block, total steps, steps per epoch) -> step -> learning rate.
ScheduleFn = Callable[[ml_collections.ConfigDict, int, int], optax.Schedule]
# (config.optim block, learning-rate schedule) -> the transform, weight decay included.
OptimizerFn = Callable[[ml_collections.ConfigDict, optax.Schedule], optax.GradientTransformation]

_SCHEDULES: dict[str, ScheduleFn] = {}
_OPTIMIZERS: dict[str, OptimizerFn] = {}


# ------------------------------------------------------------------------------------ registries
def register_schedule(name: str, fn: ScheduleFn | None = None, *,
                      override: bool = False) -> Any:
  """Registers a learning-rate schedule under `name` (usable as a decorator when `fn` is None).

  Args:
    name: the `config.optim.schedule` value that selects it.
    fn: `fn(cfg, total_steps, steps_per_epoch) -> optax.Schedule`, with `cfg` the optimizer
      block (or a group's block) it is built for.
    override: replace an existing schedule of that name (otherwise a ValueError).

  Returns:
    `fn`, or a decorator registering the function it wraps.
  """
  def add(f: ScheduleFn) -> ScheduleFn:
    if name in _SCHEDULES and not override:
      raise ValueError(f"A schedule named {name!r} is registered already; pass override=True "
                       "to replace it.")
    _SCHEDULES[name] = f
    return f
  return add if fn is None else add(fn)


def register_optimizer(name: str, fn: OptimizerFn | None = None, *,
                       override: bool = False) -> Any:
  """Registers an optimizer under `name` (usable as a decorator when `fn` is None).

  Args:
    name: the `config.optim.name` value that selects it.
    fn: `fn(cfg, learning_rate) -> optax.GradientTransformation` with `learning_rate` an optax
      schedule; it applies `cfg.weight_decay` itself (`with_coupled_weight_decay` gives the
      PyTorch form). Gradient clipping and groups are added around it by `make_optimizer`.
    override: replace an existing optimizer of that name (otherwise a ValueError).

  Returns:
    `fn`, or a decorator registering the function it wraps.
  """
  def add(f: OptimizerFn) -> OptimizerFn:
    if name in _OPTIMIZERS and not override:
      raise ValueError(f"An optimizer named {name!r} is registered already; pass override=True "
                       "to replace it.")
    _OPTIMIZERS[name] = f
    return f
  return add if fn is None else add(fn)


def schedule_names() -> list[str]:
  """The registered schedule names."""
  return sorted(_SCHEDULES)


def optimizer_names() -> list[str]:
  """The registered optimizer names."""
  return sorted(_OPTIMIZERS)


# ------------------------------------------------------------------------------------ schedules
def _epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  # round, not int(): 0.3 epochs * 10 steps is 2.9999999999999996 in floating point.
  return int(round(float(epochs) * steps_per_epoch))


def staircase(boundaries: list[int], values: list[float]) -> optax.Schedule:
  """Piecewise-constant schedule: `values[k]` where k boundaries are <= the step.

  Args:
    boundaries: non-decreasing step indices; the value changes AT each boundary (the step that
      equals a boundary already uses the next value, as torch's MultiStepLR at its milestones).
    values: len(boundaries) + 1 learning rates.

  Returns:
    An optax schedule (jit-able: a table look-up, no Python branches on the step).
  """
  if len(values) != len(boundaries) + 1:
    raise ValueError(f"staircase needs len(boundaries) + 1 values, got {len(boundaries)} "
                     f"boundaries and {len(values)} values.")
  # NumPy constants: the builder also runs inside a traced `init`.
  table = np.asarray(values, np.float64).astype(np.float32)
  edges = np.asarray(boundaries, np.int32)

  def schedule(count):
    # #{boundaries <= count}, i.e. torch's bisect_right(milestones, epoch).
    k = jnp.sum(jnp.asarray(count, jnp.int32) >= edges) if edges.size else 0
    return jnp.asarray(table)[k]
  return schedule


def _constant(cfg: ml_collections.ConfigDict, total_steps: int,
              steps_per_epoch: int) -> optax.Schedule:
  del total_steps, steps_per_epoch
  return optax.constant_schedule(cfg.learning_rate)


def _cosine(cfg: ml_collections.ConfigDict, total_steps: int,
            steps_per_epoch: int) -> optax.Schedule:
  # Per-step cosine to 0 over the run (torch CosineAnnealingLR with T_max = total steps), after
  # a linear warm-up from 0 over warmup_epochs when set.
  lr = cfg.learning_rate
  warmup = int(cfg.get("warmup_epochs", 0) * steps_per_epoch)
  if warmup:
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  return optax.cosine_decay_schedule(lr, max(total_steps, 1))


def _step(cfg: ml_collections.ConfigDict, total_steps: int,
          steps_per_epoch: int) -> optax.Schedule:
  # torch StepLR(step_size=decay_epochs, gamma=decay_factor): lr * factor^floor(step / every).
  del total_steps
  every = int(cfg.decay_epochs * steps_per_epoch)
  return optax.exponential_decay(cfg.learning_rate, every, cfg.get("decay_factor", 0.5),
                                 staircase=True)


def _linear(cfg: ml_collections.ConfigDict, total_steps: int,
            steps_per_epoch: int) -> optax.Schedule:
  # torch LinearLR(start_factor=1, end_factor=end/lr, total_iters=steps after warm-up), stepped
  # per step; the optional warm-up rises linearly from 0 to learning_rate.
  lr = cfg.learning_rate
  end = cfg.get("end_learning_rate", 0.0)
  warmup = int(cfg.get("warmup_epochs", 0) * steps_per_epoch)
  decay = optax.linear_schedule(lr, end, max(total_steps - warmup, 1))
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _multistep(cfg: ml_collections.ConfigDict, total_steps: int,
               steps_per_epoch: int) -> optax.Schedule:
  # torch MultiStepLR: lr * gamma^(number of milestones <= epoch), here per step.
  del total_steps
  epochs = list(cfg.get("milestones", None) or [])
  steps = list(cfg.get("milestone_steps", None) or [])
  if bool(epochs) == bool(steps):
    raise ConfigError("schedule 'multistep' needs exactly one of optim.milestones (epochs, e.g. "
                      "[150, 225]) or optim.milestone_steps (steps); got "
                      f"milestones={epochs}, milestone_steps={steps}.")
  bounds = ([_epochs_to_steps(e, steps_per_epoch) for e in epochs] if epochs
            else [int(s) for s in steps])
  if bounds != sorted(bounds):
    raise ConfigError(f"optim.milestones / milestone_steps must be non-decreasing, got "
                      f"{epochs or steps}; sort them.")
  gamma = float(cfg.get("gamma", 0.1))
  values = [float(cfg.learning_rate)]
  for _ in bounds:  # repeated multiplication, as torch's chainable form (repeats multiply twice)
    values.append(values[-1] * gamma)
  return staircase(bounds, values)


def _piecewise(cfg: ml_collections.ConfigDict, total_steps: int,
               steps_per_epoch: int) -> optax.Schedule:
  # An explicit table: from epoch e_k on the learning rate is lr_k; before the first entry it is
  # learning_rate.
  del total_steps
  table = list(cfg.get("lr_table", None) or [])
  try:
    pairs = [(float(e), float(v)) for e, v in table]
  except (TypeError, ValueError) as e:
    raise ConfigError(f"optim.lr_table must be a list of (epoch, learning_rate) pairs, e.g. "
                      f"[(0, 0.1), (30, 0.01)]; got {table!r}.") from e
  if not pairs:
    raise ConfigError("schedule 'piecewise' needs optim.lr_table, a list of (epoch, "
                      "learning_rate) pairs, e.g. [(0, 0.1), (30, 0.01), (60, 0.001)].")
  bounds = [_epochs_to_steps(e, steps_per_epoch) for e, _ in pairs]
  if bounds != sorted(bounds):
    raise ConfigError(f"optim.lr_table epochs must be non-decreasing, got {table!r}; sort it.")
  return staircase(bounds, [float(cfg.learning_rate)] + [v for _, v in pairs])


register_schedule("constant", _constant)
register_schedule("cosine", _cosine)
register_schedule("warmup_cosine", _cosine)
register_schedule("step", _step)
register_schedule("linear", _linear)
register_schedule("multistep", _multistep)
register_schedule("piecewise", _piecewise)


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
  """Learning-rate schedule `cfg.schedule` (per step; epochs are converted to steps).

  Built-in schedules and their keys (epochs may be fractional):
    "constant": learning_rate.
    "cosine" / "warmup_cosine": cosine from learning_rate to 0 over the run; with
      warmup_epochs > 0 a linear warm-up from 0 first (cosine over the rest).
    "step": learning_rate * decay_factor [0.5] ^ floor(step / (decay_epochs * steps_per_epoch))
      (torch StepLR).
    "linear": linear from learning_rate to end_learning_rate [0] over the run (after an optional
      linear warm-up from 0 over warmup_epochs) (torch LinearLR).
    "multistep": learning_rate * gamma [0.1] ^ (number of milestones reached), milestones in
      epochs (milestones) or steps (milestone_steps) (torch MultiStepLR).
    "piecewise": lr_table [(epoch, learning_rate), ...]: from each epoch on its learning rate;
      learning_rate before the first entry.

  Args:
    cfg: the optimizer block (learning_rate, schedule and the schedule's keys).
    total_steps: length of the run.
    steps_per_epoch: steps in one epoch.

  Returns:
    An optax schedule (step -> learning rate), traced inside the step.

  Raises:
    ConfigError: unknown schedule name (the message lists the registered ones) or bad keys.
  """
  kind = cfg.get("schedule", "constant")
  if kind not in _SCHEDULES:
    raise ConfigError(f"Unknown schedule {kind!r}; set optim.schedule to one of "
                      f"{', '.join(schedule_names())} (or register one with "
                      "jaxcompress.optim.builder.register_schedule).")
  return _SCHEDULES[kind](cfg, total_steps, steps_per_epoch)


# ----------------------------------------------------------------------------------- optimizers
def with_coupled_weight_decay(core: optax.GradientTransformation,
                              weight_decay: float) -> optax.GradientTransformation:
  """PyTorch's coupled weight decay: g + weight_decay * w before `core` (none when 0).

  Args:
    core: the optimizer.
    weight_decay: L2 coefficient.

  Returns:
    `chain(add_decayed_weights(weight_decay), core)`, or `core` itself when weight_decay is 0.
  """
  return optax.chain(optax.add_decayed_weights(weight_decay), core) if weight_decay else core


def _sgd(cfg: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  core = optax.sgd(lr, momentum=cfg.get("momentum", 0.9) or None,
                   nesterov=cfg.get("nesterov", False))
  return with_coupled_weight_decay(core, cfg.get("weight_decay", 0.0))


def _adam(cfg: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  core = optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8))
  return with_coupled_weight_decay(core, cfg.get("weight_decay", 0.0))


def _adamw(cfg: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
  # Decoupled decay (Loshchilov & Hutter, arXiv 1711.05101): w -= lr * wd * w after Adam.
  return optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                     eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0))


register_optimizer("sgd", _sgd)
register_optimizer("adam", _adam)
register_optimizer("adamw", _adamw)


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
  """Global-norm gradient clipping with `torch.nn.utils.clip_grad_norm_` semantics.

  total = sqrt(sum of squares of every gradient entry) (computed in float32), then every
  gradient is multiplied by min(1, max_norm / (total + 1e-6)), as PyTorch (the 1e-6 included; a
  non-finite norm makes the gradients non-finite, as torch with error_if_nonfinite=False). optax's
  `clip_by_global_norm` differs by that epsilon only.

  Args:
    max_norm: the largest global norm (> 0).

  Returns:
    A stateless GradientTransformation (state `optax.EmptyState()`, as clip_by_global_norm).
  """
  def update_fn(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    total = jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
                     ) if leaves else jnp.zeros((), jnp.float32)
    scale = jnp.minimum(jnp.float32(max_norm) / (total + 1e-6), 1.0)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state
  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _single(cfg: ml_collections.ConfigDict, total_steps: int,
            steps_per_epoch: int) -> optax.GradientTransformation:
  name = cfg.get("name", "sgd")
  if name not in _OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer {name!r}; set optim.name to one of "
                      f"{', '.join(optimizer_names())} (or register one with "
                      "jaxcompress.optim.builder.register_optimizer).")
  return _OPTIMIZERS[name](cfg, make_schedule(cfg, total_steps, steps_per_epoch))


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any, total_steps: int,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """The optax transform for `params`.

  `cfg.grad_clip > 0` first clips all gradients to that global norm (`clip_grad_norm`, one norm
  over every parameter this transform updates, before weight decay and groups, as PyTorch's
  `clip_grad_norm_(model.parameters(), grad_clip)` before `optimizer.step()`).

  `cfg.groups`, when present, is a list of {"regex": ..., **overrides}: each group gets the
  base block updated with its overrides, parameters take the first matching group, and
  parameters matching none use the base block.

  Args:
    cfg: the `config.optim` block.
    params: the parameters (only their paths are read).
    total_steps: run length in steps.
    steps_per_epoch: steps per epoch.

  Returns:
    An optax GradientTransformation.

  Raises:
    ConfigError: unknown optimizer/schedule, negative grad_clip, or grad_clip inside a group.
  """
  clip = float(cfg.get("grad_clip", 0.0) or 0.0)
  if clip < 0:
    raise ConfigError(f"optim.grad_clip must be >= 0 (0 = no clipping), got {clip}.")
  group_cfgs = list(cfg.get("groups", []) or [])
  if not group_cfgs:
    tx = _single(cfg, total_steps, steps_per_epoch)
  else:
    base = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    base.pop("groups", None)
    transforms, rules = {}, []
    for i, group in enumerate(group_cfgs):
      group = dict(group)
      if "grad_clip" in group:
        raise ConfigError(f"optim.groups[{i}] sets grad_clip, but clipping uses one global norm "
                          "over all parameters; set optim.grad_clip instead.")
      regex = group.pop("regex")
      label = f"group{i}"
      transforms[label] = _single(ml_collections.ConfigDict({**base, **group}), total_steps,
                                  steps_per_epoch)
      rules.append((regex, label))
    transforms["default"] = _single(ml_collections.ConfigDict(base), total_steps, steps_per_epoch)
    rules.append((".*", "default"))
    tx = optax.multi_transform(transforms, groups_lib.label_params(params, rules))
  return optax.chain(clip_grad_norm(clip), tx) if clip else tx


def apply_updates(tx: optax.GradientTransformation, grads: Any, opt_state: Any,
                  params: Any) -> tuple[Any, Any]:
  """One optimizer step on any parameter tree: `tx.update`, then `optax.apply_updates`.

  For optimizers whose parameters are not `TrainState.params` (NAS architecture parameters, a
  teacher in `extra`); `TrainState.apply_gradients` covers the common case.

  Args:
    tx: the optimizer.
    grads: gradients, with `params`' structure.
    opt_state: `tx`'s state for these parameters.
    params: the parameters.

  Returns:
    (new params, new opt_state).
  """
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state
