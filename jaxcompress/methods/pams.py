"""PAMS (ECCV 2020, arXiv 2011.04212) and the float super-resolution method that trains its teachers.

Registry name "pams" -> `PAMS`; its float teachers train with "sr"
(`jaxcompress.methods.super_resolution.SuperResolution`, re-exported here).

`PAMS` (the quantized student):
  * teacher: the full-precision model with the same `config.model`, frozen (no gradient, no
    optimizer), its params in `state.extra["teacher"]`. Loaded from `config.pams.teacher_path`
    (an `sr` run's workdir or its `checkpoints/` folder (orbax, newest step), or a `.msgpack`
    file of `flax.serialization.to_bytes(params)` / `.npz` of "a/b/kernel" keys, see
    `load_params` / `save_params`). Without a path, `config.pams.teacher_epochs` > 0 trains the
    teacher IN PLACE first (the quick CPU config): the first `teacher_epochs` epochs of the run
    update only the teacher (L1, its own Adam in `opt_state["teacher"]` built from `config.optim`
    without the groups); at the first student epoch the student is initialised from it and the
    teacher is frozen from then on. Epoch numbers below count from that first student epoch.
  * student: `config.model` with the "pams" layer set (`config.pams.bits`), initialised from the
    teacher's weights (paper, issues colorjam/PAMS#12/#15; default `student_init="teacher"`); the
    alphas keep `alpha_init`. `student_init="random"` is the released code's random init.
  * loss: `L1(SR, HR) + skt_weight * SKT(body feature)`, skt_weight 1e3 (official `--w_at`); SKT
    on the body output after the global skip (`return_features=True`).
  * optimizer: `config.optim` with regex groups: Adam 1e-4 for weights and 1e-2 for every `alpha`
    (`groups=[{"regex": ".*alpha", "learning_rate": 1e-2}]`), StepLR x0.5 every 10 epochs. The
    student's schedule counts its own steps (the teacher phase does not decay it).
  * alpha calibration: during the first `calib_epochs` (1) student epochs the quantizers run in
    calibration mode (`PAMSQuantAct`, `pams_calib` collection in `state.model_state`): the batch
    statistic mean_n max|x_n| updates `max_val` ("ema": exponential moving average, decay
    0.9997, paper; "last_batch": overwritten each step, the official code's effective
    behaviour), and alpha is overwritten with it before each optimizer step (then Adam still
    updates it, as the official trainer). After calibration alphas only move by Adam.
  * metrics: training loss / l1 / skt (and `teacher_phase`, 1 during an in-place teacher phase,
    when the student's eval PSNR is that of its untrained init); eval PSNR on the MATLAB Y channel with shave = scale on
    the eval crops (`psnr`, student; `teacher_psnr`); `final_report` evaluates full images with
    the paper protocol (PSNR and SSIM, student, teacher and MATLAB-bicubic baseline) on the eval
    set and on `config.final_eval` sets (e.g. Set5/Set14/B100/Urban100 via `sr_benchmark`).

Teacher -> students -> table (configs/pams/quick.py, colabs/pams.py): stages of one run
(`configs/pams/_sr_common.pams_stages`): an "sr" teacher, one PAMS run per bit width loading it,
and the `stage_table` report scoring all of them and MATLAB bicubic on the held-out images.

Example:
  >>> from configs.pams import offline_edsr_x2
  >>> loop.run(offline_edsr_x2.get_config(), "/tmp/pams")
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from jaxcompress import models
from jaxcompress.data import sources

# Imported for its side effect: it registers the SR sources.
from jaxcompress.data import sr as sr_data  # noqa: F401  pylint: disable=unused-import
from jaxcompress.data import transforms as transforms_lib
from jaxcompress.distill.attention import skt_loss
from jaxcompress.errors import ConfigError
from jaxcompress.evals.sr import evaluate_sr
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.methods.super_resolution import SuperResolution, _scale, l1_loss, psnr_y  # noqa: F401  (re-exported)
from jaxcompress.optim import builder
from jaxcompress.quant import quantizers
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train.state import TrainState

CALIB = quantizers.CALIB_COLLECTION
_Y = (65.481, 128.553, 24.966)


# ---------------------------------------------------------------------------------------------
# Teacher parameters on disk.


def save_params(path: str, params: Any) -> None:
  """Writes params as flax msgpack (`.msgpack`) or a flat `.npz` ("a/b/kernel" keys)."""
  params = jax.device_get(params)
  if path.endswith(".npz"):
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
  else:
    with open(path, "wb") as f:
      f.write(flax.serialization.to_bytes(params))


def load_params(path: str) -> Any:
  """Reads teacher params: `.msgpack`, `.npz`, `.pt` / `.pth`, a run's workdir or `checkpoints/`.

  For a workdir the newest checkpoint's `params` are returned
  (`jaxcompress.train.checkpoint.load_run_state`). A `.pt` / `.pth` file is an EDSR-PyTorch
  EDSR or RDN state_dict (the teachers of the official PAMS code), converted by
  `jaxcompress.models.official_weights.convert_sr_teacher` (needs torch).

  Raises:
    ConfigError: the path does not exist or holds no parameters.
  """
  if not os.path.exists(path):
    raise ConfigError(f"Teacher parameters {path!r} not found. Set config.pams.teacher_path to an "
                      "'sr' run's workdir (python -m launch.main --config=configs/pams/"
                      "edsr_teacher_x4.py --workdir=DIR), its checkpoints/ folder, a .msgpack "
                      "/ .npz params file or an EDSR-PyTorch .pt teacher.")
  if os.path.isfile(path):
    if path.endswith((".pt", ".pth")):
      from jaxcompress.models import official_weights  # pylint: disable=g-import-not-at-top
      return official_weights.convert_sr_teacher(path)
    if path.endswith(".npz"):
      with np.load(path) as z:
        return traverse_util.unflatten_dict({k: np.asarray(z[k]) for k in z.files}, sep="/")
    with open(path, "rb") as f:
      tree = flax.serialization.msgpack_restore(f.read())
    return tree["params"] if set(tree) == {"params"} else tree
  path = os.path.abspath(path)
  if os.path.basename(path) == "checkpoints":
    path = os.path.dirname(path)
  return checkpoint_lib.load_run_state(path)["params"]


def _check_like(loaded: Any, like: Any, what: str) -> Any:
  """`loaded` cast to `like`'s structure and dtypes; ConfigError naming the first mismatch."""
  flat_l = traverse_util.flatten_dict(flax.core.unfreeze(loaded))
  flat_r = traverse_util.flatten_dict(flax.core.unfreeze(like))
  out = {}
  for key, ref in flat_r.items():
    if key not in flat_l:
      raise ConfigError(f"{what} has no parameter {'/'.join(key)}: it was trained with another "
                        "config.model (name/kwargs/scale).")
    value = np.asarray(flat_l[key])
    if value.shape != ref.shape:
      raise ConfigError(f"{what} parameter {'/'.join(key)} has shape {value.shape}, the model "
                        f"needs {ref.shape}: check config.model.kwargs (scale, n_feats, ...).")
    out[key] = jnp.asarray(value, ref.dtype)
  return traverse_util.unflatten_dict(out)


