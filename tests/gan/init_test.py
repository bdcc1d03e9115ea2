"""Tests for jaxcompress.gan.init: the official `init_weights(net, 'normal', 0.02)`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress.gan import init as init_lib


class InitTest(absltest.TestCase):

  def test_kernels_scales_biases_and_other_leaves(self):
    params = {"conv": {"kernel": jnp.ones((4, 4, 32, 64)), "bias": jnp.ones((64,))},
              "norm": {"scale": jnp.zeros((4096,)), "bias": jnp.ones((4096,))},
              "gate": {"mask": jnp.full((8,), 3.0)}}
    out = init_lib.init_weights(params, jax.random.key(0), gain=0.02)
    k = np.asarray(out["conv"]["kernel"])
    self.assertAlmostEqual(float(k.mean()), 0.0, delta=1e-3)
    self.assertAlmostEqual(float(k.std()), 0.02, delta=5e-4)
    s = np.asarray(out["norm"]["scale"])
    self.assertAlmostEqual(float(s.mean()), 1.0, delta=2e-3)
    self.assertAlmostEqual(float(s.std()), 0.02, delta=1e-3)
    np.testing.assert_array_equal(out["conv"]["bias"], 0.0)
    np.testing.assert_array_equal(out["norm"]["bias"], 0.0)
    np.testing.assert_array_equal(out["gate"]["mask"], 3.0)  # DMAD's masks keep their init
    other = init_lib.init_weights(params, jax.random.key(1))
    self.assertFalse(np.allclose(other["conv"]["kernel"], k))


if __name__ == "__main__":
  absltest.main()
