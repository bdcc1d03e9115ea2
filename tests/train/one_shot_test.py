"""`one_shot.jit_once`: the init program compiled for compile speed draws the same parameters;
`one_shot.eager_init`: a supernet's init run op by op inside a traced caller, as constants."""
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


class EagerInitTest(absltest.TestCase):

  def test_equals_the_jitted_init_to_rounding_and_uses_the_given_key(self):
    model = models.build("resnet20", num_classes=10)
    x = jnp.zeros((1, 8, 8, 3))
    want = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(5), x)
    got = one_shot.eager_init(model.init, jax.random.key(5), x, train=False)
    self.assertEqual(jax.tree.structure(got), jax.tree.structure(want))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)

  def test_inside_a_traced_caller_the_result_is_constants_from_the_seed(self):
    model = models.build("resnet20", num_classes=10)
    x = jnp.ones((1, 8, 8, 3))
    want = model.init(jax.random.key(7), x, train=False)
    seen = {}

    def init(key, x):
      variables = one_shot.eager_init(model.init, key, x, seed=7, train=False)
      seen["concrete"] = all(not isinstance(l, jax.core.Tracer)
                             for l in jax.tree.leaves(variables))
      return variables

    program = jax.jit(init).lower(jax.random.key(0), x)   # the traced key is replaced by seed 7
    self.assertTrue(seen["concrete"])
    # The program only returns constants: no random-bit generation, no convolution.
    text = program.as_text()
    self.assertNotIn("threefry", text)
    self.assertNotIn("convolution", text)
    got = program.compile()(jax.random.key(0), x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)


if __name__ == "__main__":
  absltest.main()