def student_from_teacher(student_params: Any, teacher_params: Any) -> Any:
  """Student params with every weight copied from the same path of the teacher (alphas kept).

  Raises:
    ConfigError: a student weight has no counterpart of the same shape in the teacher.
  """
  flat_s = traverse_util.flatten_dict(flax.core.unfreeze(student_params))
  flat_t = traverse_util.flatten_dict(flax.core.unfreeze(teacher_params))
  out = {}
  for key, value in flat_s.items():
    if key[-1] == "alpha":
      out[key] = value
      continue
    t = flat_t.get(key)
    if t is None or t.shape != value.shape:
      raise ConfigError(f"Student parameter {'/'.join(key)} {value.shape} has no teacher "
                        "counterpart of that shape; the student and teacher must share "
                        "config.model.")
    out[key] = jnp.asarray(t, value.dtype)
  return traverse_util.unflatten_dict(out)


# ---------------------------------------------------------------------------------------------
# Methods.


def _calibration_active(calib: Any) -> jax.Array:
  flags = [v for k, v in traverse_util.flatten_dict(flax.core.unfreeze(calib)).items()
           if k[-1] == "active"]
  return jnp.any(jnp.stack([jnp.asarray(f) for f in flags])) if flags else jnp.array(False)


class PAMS(SuperResolution):
  """PAMS quantized student with an SKT-distilling frozen teacher (see the module docstring).

  Config block `config.pams`: bits (8), skt_weight (1e3), student_init ("teacher" | "random"),
  alpha_calib ("ema" | "last_batch"), alpha_init (10), calib_epochs (1), teacher_path (None),
  teacher_epochs (0: needs teacher_path), teacher_optim (overrides of `config.optim` for the
  in-place teacher, e.g. {"learning_rate": 1e-3}).
  """

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    p = config.get("pams", None) or ml_collections.ConfigDict()
    self.bits = int(p.get("bits", 8))
    self.skt_weight = float(p.get("skt_weight", 1e3))
    self.student_init = p.get("student_init", "teacher")
    self.calib_epochs = int(p.get("calib_epochs", 1))
    calibration = p.get("alpha_calib", "ema")
    if self.student_init not in ("teacher", "random"):
      raise ConfigError(f"config.pams.student_init must be 'teacher' or 'random', got "
                        f"{self.student_init!r}.")
    if calibration not in ("ema", "last_batch"):
      raise ConfigError(f"config.pams.alpha_calib must be 'ema' or 'last_batch', got "
                        f"{calibration!r}.")
    self.teacher_path = p.get("teacher_path", None) or None
    self.teacher_epochs = 0 if self.teacher_path else int(p.get("teacher_epochs", 0))
    if not self.teacher_path and self.teacher_epochs <= 0:
      raise ConfigError("PAMS needs a full-precision teacher: set config.pams.teacher_path to an "
                        "'sr' run's workdir or a params file, or config.pams.teacher_epochs > 0 "
                        "to train it in place first.")
    self.teacher_steps = self.teacher_epochs * self.steps_per_epoch
    self.teacher = self._build("float", {})
    self.model = self._build("pams", {"bits": self.bits, "calibration": calibration,
                                      "alpha_init": float(p.get("alpha_init", 10.0))})
    self._loaded_teacher = load_params(self.teacher_path) if self.teacher_path else None

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    lr = example_batch["lr"][:1]
    rng_s, rng_t = jax.random.split(rng)
    variables = dict(self.model.init(rng_s, lr))
    params = variables.pop("params")
    teacher = self.teacher.init(rng_t, lr)["params"]
    if self._loaded_teacher is not None:
      teacher = _check_like(self._loaded_teacher, teacher, f"Teacher {self.teacher_path!r}")
    if self.student_init == "teacher" and not self.teacher_steps:
      params = student_from_teacher(params, teacher)
    variables[CALIB] = quantizers.set_calibration(variables[CALIB], not self.teacher_steps)
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    optimizers = {"model": (self.tx, params)}
    if self.teacher_steps:
      optim = self.config.optim.to_dict()
      optim.pop("groups", None)
      optim.update(dict(self.config.pams.get("teacher_optim", {}) or {}))
      self.teacher_tx = builder.make_optimizer(ml_collections.ConfigDict(optim), teacher,
                                               self.total_steps, self.steps_per_epoch)
      optimizers["teacher"] = (self.teacher_tx, teacher)
    return TrainState.create(params=params, model_state=variables, rng=rng,
                             optimizers=optimizers, extra={"teacher": teacher})

  def on_epoch_start(self, state: TrainState, epoch: Any) -> TrainState:
    """Switches calibration on for the first `calib_epochs` student epochs (off otherwise); with
    an in-place teacher, initialises the student from it at the first student epoch."""
    student_epoch = jnp.asarray(epoch) - self.teacher_epochs
    active = (student_epoch >= 0) & (student_epoch < self.calib_epochs)
    calib = quantizers.set_calibration(state.model_state[CALIB], active)
    params = state.params
    if self.teacher_steps and self.student_init == "teacher":
      start = student_epoch == 0
      copied = student_from_teacher(params, state.extra["teacher"])
      params = jax.tree.map(lambda c, p: jnp.where(start, c, p), copied, params)
    return state.replace(params=params, model_state={**state.model_state, CALIB: calib})

  def student_loss(self, params: Any, model_state: Any, batch: Batch,
                   teacher_feature: jax.Array) -> tuple[jax.Array, Any]:
    """L1 + skt_weight * SKT; aux = (metrics, updated pams_calib)."""
    (sr, feature), updates = self.model.apply({"params": params, **model_state}, batch["lr"],
                                              return_features=True, mutable=[CALIB])
    l1 = l1_loss(sr, batch["hr"])
    skt = skt_loss(feature, teacher_feature)
    loss = l1 + self.skt_weight * skt
    psnr = jnp.mean(psnr_y(jax.lax.stop_gradient(sr), batch["hr"], self.scale, self.rgb_range))
    return loss, ({"loss": loss, "l1": l1, "skt": skt, "psnr": psnr}, updates[CALIB])

  def _student_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    teacher = jax.lax.stop_gradient(state.extra["teacher"])
    _, teacher_feature = self.teacher.apply({"params": teacher}, batch["lr"], return_features=True)
    grads, (metrics, calib) = jax.grad(self.student_loss, has_aux=True)(
        state.params, state.model_state, batch, jax.lax.stop_gradient(teacher_feature))
    active = _calibration_active(calib)
    # Official trainer: alpha.data = max_val (calibration epoch), then the optimizer step.
    params = jax.tree.map(lambda c, p: jnp.where(active, c, p),
                          quantizers.calibrated_params(state.params, calib), state.params)
    new_state = state.replace(params=params).apply_gradients(
        self.tx, grads, model_state={**state.model_state, CALIB: calib})
    return new_state, {**metrics, "teacher_phase": jnp.float32(0.0)}

  def _teacher_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    def loss_fn(teacher):
      sr = self.teacher.apply({"params": teacher}, batch["lr"])
      return l1_loss(sr, batch["hr"]), sr
    (loss, sr), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.extra["teacher"])
    teacher, opt_state = builder.apply_updates(self.teacher_tx, grads, state.opt_state["teacher"],
                                               state.extra["teacher"])
    new_state = state.replace(step=state.step + 1, extra={**state.extra, "teacher": teacher},
                              opt_state={**state.opt_state, "teacher": opt_state})
    psnr = jnp.mean(psnr_y(jax.lax.stop_gradient(sr), batch["hr"], self.scale, self.rgb_range))
    return new_state, {"loss": loss, "l1": loss, "skt": jnp.zeros_like(loss), "psnr": psnr,
                       "teacher_phase": jnp.float32(1.0)}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    if not self.teacher_steps:
      return self._student_step(state, batch)
    return jax.lax.cond(state.step < self.teacher_steps, self._teacher_step, self._student_step,
                        state, batch)

  def super_resolve(self, params: Any, model_state: Any, lr: jax.Array) -> jax.Array:
    # Evaluation: `pams_calib` immutable -> quantizers use the learned alphas.
    return self.model.apply({"params": params}, lr)

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    metrics = super().eval_step(state, batch)
    teacher = self.teacher.apply({"params": state.extra["teacher"]}, batch["lr"])
    metrics["teacher_psnr"] = jnp.sum(
        psnr_y(teacher, batch["hr"], self.scale, self.rgb_range) * batch["mask"])
    return metrics

  def sr_predictors(self, state: TrainState) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    student = jax.jit(lambda p, x: self.model.apply({"params": p}, x))
    teacher = jax.jit(lambda p, x: self.teacher.apply({"params": p}, x))
    sp, tp = jax.device_get(state.params), jax.device_get(state.extra["teacher"])
    return {"student": lambda lr: np.asarray(student(sp, lr)),
            "teacher": lambda lr: np.asarray(teacher(tp, lr))}


