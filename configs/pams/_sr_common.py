"""Shared pieces of the super-resolution / PAMS configs (PAMS, ECCV 2020, arXiv 2011.04212)."""
from __future__ import annotations

from typing import Mapping

import ml_collections

from configs import common
from jaxcompress.errors import ConfigError

BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100")


def sr_config(*, method: str, model: str, scale: int, patch_size: int, quick: bool,
              data_dir: str | None = None,
              benchmark_dir: str | None = None) -> ml_collections.ConfigDict:
  """DIV2K training (EDSR-PyTorch recipe), benchmark evaluation in the final report.

  One "epoch" = 1000 batches of 16 (EDSR-PyTorch `--test_every 1000`): DIV2K's 800 images are
  repeated 20 times per pass. `:quick` shrinks everything for a CPU smoke run on the offline
  photographs (sr_offline) instead of DIV2K. `data_dir`: the TFDS directory holding DIV2K;
  `benchmark_dir`: the folder holding Set5/Set14/B100/Urban100 (default $SR_BENCHMARK_DIR).
  """
  c = common.base_config()
  c.method = method
  c.model.name = model
  c.model.layers = "float"
  c.model.kwargs = ml_collections.ConfigDict({"scale": scale})
  del c.model["num_classes"]

  c.data.name = "div2k"
  c.data.train_split = "train"
  c.data.eval_split = "validation[:10]"   # DIV2K 801-810, EDSR-PyTorch's in-training validation
  c.data.batch_size = 16
  c.data.eval_batch_size = 1 if not quick else 2
  c.data.source_kwargs = ml_collections.ConfigDict({"scale": scale, "repeat": 20})
  if data_dir:
    c.data.source_kwargs.data_dir = data_dir
  c.data.transform = "sr_patch"
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"patch_size": patch_size, "eval_patch_size": 480})  # 120x120 LR center crop at x4
  c.data.mean = (0.0,)   # unused: SR batches have "lr"/"hr" (no "image"), kept in [0, 255]
  c.data.std = (1.0,)

  c.optim.name = "adam"
  c.optim.learning_rate = 1e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.0
  c.optim.momentum = 0.0
  c.optim.schedule = "step"
  c.optim.decay_epochs = 10
  c.optim.decay_factor = 0.5

  # Full-image paper-protocol evaluation after training (sr_benchmark folder layout in
  # jaxcompress/data/sr.py; point source_kwargs.root at the folder holding Set5, Set14, ...).
  c.final_eval = [{"name": "sr_benchmark", "split": s,
                   "source_kwargs": {"scale": scale, "root": benchmark_dir or ""}}
                  for s in BENCHMARK_SETS]
  c.final_eval_max_images = -1
  c.final_eval_ssim = True
  c.log_every = 100
  if quick:
    c.data.name = "sr_offline"
    c.data.train_split, c.data.eval_split = "train", "test"
    c.data.source_kwargs = ml_collections.ConfigDict({"scale": scale, "repeat": 4})
    c.data.batch_size = 4
    c.data.transform_kwargs = ml_collections.ConfigDict(
        {"patch_size": 12 * scale, "eval_patch_size": 32 * scale})
    if model.startswith("edsr"):
      c.model.name = "edsr"   # edsr_baseline fixes the depth/width
      c.model.kwargs.update({"n_resblocks": 2, "n_feats": 8})
    c.final_eval = []
    c.final_eval_max_images = 1
    c.final_eval_ssim = False
    c.num_epochs = 2
    c.log_every = 5
  return c


def pams_block(bits: int, teacher_path: str | None) -> ml_collections.ConfigDict:
  """The `config.pams` block: paper defaults (official-code behaviours behind the flags)."""
  return ml_collections.ConfigDict({
      "bits": bits,
      "skt_weight": 1e3,              # official --w_at
      "student_init": "teacher",      # paper; "random" = released code (commit 69b5228)
      "alpha_calib": "ema",           # paper; "last_batch" = released code's effective behaviour
      "alpha_init": 10.0,
      "calib_epochs": 1,
      "teacher_path": ml_collections.config_dict.placeholder(str) if teacher_path is None
                      else teacher_path,
      "teacher_epochs": 0,            # > 0 without teacher_path: train the teacher in place
  })


