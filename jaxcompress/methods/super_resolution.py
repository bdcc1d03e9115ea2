"""Float super-resolution ("sr"): EDSR / RDN trained with L1, the teachers of PAMS.

EDSR-PyTorch recipe (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", arXiv 1707.02921): L1 loss on `rgb_range` 255 images, Adam (0.9, 0.999,
eps 1e-8), lr 1e-4 with step decay (configured in `config.optim`). Eval PSNR is measured on the
MATLAB Y channel with shave = scale on the eval crops; `final_report` scores full images with
the paper protocol (`jaxcompress.evals.sr.evaluate_sr`) on the eval set and on
`config.final_eval` sets (e.g. Set5/Set14/B100/Urban100 via `sr_benchmark`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import models
from jaxcompress.data import sources

# Imported for its side effect: it registers the SR sources.
from jaxcompress.data import sr as sr_data  # noqa: F401  pylint: disable=unused-import
from jaxcompress.data import transforms as transforms_lib
from jaxcompress.errors import DatasetNotFoundError
from jaxcompress.evals.sr import evaluate_sr
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.optim import builder
from jaxcompress.quant import quantizers
from jaxcompress.train.state import TrainState

CALIB = quantizers.CALIB_COLLECTION
_Y = (65.481, 128.553, 24.966)


# ---------------------------------------------------------------------------------------------
# Metrics.


def psnr_y(sr: jax.Array, hr: jax.Array, scale: int, rgb_range: float = 255.0) -> jax.Array:
  """Per-image PSNR (N,) with the MATLAB protocol of `image_quality.psnr`, jit-able.

  Both images are put on the uint8 grid (`floor(clip(x * 255 / rgb_range, 0, 255) + 0.5)`),
  converted to MATLAB's Y (16 + RGB . (65.481, 128.553, 24.966) / 255, unrounded), `scale`
  pixels are shaved and PSNR = 10 log10(255^2 / MSE) (MSE floored at 1e-10).
  """
  def y(x):
    x = jnp.floor(jnp.clip(x.astype(jnp.float32) * (255.0 / rgb_range), 0.0, 255.0) + 0.5)
    return 16.0 + x @ jnp.asarray(_Y, jnp.float32) / 255.0
  a, b = y(sr), y(hr)
  if scale > 0:
    a, b = a[:, scale:-scale, scale:-scale], b[:, scale:-scale, scale:-scale]
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2))
  return 10.0 * jnp.log10(255.0 ** 2 / jnp.maximum(mse, 1e-10))


def l1_loss(sr: jax.Array, hr: jax.Array) -> jax.Array:
  """Mean absolute error (`nn.L1Loss`)."""
  return jnp.mean(jnp.abs(sr.astype(jnp.float32) - hr.astype(jnp.float32)))


# ---------------------------------------------------------------------------------------------
# The method.


def _scale(config: ml_collections.ConfigDict) -> int:
  kwargs = config.model.get("kwargs", {}) or {}
  if "scale" in kwargs:
    return int(kwargs["scale"])
  return int((config.data.get("source_kwargs", {}) or {}).get("scale", 4))


class SuperResolution(Method):
  """Float super-resolution (EDSR/RDN teachers): L1 loss, optimizer from `config.optim`.

  Batches hold "lr" and "hr" images in [0, rgb_range] (float32, NHWC).
  """

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    m = config.model
    self.scale = _scale(config)
    self.model_kwargs = dict(m.get("kwargs", {}) or {})
    self.model_kwargs.setdefault("scale", self.scale)
    self.rgb_range = float(self.model_kwargs.get("rgb_range", 255.0))
    self.model = self._build(m.get("layers", "float"), dict(m.get("layer_kwargs", {}) or {}))

  def _build(self, layers: str, layer_kwargs: dict[str, Any]) -> Any:
    return models.build(self.config.model.name, layers=layers, layer_kwargs=layer_kwargs,
                        **self.model_kwargs)

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    variables = dict(self.model.init(rng, example_batch["lr"][:1]))
    params = variables.pop("params")
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    return TrainState.create(params=params, model_state=variables, rng=rng,
                             optimizers={"model": (self.tx, params)})

  def super_resolve(self, params: Any, model_state: Any, lr: jax.Array) -> jax.Array:
    """SR output of the trained model (evaluation mode)."""
    return self.model.apply({"params": params, **model_state}, lr)

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    return {"sr": self.super_resolve(state.params, state.model_state, batch["lr"])}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    def loss_fn(params):
      sr = self.model.apply({"params": params, **state.model_state}, batch["lr"])
      return l1_loss(sr, batch["hr"]), sr
    (loss, sr), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(self.tx, grads)
    psnr = jnp.mean(psnr_y(jax.lax.stop_gradient(sr), batch["hr"], self.scale, self.rgb_range))
    return new_state, {"loss": loss, "l1": loss, "psnr": psnr}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    sr = self.super_resolve(state.params, state.model_state, batch["lr"])
    mask = batch["mask"]
    l1 = jnp.mean(jnp.abs(sr - batch["hr"]), axis=(1, 2, 3))
    return {"psnr": jnp.sum(psnr_y(sr, batch["hr"], self.scale, self.rgb_range) * mask),
            "l1": jnp.sum(l1 * mask)}

  # -- full-image evaluation -------------------------------------------------------------------

  def sr_predictors(self, state: TrainState) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    fn = jax.jit(self.super_resolve)
    params, model_state = jax.device_get(state.params), jax.device_get(state.model_state)
    model_state = {k: v for k, v in model_state.items() if k != CALIB}
    return {"model": lambda lr: np.asarray(fn(params, model_state, lr))}

  def final_eval_sets(self) -> list[dict[str, Any]]:
    """The sets scored in `final_report`: `config.final_eval` or the eval split."""
    c = self.config
    sets = list(c.get("final_eval", []) or [])
    if not sets:
      sets = [{"name": c.data.name, "split": c.data.eval_split,
               "source_kwargs": dict(c.data.get("source_kwargs", {}) or {})}]
    return [dict(s) for s in sets]

  def final_report(self, state: TrainState) -> dict[str, Any]:
    """Paper-protocol PSNR/SSIM (Y, shave = scale) on full images of each `final_eval_sets`."""
    if not self.config.get("final_eval_enabled", True):
      return {}
    transforms_lib.load_providers()
    predictors = self.sr_predictors(state)
    report = {}
    for spec in self.final_eval_sets():
      kwargs = dict(spec.get("source_kwargs", {}) or {})
      kwargs.setdefault("scale", self.scale)
      if spec["name"] != "sr_offline" and "data_dir" not in kwargs and self.config.data.get(
          "data_dir"):
        kwargs["data_dir"] = self.config.data.data_dir
      key = f"{spec['name']}/{spec['split']}"
      try:
        source = sources.get(spec["name"], spec["split"], **kwargs)
      except DatasetNotFoundError as e:  # training is done: report the missing set, don't fail
        logging.warning("final_report: skipping %s: %s", key, e)
        report[key] = {"error": str(e)}
        continue
      report[key] = evaluate_sr(
          predictors, source, self.scale, rgb_range=self.rgb_range,
          max_images=self.config.get("final_eval_max_images", -1),
          with_ssim=self.config.get("final_eval_ssim", True))
    return report

  def summary(self, example_batch: Batch) -> str:
    try:
      from jaxcompress.summary import summary as summarize  # pylint: disable=g-import-not-at-top
      lr = jax.ShapeDtypeStruct((1, *example_batch["lr"].shape[1:]), jnp.float32)
      return str(summarize(self.model, lr))
    except Exception:  # pylint: disable=broad-except  # the summary is informative only
      return ""
