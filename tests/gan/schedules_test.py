"""Tests for jaxcompress.gan.schedules: the official `lambda_rule` of `get_scheduler('linear')`.

Reference (junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`, SJLeo/DMAD `utils/util.py`):
lr_l = 1 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1), LambdaLR stepped at
the end of every epoch, so the e-th epoch (from 0) trains at lr * lr_l(e).
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax
from absl.testing import absltest

from jaxcompress.errors import ConfigError
from jaxcompress.gan import schedules
from jaxcompress.optim import builder


def lambda_rule(epoch, n_epochs, n_epochs_decay, epoch_count=1):
  return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


class ScheduleTest(absltest.TestCase):

  def test_official_values_at_the_boundaries(self):
    lr, spe = 2e-4, 7
    fn = jax.jit(schedules.linear_decay_schedule(lr, 100, 100, spe))
    for epoch, factor in ((0, 1.0), (99, 1.0), (100, 100 / 101), (150, 50 / 101),
                          (199, 1 / 101)):
      self.assertAlmostEqual(factor, lambda_rule(epoch, 100, 100))
      for k in (0, spe - 1):  # constant within the epoch
        np.testing.assert_allclose(fn(epoch * spe + k), lr * factor, rtol=1e-5)

  def test_every_epoch_against_the_rule(self):
    for n, nd, count in ((3, 5, 1), (0, 4, 1), (2, 2, 3)):
      fn = schedules.linear_decay_schedule(1.0, n, nd, 3, epoch_count=count)
      got = [float(fn(3 * e + 1)) for e in range(n + nd)]
      want = [lambda_rule(e, n, nd, count) for e in range(n + nd)]
      np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_registered_in_the_optimizer_builder(self):
    cfg = ml_collections.ConfigDict({"name": "adam", "learning_rate": 2e-4, "b1": 0.5,
                                     "schedule": "gan_linear", "n_epochs": 2,
                                     "n_epochs_decay": 2})
    fn = builder.make_schedule(cfg, total_steps=40, steps_per_epoch=10)
    np.testing.assert_allclose([fn(0), fn(19), fn(20), fn(39)],
                               [2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3], rtol=1e-5)
    # The optimizer's own step count drives it: SGD's first update is -lr * g.
    tx = builder.make_optimizer(ml_collections.ConfigDict({**cfg.to_dict(), "name": "sgd",
                                                           "momentum": 0.0}), {}, 40, 10)
    params = {"w": np.zeros(())}
    state = tx.init(params)
    for _ in range(21):  # the 21st update is the first of epoch 2 (count 20)
      updates, state = tx.update({"w": np.ones(())}, state, params)
    np.testing.assert_allclose(updates["w"], -2e-4 * 2 / 3, rtol=1e-5)
    self.assertIsInstance(tx, optax.GradientTransformation)

  def test_missing_keys_name_the_fix(self):
    cfg = ml_collections.ConfigDict({"learning_rate": 1.0, "schedule": "gan_linear"})
    with self.assertRaisesRegex(ConfigError, "n_epochs_decay"):
      builder.make_schedule(cfg, 10, 1)
    with self.assertRaises(ConfigError):
      schedules.linear_decay_schedule(1.0, 1, 1, 0)


if __name__ == "__main__":
  absltest.main()