PAPER_EPOCH_STEPS = 1000   # official `--test_every 1000`: one PAMS "epoch" is 1000 batches
PAPER_ALPHA_LR = 1e-2      # official main.py: the param group of every `alpha`


def alpha_learning_rate(epoch_steps: int = PAPER_EPOCH_STEPS) -> float:
  """The alpha learning rate that lets alpha travel as far per epoch as in the paper.

  Adam moves a parameter by about its learning rate per step while the gradient keeps its sign,
  so in the paper (colorjam/PAMS main.py: lr 1e-2, epochs of 1000 batches) an alpha can travel
  about 10 per epoch, ~175 over the StepLR-halved 30 epochs, on activations of rgb_range 255.
  A run whose epochs have `epoch_steps` batches keeps that distance per epoch with
  1e-2 * 1000 / epoch_steps (the paper's 1e-2 when epochs have 1000 batches).

  Args:
    epoch_steps: batches per epoch of the run.

  Returns:
    The learning rate of the alpha parameter group.
  """
  if epoch_steps <= 0:
    raise ConfigError(f"epoch_steps must be a positive number of batches, got {epoch_steps}.")
  return PAPER_ALPHA_LR * PAPER_EPOCH_STEPS / epoch_steps


def pams_optim(c: ml_collections.ConfigDict, epoch_steps: int = PAPER_EPOCH_STEPS) -> None:
  """Adam 1e-4 for weights, 1e-2 for every alpha; StepLR x0.5 every 10 epochs (paper/code).

  Args:
    c: the config whose `optim` block gets the alpha parameter group.
    epoch_steps: batches per epoch; other than the paper's 1000, the alpha learning rate is
      scaled to keep the paper's alpha travel per epoch (`alpha_learning_rate`).
  """
  c.optim.groups = [{"regex": ".*alpha", "learning_rate": alpha_learning_rate(epoch_steps)}]


# The paper's model sizes (arXiv 2011.04212, experiments) and the tiny `:quick` variants of each.
PAPER_MODELS = {
    "edsr_baseline": {},                                   # 16 blocks x 64 feats, res_scale 1
    "rdn": {"d": 16, "c": 8, "g": 64, "g0": 64},           # D=16 RDBs x C=8 layers, G=G0=64
}
QUICK_RDN = {"d": 2, "c": 2, "g": 8, "g0": 8}


def teacher_config(arg: str | None, *, model: str, scale: int,
                   patch_size: int) -> ml_collections.ConfigDict:
  """Full-precision teacher (method "sr"): EDSR-PyTorch recipe, 300 epochs, lr halved at 200.

  Args:
    arg: the config arg ("quick", "data_dir=...", "bench=...").
    model: "edsr_baseline" or "rdn".
    scale: upscaling factor.
    patch_size: HR training patch.

  Returns:
    The teacher config.
  """
  args = common.parse_arg(arg, quick=False, data_dir="", bench="")
  c = sr_config(method="sr", model=model, scale=scale, patch_size=patch_size, quick=args.quick,
                data_dir=args.data_dir or None, benchmark_dir=args.bench or None)
  c.model.kwargs.update(PAPER_MODELS[model] if not args.quick or model != "rdn" else QUICK_RDN)
  if not args.quick:
    c.num_epochs = 300
    c.optim.decay_epochs = 200
  return c


