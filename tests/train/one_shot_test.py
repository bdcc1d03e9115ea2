"""`one_shot.jit_once`: the init program compiled for compile speed draws the same parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import models
from jaxcompress.train import one_shot


class JitOnceTest(parameterized.TestCase):

  @parameterized.parameters("float", "rbnn")
  def test_bit_identical_to_jit(self, layers):
    # The level-1 compile must not change a single drawn value (level 0 did), with threefry
    # keys folded per parameter path as flax does, batch statistics and RBNN rotations included.
    model = models.build("resnet20", layers=layers, num_classes=10)
    x = jnp.zeros((2, 8, 8, 3))
    init = lambda key, x: model.init(key, x, train=False)
    expected = jax.jit(init)(jax.random.key(3), x)
    got = one_shot.jit_once(init)(jax.random.key(3), x)
    self.assertEqual(jax.tree.structure(got), jax.tree.structure(expected))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_keyword_arguments_and_shardings(self):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    fn = one_shot.jit_once(lambda key, *, scale: scale * jax.random.normal(key, (3,)),
                           out_shardings=replicated)
    out = fn(jax.random.key(0), scale=2.0)
    np.testing.assert_allclose(out, 2.0 * jax.random.normal(jax.random.key(0), (3,)), rtol=1e-6)
    self.assertEqual(out.sharding, replicated)


if __name__ == "__main__":
  absltest.main()
