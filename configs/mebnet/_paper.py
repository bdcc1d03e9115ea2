"""The MEB-Net paper rows (arXiv 2007.01546, Table 1) as staged configs, with the release's recipe.

Experts in the release's order (`train.sh dukemtmc market1501 densenet resnet50 inceptionv3`):
  * densenet: DenseNet-121, ReLU + pooling, features duplicated to 2048 (official `densenet.py`);
  * resnet50: ResNet-50 with last stride 1 and no stem ReLU (official `resnet.py`);
  * inceptionv3: Inception-v3's trunk to Mixed_7c, no auxiliary head, no input transform
    (official `inceptionv3.py`);
each starting from torchvision's ImageNet weights when `weights_dir` holds torchvision's files
(`<weights_dir>/densenet121-a639ec97.pth`, `resnet50-19c8e357.pth`,
`inception_v3_google-1a9a5a14.pth`, the files the release's torchvision downloaded; pass
`densenet=...,resnet=...,inception=...` for other names); without them the experts start from
random weights and the rows cannot be reached.

Pretraining (`pretrain.sh`): Adam 3.5e-4, weight decay 5e-4, linear warm-up over 10 epochs from
0.01x, x0.1 at epochs 40 and 70, 80 epochs x 200 iterations, batch 64 = 16 persons x 4, 256x128
images (bicubic), flip + 10-pixel pad-and-crop, a target batch forwarded every step for BN.
Brainstorming (`train.sh`): 40 epochs x 800 iterations, Adam 3.5e-4 constant (a new one every
epoch), weight decay 5e-4, k = 500, lambda_id 0.5, lambda_tri 0.8, EMA cap 0.999, batch 64 =
16 x 4, flip + pad-and-crop + random erasing (p 0.5, ImageNet-mean fill); the reported model is
the DenseNet-121 expert's EMA teacher (the paper's best single expert).
Hardware: one accelerator with ~40 GB (three experts and their teachers at batch 64).
"""
from __future__ import annotations

import os

import ml_collections

from configs import common
from configs.mebnet import _stages

SIZE = (256, 128)
DATASETS = {"duke": ("dukemtmc_reid", 702), "market": ("market1501", 751)}
WEIGHT_FILES = dict(densenet="densenet121-a639ec97.pth", resnet="resnet50-19c8e357.pth",
                    inception="inception_v3_google-1a9a5a14.pth")
ERASE_FILL = tuple(m + m * s for m, s in zip(common.IMAGENET_MEAN, common.IMAGENET_STD))
PRETRAIN_AUGMENT = [("flip", {}), ("crop", {"padding": 10})]
ADAPT_AUGMENT = PRETRAIN_AUGMENT + [("random_erasing", {"probability": 0.5,
                                                        "value": ERASE_FILL})]


def experts(weights_dir: str, files: dict[str, str]) -> dict[str, dict]:
  """The three experts; `torchvision.path` is None without a weights directory."""
  def path(key: str) -> str | None:
    return os.path.join(weights_dir, files[key]) if weights_dir else None

  return {
      "densenet": dict(name="densenet121", kwargs={}, head=dict(duplicate=True),
                       torchvision=dict(arch="densenet121", path=path("densenet"))),
      "resnet50": dict(name="reid_resnet",
                       kwargs=dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), width=64,
                                   last_stride=1, stem_relu=False),
                       head={}, torchvision=dict(arch="resnet50", path=path("resnet"))),
      "inceptionv3": dict(name="inception_v3",
                          kwargs=dict(aux_logits=False, transform_input=False), head={},
                          torchvision=dict(arch="inception_v3", path=path("inception"))),
  }


def paper_row(source: str, target: str, arg: str | None) -> ml_collections.ConfigDict:
  """The staged config of source -> target ("duke" / "market")."""
  args = common.parse_arg(arg, data_dir="", weights_dir="", **WEIGHT_FILES)
  (source_name, source_ids), (target_name, _) = DATASETS[source], DATASETS[target]

  def dataset(name):
    return dict(name=name, source_kwargs=dict(image_size=SIZE), data_dir=args.data_dir or None)

  files = {k: args[k] for k in WEIGHT_FILES}
  return _stages.mebnet_stages(
      experts(args.weights_dir, files), source=dataset(source_name), target=dataset(target_name),
      pretrain=dict(num_classes=source_ids, epochs=80, iters=200, batch_size=64,
                    num_instances=4, augment=PRETRAIN_AUGMENT, eval_source=True,
                    optim=dict(name="adam", learning_rate=3.5e-4, weight_decay=5e-4,
                               schedule="mebnet_warmup_multistep", warmup_epochs=10,
                               warmup_factor=0.01, milestones=(40, 70), gamma=0.1)),
      adapt=dict(num_clusters=500, epochs=40, iters=800, batch_size=64, num_instances=4,
                 augment=ADAPT_AUGMENT, eval_expert=0, kmeans_iterations=100,
                 optim=dict(name="adam", learning_rate=3.5e-4, weight_decay=5e-4,
                            schedule="constant")))
