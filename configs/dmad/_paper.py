"""The paper-scale DMAD rows (arXiv 2011.08382, the headline table of SJLeo/DMAD's README).

Each row is one staged run (`configs/dmad/_stages.py`: teacher -> search -> materialize ->
distilled / undistilled fine-tuning -> report) with the official settings of SJLeo/DMAD
`scripts/{cyclegan,mobile_cyclegan,pix2pix,mobile_pix2pix}/<task>/{train,finetune}.sh` over
the `options/options.py` defaults:

* CycleGAN rows (`cyclegan_row`): the teacher recipe of `configs/gan/horse2zebra.py` (ResNet
  ngf 64, 9 blocks; PatchGAN ndf 64; LSGAN; cycle 10 + 10, identity 0.5; pools of 50 (the mask
  and fine-tune models hard-code `ImagePool(50)`); Adam 2e-4 (0.5, 0.999); batch 1; load 286,
  crop 256, flips; 100 + 100 epochs per stage). Search: `--mask_weight_decay 1e-3
  --lambda_update_coeff 1 --upconv_bound --upconv_coeff 100` and the MACs early stop at
  `--AtoB_macs_threshold` / `--BtoA_macs_threshold` 4.0 G; fine-tuning `--lambda_attention_distill
  100 --lambda_discriminator_distill 1e-4`. CycleGAN* (`mobile=True`,
  `scripts/mobile_cyclegan/horse2zebra`): GAN Compression's mobile ResNet generator at ngf 32,
  mask decay 2e-3, group coefficient 5, upconv coefficient 200, targets 2.5 G (AtoB) / 4.0 G
  (BtoA), distilled from the mobile model at the teacher width `--pretrain_ngf` 64.
* Pix2Pix rows (`pix2pix_row`): the teacher recipe of `configs/gan/edges2shoes.py` (U-Net-256
  ngf 64 = `--pretrain_ngf`; PatchGAN ndf 128 with batch norm on the 6-channel pair; hinge; L1
  100; no pool; load 256, no flip), the search from ngf 48 with `--mask_weight_decay 1e-2`,
  `--frozen_threshold` 0.8 (edges2shoes) / 0.7 (cityscapes) and `--AtoB_macs_threshold` 3.0 G /
  4.0 G; batch 4 (edges2shoes) / 1 (cityscapes, `--direction BtoA`); attention distillation 10.
  Pix2Pix* (`mobile=True`): the mobile ResNet generator at ngf 48 with the instance-norm
  PatchGAN ndf 128 (`models/MobilePix2Pix.py`), batch 1 (the scripts leave the default), mask
  decay 6e-3 / 2e-3, group coefficient 2, upconv coefficient 100 / 200, target 4.5 G.

Where the method here differs from the official code (the rows' docstrings repeat what applies):
  * the bound is updated after every epoch and reaches 0 at 75% of the search's steps (the
    paper's ~150 updates over 200 epochs); at batch 4 the official loop counts samples against
    dataset size x batch x epochs, so its bound stops near 0.31 (`dmad.official_total`);
  * the last checkpoint of each stage is the result, not the one with the best test FID;
  * Pix2Pix attention is distilled at the U-Net's two 64x64 taps ("down2", "up6_norm"): the
    official code also distils the two 16x16 ones ("down4", "up4_norm") against the teacher D's
    map resized through an 8-bit image, which `dmad_finetune` does not reproduce;
  * co-attention targets weigh G and D maps 0.5 / 0.5 (`distill.co_attention_loss`); the
    official Pix2Pix* uses 0.5 / 0.25.

Evaluation: every training stage ends with pytorch-fid's FID ("fid" evaluator, Inception pool3
on 8-bit images, `jaxcompress.evals.fid`) of G_A(A) against the real B images of the test split
(CycleGAN, each input image once) or of G(A) against B on the val split (Pix2Pix), plus the
method's own metrics every epoch. Top-level keys linked into every stage:
  * `config.dmad.inception_weights`: the pytorch-fid weight file (default `FID_WEIGHTS`, where
    pytorch-fid's own download puts it);
  * `config.dmad.real_stats`: precomputed real statistics (.npz with "mu" and "sigma": DMAD's
    `real_stat_B.npz` / `real_stat_A.npz`, README "Download our pre-prepared real statistic");
    None: the statistics of the real images the evaluation reads;
  * `config.dmad.dataroot` (Pix2Pix rows): the dataset folder (`pix2pix_folder` layout).
The report (`<workdir>/dmad_report.json`) compares teacher, distilled and undistilled "fid".
"""
from __future__ import annotations

