"""The history of generated images the CycleGAN discriminators train on, as pure array functions.

Shrivastava et al. (arXiv 1612.07828, Sec. 2.3) update the discriminator with a buffer of earlier
generator outputs; CycleGAN (arXiv 1703.10593, Sec. 4) keeps 50. The official `ImagePool`
(junyanz/pytorch-CycleGAN-and-pix2pix `util/image_pool.py`; the same file in SJLeo/DMAD) handles
each image of a batch in turn:

  * while fewer than `pool_size` images are stored: store it and return it;
  * otherwise, with probability 1/2 (`random.uniform(0, 1) > 0.5`): return a uniformly chosen
    stored image and store the new one in its place; else return the new image.

Here the buffer is `{"images": (pool_size, H, W, C), "count": int32}` held in the training state
(`state.extra`), and `query` is jit-able: a `lax.scan` over the batch with one key per image.
A pool of size 0 returns the images unchanged.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Pool = dict[str, jax.Array]


def init(pool_size: int, image_shape: tuple[int, ...], dtype: Any = jnp.float32) -> Pool:
  """An empty pool for images of `image_shape` (H, W, C).

  Args:
    pool_size: images kept (official `--pool_size`, 50); 0 keeps none.
    image_shape: the shape of one image.
    dtype: the images' dtype.

  Returns:
    {"images": zeros (pool_size, *image_shape), "count": 0}.
  """
  if pool_size < 0:
    raise ValueError(f"pool_size must be >= 0, got {pool_size}.")
  return {"images": jnp.zeros((pool_size, *image_shape), dtype),
          "count": jnp.zeros((), jnp.int32)}


def query(pool: Pool, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, Pool]:
  """Images for the discriminator and the updated pool (official `ImagePool.query`).

  Args:
    pool: the pool state from `init` (or an earlier `query`).
    images: (N, H, W, C) newly generated images; no gradient flows through the result (the
      official pool stores `image.data`).
    rng: a PRNG key for this query.

  Returns:
    (the N images to show the discriminator, the new pool state).
  """
  images = jax.lax.stop_gradient(images)
  size = pool["images"].shape[0]
  if size == 0:
    return images, pool

  def one(carry, inputs):
    stored, count = carry
    image, key = inputs
    image = image.astype(stored.dtype)
    k_coin, k_index = jax.random.split(key)
    filling = count < size
    swap = jax.random.uniform(k_coin) > 0.5
    index = jnp.where(filling, jnp.minimum(count, size - 1),
                      jax.random.randint(k_index, (), 0, size))
    old = stored[index]
    returned = jnp.where(filling | ~swap, image, old)
    # One slot is written either way (the old image back when nothing is stored).
    stored = stored.at[index].set(jnp.where(filling | swap, image, old))
    return (stored, jnp.where(filling, count + 1, count)), returned

  keys = jax.random.split(rng, images.shape[0])
  (stored, count), out = jax.lax.scan(one, (pool["images"], pool["count"]), (images, keys))
  return out.astype(images.dtype), {"images": stored, "count": count}
