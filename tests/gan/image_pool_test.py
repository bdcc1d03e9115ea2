"""Tests for jaxcompress.gan.image_pool: the official ImagePool's semantics, jitted.

Official `util/image_pool.py` (junyanz/pytorch-CycleGAN-and-pix2pix, SJLeo/DMAD): fill up to
`pool_size`, returning each new image; then per image, with probability 1/2 return a uniformly
chosen stored image and store the new one in its slot, else return the new image.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress.gan import image_pool

SHAPE = (2, 2, 1)


def _images(start, n):
  """n distinct images: image k is filled with the value start + k."""
  values = np.arange(start, start + n, dtype=np.float32)
  return jnp.asarray(np.broadcast_to(values[:, None, None, None], (n, *SHAPE)).copy())


def _ids(images):
  return np.asarray(images)[:, 0, 0, 0].astype(int)


class ImagePoolTest(chex.TestCase):

  def test_fills_first_pool_size_images_returning_them(self):
    pool = image_pool.init(50, SHAPE)
    query = jax.jit(image_pool.query)
    for k in range(0, 50, 25):  # 2 batches of 25
      out, pool = query(pool, _images(k, 25), jax.random.key(k))
      np.testing.assert_array_equal(_ids(out), np.arange(k, k + 25))
    self.assertEqual(int(pool["count"]), 50)
    np.testing.assert_array_equal(_ids(pool["images"]), np.arange(50))

  def test_batch_crossing_the_fill_boundary(self):
    pool = image_pool.init(4, SHAPE)
    query = jax.jit(image_pool.query)
    out, pool = query(pool, _images(0, 3), jax.random.key(0))
    out, pool = query(pool, _images(3, 3), jax.random.key(1))
    # Image 3 fills the last slot and comes back; images 4, 5 meet a full pool.
    self.assertEqual(_ids(out)[0], 3)
    self.assertEqual(int(pool["count"]), 4)
    for i in (1, 2):
      self.assertIn(_ids(out)[i], {0, 1, 2, 3, 4, 5})

  def test_full_pool_swaps_with_probability_one_half_and_uniform_slots(self):
    size, draws = 8, 4000
    pool = image_pool.init(size, SHAPE)
    query = jax.jit(image_pool.query)
    _, pool = query(pool, _images(0, size), jax.random.key(0))
    stored_hits, slots = 0, np.zeros(size)
    next_id = 1000
    for t in range(draws // 8):
      before = _ids(pool["images"])
      new = _images(next_id, 8)
      out, after_pool = query(pool, new, jax.random.key(t + 1))
      after = _ids(after_pool["images"])
      # Replay the batch image by image: every returned image is the new one (pool unchanged
      # for it) or a stored one whose slot now holds the new image.
      state = before.copy()
      for i, (ret, img) in enumerate(zip(_ids(out), _ids(new))):
        if ret == img:
          continue
        slot = np.flatnonzero(state == ret)
        self.assertEqual(len(slot), 1, f"returned {ret} was not stored (draw {t}, image {i})")
        state[slot[0]] = img
        stored_hits += 1
        slots[slot[0]] += 1
      np.testing.assert_array_equal(state, after)
      self.assertEqual(int(after_pool["count"]), size)
      pool = after_pool
      next_id += 8
    # Binomial(4000, 1/2): sd 31.6; 5 sd.
    self.assertLess(abs(stored_hits - draws / 2), 5 * np.sqrt(draws / 4))
    expected = stored_hits / size
    chi2 = float(np.sum((slots - expected) ** 2 / expected))
    self.assertLess(chi2, 30.0)  # 7 degrees of freedom: P(chi2 > 30) < 1e-4

  def test_jitted_and_eager_agree(self):
    pool = image_pool.init(3, SHAPE)
    pool = image_pool.query(pool, _images(0, 3), jax.random.key(0))[1]
    a = image_pool.query(pool, _images(10, 5), jax.random.key(7))
    b = jax.jit(image_pool.query)(pool, _images(10, 5), jax.random.key(7))
    chex.assert_trees_all_equal(a, b)

  def test_no_gradient_flows_through_the_pool(self):
    pool = image_pool.init(2, SHAPE)
    grad = jax.grad(lambda x: jnp.sum(image_pool.query(pool, x, jax.random.key(0))[0]))(
        _images(0, 2))
    np.testing.assert_array_equal(grad, 0.0)

  def test_size_zero_returns_the_images(self):
    pool = image_pool.init(0, SHAPE)
    x = _images(0, 3)
    out, new = image_pool.query(pool, x, jax.random.key(0))
    np.testing.assert_array_equal(out, x)
    self.assertEqual(new["images"].shape, (0, *SHAPE))
    with self.assertRaises(ValueError):
      image_pool.init(-1, SHAPE)


if __name__ == "__main__":
  absltest.main()