import os
from typing import NamedTuple

import ml_collections

from configs.dmad import _stages
from configs.gan import _common
from configs.gan import edges2shoes as gan_edges2shoes
from configs.gan import horse2zebra as gan_horse2zebra

# pytorch-fid's download location ($TORCH_HOME/hub/checkpoints, TORCH_HOME = ~/.cache/torch).
FID_WEIGHTS = "~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth"
# FID at the end of each stage only (`every` in steps; the last step always evaluates): one
# evaluation costs an Inception pass over the split and a 2048x2048 sqrtm on the host.
FID_EVERY = 10 ** 9
EPOCHS = (100, 100)              # every stage: official n_epochs + n_epochs_decay
TRAINING_STAGES = ("teacher", "search", "distilled", "undistilled")
CYCLEGAN_TAPS = ("down2", "res3", "res6", "res9")   # official model.9, .12, .15, .18
PIX2PIX_TAPS = ("down2", "up6_norm")                 # the 64x64 pair of the official four
# Gates whose masks take the "bound" penalty x upconv_coeff (official get_mask_weight_loss:
# model.3, model.7, model.24, model.28 for CycleGAN; no model.7 in MaskMobilePix2Pix).
CYCLEGAN_SAMPLING_GATES = r"^(stem|down1|up1|up2)_gate$"
MOBILE_PIX2PIX_SAMPLING_GATES = r"^(stem|up1|up2)_gate$"


class PaperRow(NamedTuple):
  """One row of DMAD's headline table (SJLeo/DMAD README; MACs on 1x3x256x256)."""
  model: str          # "CycleGAN", "CycleGAN*", "Pix2Pix", "Pix2Pix*"
  task: str
  macs: float         # of the compressed generator
  macs_ratio: float   # original / compressed
  params: float
  params_ratio: float
  metric: str         # "fid" or "miou"
  value: float


def _distill(lambda_attention: float, taps: tuple[str, ...]) -> dict:
  """Fine-tune keys: official `--lambda_attention_distill`, `--lambda_discriminator_distill
  1e-4`, G taps, the teacher D's taps after its second conv ("model.4") and last hidden
  layer ("model.10")."""
  return {"lambda_attention": lambda_attention, "lambda_discriminator": 1e-4,
          "distill_taps": taps, "disc_tap": "hidden1", "disc_last_tap": "hidden3"}


def _search(lambda_mask: float, lambda_update: float, macs_target_g: float | dict[str, float],
            **extra) -> dict:
  """Search keys: `--mask_weight_decay`, `--lambda_update_coeff`, the MACs target in G (thop
  MACs / 1000^3 as the official early stop; {generator: G} for per-direction targets), cube
  bound updated every epoch."""
  target = ({g: v * 1e9 for g, v in macs_target_g.items()} if isinstance(macs_target_g, dict)
            else macs_target_g * 1e9)
  return {"lambda_mask": lambda_mask, "lambda_update": lambda_update, "rule": "cube",
          "update_every": 1, "macs_target": target, "macs_input_size": 256,
          "threshold": 0, **extra}


def _link_top_level(c: ml_collections.ConfigDict, *, split: str, fid_data: dict | None,
                    dataroot: bool) -> None:
  """Adds `config.dmad` (module docstring) and the FID evaluator of every training stage."""
  c.dmad = ml_collections.ConfigDict()
  c.dmad.inception_weights = ml_collections.FieldReference(os.path.expanduser(FID_WEIGHTS))
  c.dmad.real_stats = ml_collections.config_dict.placeholder(str)
  if dataroot:
    c.dmad.dataroot = ml_collections.config_dict.placeholder(str)
    for name in c.stage_order:
      c.stages[name].data.source_kwargs.root = c.dmad.get_ref("dataroot")
  for name in TRAINING_STAGES:
    s = c.stages[name]
    s.evals = ml_collections.ConfigDict({"eval": {"type": "method", "split": split}})
    fid = ml_collections.ConfigDict({"type": "fid", "split": split, "real_key": "real_B",
                                     "fake_key": "fake_B", "every": FID_EVERY})
    if fid_data:
      fid.data = ml_collections.ConfigDict(fid_data)
    fid.inception_weights = c.dmad.get_ref("inception_weights")
    fid.real_stats = c.dmad.get_ref("real_stats")
    s.evals.fid = fid