def pams_paper_config(arg: str | None, *, model: str, scale: int, bits: int,
                      patch_size: int) -> ml_collections.ConfigDict:
  """A PAMS paper setting: `bits`-bit student of `model` at `scale` (arXiv 2011.04212).

  Adam (0.9, 0.999, eps 1e-8, no weight decay) lr 1e-4 for weights and 1e-2 for every alpha,
  StepLR x0.5 every 10 epochs, 30 epochs of 1000 batches of 16, L1 + 1e3 * SKT, student
  initialised from the FP teacher, first-epoch EMA alpha calibration.

  Args:
    arg: the config arg ("quick", "data_dir=...", "bench=...", "teacher_path=...").
    model: "edsr_baseline" or "rdn".
    scale: upscaling factor.
    bits: weight and activation bit width.
    patch_size: HR training patch (EDSR 192 at x4, RDN 96).

  Returns:
    The student config (`config.pams.teacher_path` from the arg or the command line).
  """
  args = common.parse_arg(arg, quick=False, data_dir="", bench="", teacher_path="")
  c = sr_config(method="pams", model=model, scale=scale, patch_size=patch_size, quick=args.quick,
                data_dir=args.data_dir or None, benchmark_dir=args.bench or None)
  c.model.kwargs.update(PAPER_MODELS[model] if not args.quick or model != "rdn" else QUICK_RDN)
  pams_optim(c)
  c.pams = pams_block(bits, args.teacher_path or None)
  c.num_epochs = 30
  if args.quick:
    c.num_epochs = 2
    c.pams.teacher_epochs = 1
  return c


def pams_stages(base: ml_collections.ConfigDict, bits: tuple[int, ...],
                teacher_epochs: int, student_epochs: int | Mapping[int, int],
                teacher_optim: dict | None = None) -> ml_collections.ConfigDict:
  """Teacher -> students -> table as stages of one run (`jaxcompress.train.stages`).

  Stages, in order:
    * "fp": method "sr", float L1 training of `base.model` for `teacher_epochs`, optimizer
      `base.optim` without the alpha group, updated by `teacher_optim`;
    * "<b>bit" for each b: method "pams" at b bits, for `student_epochs` (or
      `student_epochs[b]`; the first one calibrates alpha), with the teacher (and the initial weights) loaded from the "fp" stage
      (`pams.teacher_path`, hand-over `paths_from`);
    * "table": a report stage scoring every model and MATLAB bicubic on the full held-out images
      (`<workdir>/pams_table.json` and `.md`).

  Args:
    base: a "pams" config (model, data, optim, pams block).
    bits: the student bit widths.
    teacher_epochs: epochs of the teacher stage.
    student_epochs: epochs of each student stage, one number or {bits: epochs} for every b in
      `bits`.
    teacher_optim: overrides of `base.optim` for the teacher (learning rate, schedule).

  Returns:
    The staged config.

  Raises:
    ConfigError: `student_epochs` is a mapping without an entry for one of `bits`.
  """
  if isinstance(student_epochs, Mapping):
    missing = [b for b in bits if b not in student_epochs]
    if missing:
      raise ConfigError(f"student_epochs {dict(student_epochs)} has no entry for bit widths "
                        f"{missing}; give one number of epochs per student bit width.")
    epochs = {int(b): int(student_epochs[b]) for b in bits}
  else:
    epochs = {int(b): int(student_epochs) for b in bits}
  teacher = ml_collections.ConfigDict(base.to_dict())
  teacher.method = "sr"
  teacher.num_epochs = teacher_epochs
  teacher.optim.groups = []
  teacher.optim.update(dict(teacher_optim or {}))
  del teacher["pams"]
  teacher.final_eval_enabled = False
  c = ml_collections.ConfigDict()
  c.stages = ml_collections.ConfigDict({"fp": teacher})
  labels = []
  for b in bits:
    student = ml_collections.ConfigDict(base.to_dict())
    student.num_epochs = epochs[int(b)]
    student.pams.bits = int(b)
    student.pams.teacher_epochs = 0
    student.final_eval_enabled = False
    student.paths_from = (("pams.teacher_path", "fp", ""),)
    labels.append(f"{int(b)}bit")
    c.stages[labels[-1]] = student
  table = ml_collections.ConfigDict(base.to_dict())
  table.report = "pams_table"
  table.inputs = ("fp", *labels)
  c.stages.table = table
  c.stage_order = ("fp", *labels, "table")
  return c
