"""The GAN learning-rate schedule: constant for `n_epochs`, then linear decay over `n_epochs_decay`.

Official `get_scheduler(optimizer, opt)` with `lr_policy='linear'` (junyanz/pytorch-CycleGAN-and-
pix2pix `models/networks.py`; SJLeo/DMAD `utils/util.py`): a `LambdaLR` with

  lr_l(epoch) = 1 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1),

stepped once at the end of every epoch, so the e-th epoch (from 0) trains at lr * lr_l(e). With the
defaults (epoch_count 1, 100 + 100 epochs) the first 100 epochs use lr, epoch 100 uses
lr * 100/101 and the last, epoch 199, lr / 101.

Registered as the optimizer-builder schedule "gan_linear" (`config.optim.schedule`; keys
`n_epochs`, `n_epochs_decay`, `epoch_count` [1]); the step is converted to the epoch with the
run's steps per epoch.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

from jaxcompress.errors import ConfigError
from jaxcompress.optim import builder


def linear_decay_factor(epoch: jnp.ndarray | int, n_epochs: int, n_epochs_decay: int,
                        epoch_count: int = 1) -> jnp.ndarray:
  """The official `lambda_rule(epoch)`: 1 - max(0, epoch + epoch_count - n_epochs) / (n_decay + 1).

  Args:
    epoch: the scheduler's epoch (0 for the first epoch trained).
    n_epochs: epochs at the initial learning rate.
    n_epochs_decay: epochs of linear decay.
    epoch_count: the official `--epoch_count` (1; the first epoch's number).

  Returns:
    The learning-rate multiplier (float32).
  """
  epoch = jnp.asarray(epoch, jnp.float32)
  return 1.0 - jnp.maximum(0.0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


def linear_decay_schedule(learning_rate: float, n_epochs: int, n_epochs_decay: int,
                          steps_per_epoch: int, epoch_count: int = 1) -> optax.Schedule:
  """`linear_decay_factor` per epoch as an optax schedule in steps.

  Args:
    learning_rate: the initial learning rate (official `--lr`, 2e-4).
    n_epochs: epochs at the initial learning rate.
    n_epochs_decay: epochs of linear decay.
    steps_per_epoch: optimizer steps per epoch.
    epoch_count: the official `--epoch_count`.

  Returns:
    step -> learning_rate * lr_l(step // steps_per_epoch) (jit-able).
  """
  if n_epochs < 0 or n_epochs_decay < 0 or steps_per_epoch < 1:
    raise ConfigError(f"gan_linear needs n_epochs >= 0, n_epochs_decay >= 0 and steps_per_epoch >= "
                      f"1; got {n_epochs}, {n_epochs_decay}, {steps_per_epoch}.")

  def schedule(count):
    epoch = jnp.asarray(count, jnp.int32) // steps_per_epoch
    return learning_rate * linear_decay_factor(epoch, n_epochs, n_epochs_decay, epoch_count)
  return schedule


def _from_config(cfg: ml_collections.ConfigDict, total_steps: int,
                 steps_per_epoch: int) -> optax.Schedule:
  del total_steps
  if cfg.get("n_epochs", None) is None or cfg.get("n_epochs_decay", None) is None:
    raise ConfigError("optim.schedule 'gan_linear' needs optim.n_epochs (epochs at the initial "
                      "learning rate) and optim.n_epochs_decay (epochs of linear decay), e.g. "
                      "100 and 100 as the official CycleGAN / pix2pix scripts.")
  return linear_decay_schedule(float(cfg.learning_rate), int(cfg.n_epochs),
                               int(cfg.n_epochs_decay), steps_per_epoch,
                               int(cfg.get("epoch_count", 1)))


if "gan_linear" not in builder.schedule_names():
  builder.register_schedule("gan_linear", _from_config)