def cyclegan_row(task: str, direction: str, *, mobile: bool = False) -> ml_collections.ConfigDict:
  """A CycleGAN row: TFDS `cycle_gan/<task>`, G_A translating domain `direction` says.

  Args:
    task: the TFDS config ("horse2zebra", "summer2winter_yosemite").
    direction: "AtoB", or "BtoA" for the reverse row (zebra2horse, winter2summer): the same
      training with A and B swapped, so that G_A (the generator the report measures) is it.
    mobile: CycleGAN* (mobile ResNet generator, ngf 32).
  """
  base = gan_horse2zebra.get_config(f"task={task}")
  base.data.transform_kwargs.direction = direction
  teacher = None
  if mobile:
    teacher = _common.network("mobile_resnet_generator", ngf=64, n_blocks=9, output_nc=3)
    base.model.generator = _common.network("mobile_resnet_generator", ngf=32, n_blocks=9,
                                           output_nc=3)
    search = _search(2e-3, 5.0, {"G_A": 2.5, "G_B": 4.0}, sampling_gates=CYCLEGAN_SAMPLING_GATES,
                     sampling_coeff=200.0)
  else:
    search = _search(1e-3, 1.0, 4.0, sampling_gates=CYCLEGAN_SAMPLING_GATES,
                     sampling_coeff=100.0)
  c = _stages.dmad_stages(base, kind="cyclegan", teacher_epochs=EPOCHS, search_epochs=EPOCHS,
                          finetune_epochs=EPOCHS, dmad={**search, **_distill(100.0, CYCLEGAN_TAPS)},
                          report_metric="fid", teacher_generator=teacher)
  # Each input image once (official test loop over the A paths); the real side is the target
  # domain (or `config.dmad.real_stats`).
  length = "A" if direction == "AtoB" else "B"
  _link_top_level(c, split="test", dataroot=False,
                  fid_data={"name": "cycle_gan", "source_kwargs": {"task": task,
                                                                   "length": length}})
  return c


def pix2pix_row(dataset: str, *, mobile: bool = False) -> ml_collections.ConfigDict:
  """A Pix2Pix row on a `pix2pix_folder` set ("edges2shoes" or "cityscapes").

  Args:
    dataset: "edges2shoes" (GAN Compression's edges2shoes-r, batch 4) or "cityscapes" (photo |
      label images, trained label -> photo with `direction="BtoA"`, batch 1).
    mobile: Pix2Pix* (mobile ResNet generator, ngf 48, instance-norm discriminator, batch 1).
  """
  if dataset not in ("edges2shoes", "cityscapes"):
    raise ValueError(f"DMAD's Pix2Pix rows are edges2shoes and cityscapes, not {dataset!r}.")
  cityscapes = dataset == "cityscapes"
  base = gan_edges2shoes.get_config()
  if cityscapes:
    base.data.transform_kwargs.direction = "BtoA"
  base.data.batch_size = 1 if (cityscapes or mobile) else 4
  if mobile:
    teacher = _common.network("mobile_resnet_generator", ngf=64, n_blocks=9, output_nc=3)
    base.model.generator = _common.network("mobile_resnet_generator", ngf=48, n_blocks=9,
                                           output_nc=3)
    base.model.discriminator = _common.network("patchgan_discriminator", ndf=128, n_layers=3,
                                               norm="instance")
    search = _search(2e-3 if cityscapes else 6e-3, 2.0, 4.5,
                     sampling_gates=MOBILE_PIX2PIX_SAMPLING_GATES,
                     sampling_coeff=200.0 if cityscapes else 100.0)
    taps = CYCLEGAN_TAPS
  else:
    teacher = ml_collections.ConfigDict(base.model.generator.to_dict())   # ngf 64
    base.model.generator.kwargs.ngf = 48
    search = _search(1e-2, 0.0, 4.0 if cityscapes else 3.0,
                     frozen_threshold=0.7 if cityscapes else 0.8)
    taps = PIX2PIX_TAPS
  c = _stages.dmad_stages(base, kind="pix2pix", teacher_epochs=EPOCHS, search_epochs=EPOCHS,
                          finetune_epochs=EPOCHS, dmad={**search, **_distill(10.0, taps)},
                          report_metric="fid", teacher_generator=teacher)
  _link_top_level(c, split="val", dataroot=True, fid_data=None)
  return c
