"""DDAN on the domain-generalisation re-ID benchmark (the paper's DG table), as stages.

Chen et al., "Dual Distribution Alignment Network for Generalizable Person Re-Identification",
AAAI 2021, arXiv 2007.13249; recipe of the official `run.sh` / `transmem.py`
(PeixianChen/DDAN):

  * train: every image of Market-1501, DukeMTMC-reID, CUHK03, CUHK02 and CUHK-SYSU ("reid_dg",
    18,530 identities, one joint classifier), 256x128, pad 10 + random crop, horizontal flip,
    rotation within 5 degrees, colour jitter (brightness and saturation 0.5-2, hue +-0.1; the
    `ddan_augment` augmentations), PK batches of 16 persons x 4 images;
  * MobileNetV2 E / T from torchvision's ImageNet file (`weights=`), 1280-d features,
    dropout 0.5; SGD nesterov, momentum 0.9, weight decay 5e-4, learning rate 0.1 (E and the
    1x1 head of T at 0.01), x0.1 every 40 epochs, 100 epochs; D with its own SGD at 0.1;
    L_id + 1.0 L_tri + 0.18 L_adv + 0.05 L_mem (from epoch 3), knn 8, beta 0.002, alpha 0.05;
  * test: VIPeR, PRID, GRID, i-LIDS, ten seeded trials each (`reid_dg` target splits), BN-neck
    features L2-normalised, Euclidean, same-identity same-camera gallery entries removed;
    `reid_report.json` has per target the mean and std over trials of rank-1 and mAP, and
    `baseline_rank1` / `ddan_rank1`, the average over the four targets.

Stages: `baseline` (L_id + L_tri, same recipe), `ddan`, `report` (`ddan_only`: no baseline).
Arguments: `weights=` the torchvision `mobilenet_v2-b0353104.pth` file (default: that name in
the working directory), `central=` "cuhk_sysu" (the release) or "wasserstein" (the paper's
rule), `memory_mask=` "aligned" or "official_bug", `protocol=` "standard" or "ddan" (the
release's metric variants, for comparison with its tables only).
Command:
  python -m launch.main --config=configs/ddan/dg.py:central=wasserstein \
      --config.stages.ddan.data.data_dir=/data/reid --workdir=/tmp/ddan_dg
  (set data.data_dir of every training stage; the folders are those `jaxcompress.data.reid_dg`
  and `reid_folders` document).
Hardware: one GPU; 1,158 steps per epoch.
"""
from __future__ import annotations

import ml_collections

from configs import common
from jaxcompress.data import reid_dg
from jaxcompress.methods import ddan
from jaxcompress.reid import memory

# E and the 1x1 head of T are the ImageNet backbone parts (`lr_mult` 0.1 in transmem.py).
BACKBONE = r"encoder/.*|mapping/head(_bn)?/.*"
TARGETS = ("viper", "prid", "grid", "ilids")
AUGMENT = [("crop", {"padding": 10}), ("flip", {}), ("ddan_rotation", {"degrees": 5.0}),
           ("ddan_color_jitter", {"brightness": (0.5, 2.0), "saturation": (0.5, 2.0),
                                  "hue": (-0.1, 0.1)})]


def train(variant: str, args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """One training stage of the release's recipe ("ddan" or the "baseline")."""
  c = common.base_config()
  c.method = "ddan"
  c.seed = 0
  c.data.name = "reid_dg"
  c.data.source_kwargs = ml_collections.ConfigDict(dict(image_size=(256, 128)))
  c.data.mean = common.IMAGENET_MEAN
  c.data.std = common.IMAGENET_STD
  c.data.batch_size = 64
  c.data.eval_batch_size = 128
  c.data.num_workers = 8
  c.data.sampler = ml_collections.ConfigDict(dict(name="pk", num_instances=4, labels="label"))
  c.data.augment = AUGMENT
  c.model.name = "ddan_mobilenet_v2"
  c.model.num_classes = memory.DDAN_NUM_IDS
  c.model.kwargs = ml_collections.ConfigDict()
  c.ddan = ddan.default_ddan_config()
  c.ddan.variant = variant
  c.ddan.central = args.central
  c.ddan.memory_mask = args.memory_mask
  c.ddan.pretrained = args.weights
  c.ddan.d_optim = ml_collections.ConfigDict(dict(groups=[]))  # D: lr_mult 1
  c.num_epochs = 100
  c.log_every = 100
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "multistep"
  c.optim.milestones = [40, 80]
  c.optim.gamma = 0.1
  c.optim.groups = [dict(regex=BACKBONE, learning_rate=0.01)]
  c.eval_every = 10**9  # at the end only
  c.evals = ml_collections.ConfigDict({
      ddan.eval_name(target, trial): dict(
          type="retrieval", splits=("query", "gallery"), ranks=(1, 5, 10),
          protocol=args.protocol,
          data=dict(source_kwargs=dict(target=target, trial=trial, image_size=(256, 128))))
      for target in TARGETS for trial in range(reid_dg.NUM_TRIALS)})
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ddan_only=False, weights="mobilenet_v2-b0353104.pth",
                          central=reid_dg.CENTRAL, memory_mask="aligned", protocol="standard")
  c = ml_collections.ConfigDict()
  trained = ("ddan",) if args.ddan_only else ("baseline", "ddan")
  c.stage_order = trained + ("report",)
  stages = {name: train(name, args) for name in trained}
  stages["report"] = dict(report="ddan_report", inputs=trained, targets=TARGETS,
                          trials=reid_dg.NUM_TRIALS, labels={n: n for n in trained})
  c.stages = ml_collections.ConfigDict(stages)
  return c
