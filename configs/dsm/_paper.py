"""The DSM paper's rows as staged configs (Wang et al., AAAI 2021, arXiv 2009.05757).

Pretraining follows the official scripts (`src/option.py`, `src/scripts/**`): SGD lr 0.003,
momentum 0.9, weight decay 1e-4, lr x0.1 at epochs 120 / 160 / 200 of 240, 16-frame clips with
stride 4, key encoder momentum 0.999, queue of 3569 keys, T = 0.07. Fine-tuning follows
`src/ft.py`: every layer, SGD lr 0.001, momentum 0.9, weight decay 1e-8, lr x0.3 at epochs 10,
20, 25, 30, 35 and 40 of 45, batch 4, 64 frames with stride 1 at 224 x 224, dropout 0.5 before
the classifier; the pretraining head is dropped. Videos are scored by averaging the predictions
of 10 clips per video (the README's protocol; the released `src/test.py` uses 2).

The data are local frame folders (`ucf101_frames`, `hmdb51_frames`; see
`jaxcompress/data/video_folders.py` for the layout); set `--config.stages.<stage>.data.data_dir`.
"""
from __future__ import annotations

import ml_collections

from configs import common

PRETRAIN_CLIP = dict(clip_len=16, stride=4)
FINETUNE_CLIP = dict(clip_len=64, stride=1)
NUM_CLASSES = {"ucf101_frames": 101, "hmdb51_frames": 51}


def _model(c: ml_collections.ConfigDict, name: str, num_classes: int, dropout: float = 0.0
           ) -> None:
  c.model.name = name
  c.model.num_classes = num_classes
  c.model.kwargs = ml_collections.ConfigDict(dict(dropout=dropout) if dropout else {})


def pretrain(model: str, dataset: str, variant: str, size: int, batch_size: int = 8,
             epochs: int = 240) -> ml_collections.ConfigDict:
  """DSM / MoCo / DSM(Triplet) pretraining of `model` on `dataset`'s training split."""
  c = common.base_config()
  c.method = "dsm"
  _model(c, model, 128)
  c.data.name = dataset
  c.data.mean = (0.485, 0.456, 0.406)  # ImageNet statistics, as the official transforms
  c.data.std = (0.229, 0.224, 0.225)
  c.data.batch_size = batch_size
  c.data.source_kwargs = ml_collections.ConfigDict(dict(short_side=size * 8 // 7))
  c.data.transform = "dsm_clips"
  c.data.transform_kwargs = ml_collections.ConfigDict(dict(
      PRETRAIN_CLIP, crop_size=size, inter_video=variant == "moco", warp=variant != "moco"))
  c.dsm = ml_collections.ConfigDict(dict(variant=variant, embed_dim=128, temperature=0.07,
                                         queue_size=3569, momentum=0.999, triplet_margin=0.5))
  c.num_epochs = epochs
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.003
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "multistep"
  c.optim.milestones = [120, 160, 200]
  c.optim.gamma = 0.1
  c.eval_every = 10**9
  c.evals = ml_collections.ConfigDict()
  return c


def finetune(model: str, dataset: str, size: int = 224, epochs: int = 45,
             clips_per_video: int = 10) -> ml_collections.ConfigDict:
  """Fine-tuning of every layer on `dataset` (head replaced), video accuracy on split 1."""
  c = common.base_config()
  c.method = "classification"
  _model(c, model, NUM_CLASSES[dataset], dropout=0.5)
  c.data.name = dataset
  c.data.mean = (0.485, 0.456, 0.406)
  c.data.std = (0.229, 0.224, 0.225)
  c.data.batch_size = 4
  c.data.eval_batch_size = 4
  c.data.source_kwargs = ml_collections.ConfigDict(dict(short_side=size * 8 // 7))
  c.data.transform = "video_clip"
  c.data.transform_kwargs = ml_collections.ConfigDict(dict(FINETUNE_CLIP, crop_size=size))
  c.num_epochs = epochs
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.001
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-8
  c.optim.schedule = "multistep"
  c.optim.milestones = [10, 20, 25, 30, 35, 40]
  c.optim.gamma = 0.3
  c.evals = ml_collections.ConfigDict({"eval": dict(
      type="video_classification", split="test",
      data=dict(source_kwargs=dict(short_side=size * 8 // 7, clips_per_video=clips_per_video,
                                   **FINETUNE_CLIP)))})
  return c


def retrieval(model: str, dataset: str, size: int = 112) -> ml_collections.ConfigDict:
  """Clip retrieval (test clips query train clips, R@1/5/10/20/50) of a pretrained backbone:
  a zero-step linear probe run whose only output is its evaluation."""
  c = common.base_config()
  c.method = "linear_probe"
  _model(c, model, NUM_CLASSES[dataset])
  c.data.name = dataset
  c.data.mean = (0.485, 0.456, 0.406)
  c.data.std = (0.229, 0.224, 0.225)
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.source_kwargs = ml_collections.ConfigDict(dict(short_side=size * 8 // 7))
  c.data.transform = "video_clip"
  c.data.transform_kwargs = ml_collections.ConfigDict(dict(PRETRAIN_CLIP, crop_size=size))
  c.num_steps = 1
  c.optim.learning_rate = 0.0
  c.evals = ml_collections.ConfigDict({"retrieval": dict(
      type="video_retrieval", splits=("test", "train"), ranks=(1, 5, 10, 20, 50))})
  return c


def handover(source: str, probe: bool = False) -> ml_collections.ConfigDict:
  """`init_from` of a pretraining stage's backbone (its 128-d head left out)."""
  rename = (("^", "backbone/"),) if probe else ()
  return ml_collections.ConfigDict(dict(stage=source, include=".*", exclude=".*classifier.*",
                                        rename=rename, collections=("params", "batch_stats")))


def staged(stages: dict[str, ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage_order = tuple(stages)
  c.stages = ml_collections.ConfigDict(stages)
  return c
