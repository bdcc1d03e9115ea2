"""optax transforms from `config.optim` (name, learning rate schedule, weight decay, groups).

Weight decay is coupled L2 added to the gradient before momentum, as PyTorch's SGD/Adam
`weight_decay` (every paper here trains with PyTorch semantics); `adamw` decouples it.
"""
from __future__ import annotations

from typing import Any

import ml_collections
import optax

from jaxcompress.errors import ConfigError
from jaxcompress.optim import groups as groups_lib


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
  """Learning-rate schedule: "constant", "cosine", "warmup_cosine" or "step".

  Args:
    cfg: block with learning_rate, schedule, warmup_epochs, decay_epochs, decay_factor.
    total_steps: length of the run.
    steps_per_epoch: steps in one epoch (warm-up and step decay are given in epochs).

  Returns:
    An optax schedule (step -> learning rate), traced inside the step.
  """
  lr = cfg.learning_rate
  kind = cfg.get("schedule", "constant")
  warmup = int(cfg.get("warmup_epochs", 0) * steps_per_epoch)
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind in ("cosine", "warmup_cosine"):
    if warmup:
      return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if kind == "step":
    every = int(cfg.decay_epochs * steps_per_epoch)
    return optax.exponential_decay(lr, every, cfg.get("decay_factor", 0.5), staircase=True)
  raise ConfigError(f"Unknown schedule {kind!r}; use constant, cosine, warmup_cosine or step.")


def _single(cfg: ml_collections.ConfigDict, total_steps: int,
            steps_per_epoch: int) -> optax.GradientTransformation:
  lr = make_schedule(cfg, total_steps, steps_per_epoch)
  wd = cfg.get("weight_decay", 0.0)
  name = cfg.get("name", "sgd")
  if name == "sgd":
    core = optax.sgd(lr, momentum=cfg.get("momentum", 0.9) or None,
                     nesterov=cfg.get("nesterov", False))
  elif name == "adam":
    core = optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8))
  elif name == "adamw":
    return optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd)
  else:
    raise ConfigError(f"Unknown optimizer {name!r}; use sgd, adam or adamw.")
  return optax.chain(optax.add_decayed_weights(wd), core) if wd else core


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any, total_steps: int,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """The optax transform for `params`.

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
  """
  group_cfgs = list(cfg.get("groups", []) or [])
  if not group_cfgs:
    return _single(cfg, total_steps, steps_per_epoch)
  base = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  base.pop("groups", None)
  transforms, rules = {}, []
  for i, group in enumerate(group_cfgs):
    group = dict(group)
    regex = group.pop("regex")
    label = f"group{i}"
    transforms[label] = _single(ml_collections.ConfigDict({**base, **group}), total_steps,
                                steps_per_epoch)
    rules.append((regex, label))
  transforms["default"] = _single(ml_collections.ConfigDict(base), total_steps, steps_per_epoch)
  rules.append((".*", "default"))
  return optax.multi_transform(transforms, groups_lib.label_params(params, rules))