# ---------------------------------------------------------------------------------------------
# Teacher -> students -> table as stages (configs/pams/quick.py, `_sr_common.pams_stages`).

TEACHER = "fp"


def stage_predictors(config: ml_collections.ConfigDict, params: Mapping[str, Any]
                        ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
  """{stage label: fn(LR (1, h, w, 3) float32) -> SR} for the stages' trained params.

  "fp" runs the float `config.model`; "<b>bit" the PAMS student at b bits in evaluation mode
  (learned alphas, no calibration), both jitted.
  """
  kwargs = dict(config.model.get("kwargs", {}) or {})
  kwargs.setdefault("scale", _scale(config))
  predictors = {}
  for label, p in params.items():
    if label == TEACHER:
      model = models.build(config.model.name, layers="float", layer_kwargs={}, **kwargs)
    else:
      bits = int(label[:-len("bit")])
      model = models.build(config.model.name, layers="pams", layer_kwargs={"bits": bits},
                           **kwargs)
    fn = jax.jit(lambda v, x, m=model: m.apply({"params": v}, x))
    p = jax.device_get(p)
    predictors[label] = lambda lr, fn=fn, p=p: np.asarray(fn(p, lr))
  return predictors


def stage_table(config: ml_collections.ConfigDict, inputs: Mapping[str, str], stage_dir: str,
                root: str) -> dict[str, Any]:
  """The PAMS comparison table: a report stage over the teacher and student stages.

  The eval split of `config.data` (for `sr_offline`: the photographs chelsea and coffee, never
  trained on) is scored with the paper protocol (`evaluate_sr`: MATLAB Y channel, shave =
  scale, uint8 grid) for the float teacher ("fp"), each student ("<b>bit") and MATLAB bicubic.
  Written to `root`: `pams_table.json` (means and per-image rows) and `pams_table.md` (the same
  as a Markdown table); one "eval" line with the means goes to `<stage_dir>/metrics.jsonl`.

  Args:
    config: the report stage's config (model and data of the students).
    inputs: {stage label: its workdir} for "fp" and each "<b>bit" stage.
    stage_dir: the report stage's own workdir.
    root: the staged run's workdir.

  Returns:
    {"<label>/psnr": mean, "<label>/ssim": mean, ..., "num_images": n}.
  """
  transforms_lib.load_providers()
  params = {label: checkpoint_lib.load_run_state(wd)["params"] for label, wd in inputs.items()}
  rgb_range = float((config.model.get("kwargs", {}) or {}).get("rgb_range", 255.0))
  source = sources.get(config.data.name, config.data.eval_split,
                       **dict(config.data.get("source_kwargs", {}) or {}))
  table_path = os.path.join(root, "pams_table.md")
  result = evaluate_sr(stage_predictors(config, params), source, _scale(config),
                       rgb_range=rgb_range, max_images=config.get("final_eval_max_images", -1),
                       with_ssim=config.get("final_eval_ssim", True), table_path=table_path)
  with open(os.path.join(root, "pams_table.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, default=str)
  means = {k: v for k, v in result.items() if isinstance(v, (int, float))}
  with open(os.path.join(stage_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": 0, "split": "eval", **means}) + "\n")
  return means
