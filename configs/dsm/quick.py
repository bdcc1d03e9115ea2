"""DSM vs its MoCo baseline on the offline scene-biased videos, in one command on a CPU.

The scene-bias toy check of DSM (Wang et al., AAAI 2021, arXiv 2009.05757): four motion
directions of a square over four scenes; in the training videos the scene agrees with the
motion class 90 % of the time, in the test videos it is independent (`moving_squares`). Stages:

1. `pretrain_dsm`: DSM (warped anchor, intra-video negative, MoCo queue) on the training videos;
2. `pretrain_moco`: the MoCo baseline with the same budget (no warp, no intra-video negative);
3. `probe_dsm`, `probe_moco`, `probe_random`: a linear classifier on each frozen backbone (and
   on a randomly initialised one), trained on labelled videos whose scene is independent of the
   class and tested on the decorrelated test videos (video accuracy over 3 clips per video), so
   it measures how much of the motion each representation carries;
4. `report`: `dsm_report.json` with `dsm_accuracy`, `moco_accuracy`, `random_init_accuracy`.

No horizontal flips anywhere: a mirrored clip of a square moving right moves left, another
class. Each pretraining stage also logs clip retrieval recall@k (test clips query training clips).
Backbone: R3D-18's layout with one block per stage and width 16 on 8-frame 32x32 clips. The
key-encoder momentum is 0.99 instead of the official 0.999 because the run is a few hundred
steps long (at 0.999 the key encoder would stay mostly at its initialisation).
Command:
  python -m launch.main --config=configs/dsm/quick.py --workdir=/tmp/dsm_quick
Hardware: any CPU (2 cores).
Expected: dsm_accuracy > moco_accuracy and both > random_init_accuracy (see BENCHMARKS.md).
Variants: `:small` (fewer steps and videos, for the slow test), `:quick` (a few steps of every
stage), `:width=N` (backbone width).
"""
from __future__ import annotations

import ml_collections

from configs import common

CLIP = dict(clip_len=8, stride=1)
# R3D-18's layout, one block per stage, `width` channels in the first stage.
MODEL = "r3d_18"
STAGE_SIZES = (1, 1, 1, 1)


def _data(c: ml_collections.ConfigDict, num_train: int, num_test: int) -> None:
  c.data.name = "moving_squares"
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.25, 0.25, 0.25)
  c.data.source_kwargs = ml_collections.ConfigDict(dict(num_videos=num_train))
  c.data.batch_size = 16
  c.data.eval_batch_size = 32
  c.num_devices = 1


def _model(c: ml_collections.ConfigDict, num_classes: int, width: int) -> None:
  c.model.name = MODEL
  c.model.num_classes = num_classes
  c.model.kwargs = ml_collections.ConfigDict(dict(width=width, stage_sizes=STAGE_SIZES))


def _eval_data(num_test: int, clips: int) -> dict:
  return dict(source_kwargs=dict(num_videos=num_test, clips_per_video=clips, **CLIP),
              transform="video_clip", transform_kwargs=dict(CLIP))


def pretrain(variant: str, epochs: int, num_train: int, num_test: int, width: int
             ) -> ml_collections.ConfigDict:
  """One pretraining stage: "dsm" or "moco"."""
  c = common.base_config()
  c.method = "dsm"
  _data(c, num_train, num_test)
  _model(c, 128, width)
  c.data.transform = "dsm_clips"
  moco = variant == "moco"
  c.data.transform_kwargs = ml_collections.ConfigDict(
      dict(CLIP, crop_padding=2, inter_video=moco, warp=not moco))
  c.dsm = ml_collections.ConfigDict(dict(variant=variant, embed_dim=128, temperature=0.07,
                                         queue_size=256, momentum=0.99, triplet_margin=0.5))
  c.num_epochs = epochs
  c.log_every = 16
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.eval_every = 10**9  # at the end only
  c.evals = ml_collections.ConfigDict({"retrieval": dict(
      type="video_retrieval", splits=("test", "train"), ranks=(1, 5),
      data=dict(source_kwargs=dict(num_videos=num_test), transform="video_clip",
                transform_kwargs=dict(CLIP)))})
  return c


def probe(epochs: int, num_train: int, num_test: int, width: int) -> ml_collections.ConfigDict:
  """A linear probe on a frozen backbone, trained and tested on decorrelated videos."""
  c = common.base_config()
  c.method = "linear_probe"
  _data(c, num_train, num_test)
  # Labelled videos whose scene is independent of the class (another seed than the
  # pretraining videos): the probe measures how linearly the motion can be read out.
  c.data.source_kwargs = ml_collections.ConfigDict(dict(num_videos=num_train, scene_bias=0.0,
                                                        seed=1))
  _model(c, 4, width)
  c.data.transform = "video_clip"
  c.data.transform_kwargs = ml_collections.ConfigDict(dict(CLIP, crop_padding=2))
  c.num_epochs = epochs
  c.log_every = 16
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1  # on batch-normalised features (methods/linear_probe.py)
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.eval_every = 10**9
  c.evals = ml_collections.ConfigDict({"eval": dict(
      type="video_classification", split="test", data=_eval_data(num_test, 3))})
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, small=False, quick=False, width=16)
  width = 4 if args.quick else args.width
  if args.quick:  # a few steps of every stage (tests, colab smoke runs)
    num_train, num_test, pre_epochs, probe_epochs = 32, 16, 1, 1
  elif args.small:
    num_train, num_test, pre_epochs, probe_epochs = 192, 96, 3, 2
  else:
    num_train, num_test, pre_epochs, probe_epochs = 512, 256, 16, 8
  c = ml_collections.ConfigDict()
  c.stage_order = ("pretrain_dsm", "pretrain_moco", "probe_dsm", "probe_moco", "probe_random",
                   "report")
  stages = {"pretrain_dsm": pretrain("dsm", pre_epochs, num_train, num_test, width),
            "pretrain_moco": pretrain("moco", pre_epochs, num_train, num_test, width)}
  for name, source in (("probe_dsm", "pretrain_dsm"), ("probe_moco", "pretrain_moco"),
                       ("probe_random", None)):
    p = probe(probe_epochs, num_train, num_test, width)
    if source:
      p.init_from = ml_collections.ConfigDict(dict(
          stage=source, include=".*", exclude=".*classifier.*", rename=(("^", "backbone/"),),
          collections=("params", "batch_stats")))
    stages[name] = p
  c.stages = ml_collections.ConfigDict(stages)
  c.stages.report = ml_collections.ConfigDict(dict(
      report="dsm_report", inputs=("probe_dsm", "probe_moco", "probe_random"),
      metric="video_accuracy",
      labels=dict(probe_dsm="dsm", probe_moco="moco", probe_random="random_init")))
  return c
