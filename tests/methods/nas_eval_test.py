"""NAS evaluation retraining: cutout reference, drop-path schedule, aux loss, loop run."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from jaxcompress.data import augment
from jaxcompress.methods import classification, nas_eval
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.train import loop


def _numpy_cutout(img, y, x, length):
  """DARTS utils.Cutout with a given centre (np.clip of the square's corners)."""
  h, w = img.shape[:2]
  out = img.copy()
  out[np.clip(y - length // 2, 0, h):np.clip(y + length // 2, 0, h),
      np.clip(x - length // 2, 0, w):np.clip(x + length // 2, 0, w)] = 0
  return out


def test_cutout_matches_darts_reference():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(6, 8, 8, 2)).astype(np.float32)
  cy = np.array([0, 7, 3, 4, 1, 6])
  cx = np.array([0, 7, 5, 2, 6, 1])
  for length in (1, 3, 4, 16):
    got = np.asarray(nas_eval.apply_cutout(jnp.asarray(images), cy, cx, length))
    want = np.stack([_numpy_cutout(im, y, x, length) for im, y, x in zip(images, cy, cx)])
    np.testing.assert_array_equal(got, want)
  out = np.asarray(nas_eval.cutout_batch(jnp.asarray(images), jax.random.key(1), 4))
  zeroed = (out == 0).all(-1).sum((1, 2))
  assert ((zeroed >= 4) & (zeroed <= 16)).all()  # a 4x4 square, clipped to >= 2x2
  # the NumPy pipeline version follows the same rule
  np_out = augment.cutout(images[0], np.random.default_rng(3), 4)
  assert 4 <= int((np_out == 0).all(-1).sum()) <= 16


# A cheap 2-node cell pair (fast to compile) with a parameterised op, an identity and pools.
LIGHT = genotype_lib.Genotype(
    normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("skip_connect", 0)],
    normal_concat=[2, 3],
    reduce=[("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3])


def tiny_config(tmp_genotype=None):
  c = common.base_config()
  c.method = "nas_eval"
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 32, "image_shape": (8, 8, 1), "num_classes": 4}
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.model.name = "darts_eval"
  c.model.num_classes = 4
  c.model.kwargs.genotype = tmp_genotype or json.loads(genotype_lib.to_json(LIGHT))
  c.model.kwargs.C = 4
  c.model.kwargs.num_cells = 3
  c.num_epochs = 2
  c.log_every = 1
  c.progress = "none"
  c.async_checkpoint = False
  c.num_devices = 1
  c.optim.learning_rate = 0.05
  c.nas_eval = nas_eval.default_nas_eval_config()
  c.nas_eval.cutout = 0
  c.nas_eval.drop_path_prob = 0.3
  return c


def _batch(seed, n=8):
  k = jax.random.split(jax.random.key(seed))
  return {"image": jax.random.normal(k[0], (n, 8, 8, 1)),
          "label": jax.random.randint(k[1], (n,), 0, 4)}


def test_loss_is_ce_plus_weighted_aux_and_drop_schedule():
  method = nas_eval.NASEval(tiny_config(), steps_per_epoch=4, total_steps=40)
  state = jax.jit(method.init)(jax.random.key(0), _batch(0))
  # DARTS: drop_path_prob * epoch / epochs (10 epochs here).
  for epoch, want in ((0, 0.0), (5, 0.15), (9, 0.27)):
    got = float(method.on_epoch_start(state, epoch).extra["drop_prob"])
    np.testing.assert_allclose(got, want, rtol=1e-6)
  batch = _batch(1)
  new, metrics = jax.jit(method.train_step)(state, batch)
  np.testing.assert_allclose(float(metrics["loss"]),
                             float(metrics["ce_loss"]) + 0.4 * float(metrics["aux_loss"]),
                             rtol=1e-5)
  assert float(metrics["aux_loss"]) > 0
  # the main CE equals an independent forward with the same drop-path key (p = 0 here).
  rng_drop = jax.random.split(state.step_rng(23))[1]
  logits, aux, _ = jax.jit(method._forward)(state.params, state.model_state, batch["image"],
                                            rng_drop, state.extra["drop_prob"])
  np.testing.assert_allclose(
      float(metrics["ce_loss"]),
      float(jnp.mean(classification.cross_entropy(logits, batch["label"]))), rtol=1e-5)
  assert aux is not None and int(new.step) == 1


def test_loop_run_from_genotype_file(tmp_path):
  path = tmp_path / "genotype.json"
  path.write_text(genotype_lib.to_json(LIGHT))
  workdir = str(tmp_path / "run")
  config = tiny_config(str(path))
  config.nas_eval.cutout = 4
  out = loop.run(config, workdir)
  assert 0.0 <= out["eval"]["accuracy"] <= 1.0
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if r["split"] == "train"]
  # epoch 0 -> p = 0, epoch 1 -> p = 0.3 * 1 / 2
  assert train[0]["drop_prob"] == 0.0 and abs(train[-1]["drop_prob"] - 0.15) < 1e-6


def test_pcnn_cells_add_projection_loss_with_same_step_delta():
  config = tiny_config()
  config.model.kwargs.op_set = "pcnn"
  config.model.kwargs.auxiliary = False
  config.nas_eval.pcnn_lambda = 0.5
  method = nas_eval.NASEval(config, steps_per_epoch=4, total_steps=8)
  state = jax.jit(method.init)(jax.random.key(0), _batch(0))
  assert "perturbations" in state.model_state
  batch = _batch(2)
  new, metrics = jax.jit(method.train_step)(state, batch)
  assert float(metrics["projection_loss"]) > 0
  np.testing.assert_allclose(float(metrics["loss"]), float(metrics["ce_loss"])
                             + float(metrics["projection_loss"]), rtol=1e-5)
  # W (projection) learns from L_P only: it moved, and in the direction of -dL_P/dW.
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(new.params))]
  assert max(moved) > 0
  path_w = [p for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]
            if p[-1].key == "projection"]
  assert path_w
