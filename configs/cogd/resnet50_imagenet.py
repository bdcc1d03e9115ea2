"""CoGD channel pruning of ResNet-50 on ImageNet: the official README's rows (unconfirmed setup).

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142); the official repository
bczhangbczhang/CoGD lists, in a commented block of its README, ResNet-50 rows against a 4.09 G
FLOPs, 75.24 % baseline: CoGD-0.35 1.46 G (70.27 % / 72.07 % after fine-tuning), CoGD-0.50
2.24 G (73.20 / 74.38), CoGD-0.75 2.53 G (73.64 / 74.89), CoGD-0.95 3.31 G (74.74 / 75.78).
The pruning code was never released: what the row names' 0.35 ... 0.95 mean, the mask placement,
the loss weights and the schedules are unconfirmed. Here each row is its FLOPs target (the
row's FLOPs over 4.09 G, counted by `jaxcompress.summary` at 224 x 224), soft masks after bn1
and bn2 of every bottleneck (`jaxcompress.methods.cogd_prune`, the released correction), and
this library's schedules (search 30 epochs from torchvision's weights, fine-tuning 60 epochs,
SGD with cosine decay, batch 256): not the paper's.
Stages: `search` -> `cut` (to the FLOPs target, `prune.materialize`) -> `finetune` -> `report`
(`cogd_prune_report.json`: `search/accuracy`, `finetune/accuracy`, MACs and parameters).
Command:
  python -m launch.main --config=configs/cogd/resnet50_imagenet.py:row=0.50 --workdir=DIR \
      --config.stages.search.cogd.torchvision=resnet50-0676ba61.pth
Data: ImageNet-2012 through TFDS (`imagenet2012`, prepared from the downloaded archives).
Hardware: GPUs or TPUs (a ResNet-50 ImageNet run).
Expected: the README rows above, which this setup is not known to reproduce.
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.rbnn import _imagenet

BASELINE_FLOPS = 4.09  # G, the README's ResNet-50
ROWS = {"0.35": 1.46, "0.50": 2.24, "0.75": 2.53, "0.95": 3.31}


def _stage(method: str, epochs: int) -> ml_collections.ConfigDict:
  c = _imagenet.imagenet_config("resnet50")
  c.method = method
  c.model.layers = "float"
  c.model.kwargs = ml_collections.ConfigDict()
  c.num_epochs = epochs
  c.data.batch_size = 256
  c.optim = common.base_config().optim
  c.optim.learning_rate = 0.01
  c.optim.weight_decay = 1e-4
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, row="0.50", quick=False)
  if args.row not in ROWS:
    raise ValueError(f"configs/cogd/resnet50_imagenet.py takes :row= one of {sorted(ROWS)}, got "
                     f"{args.row!r}.")
  cogd = ml_collections.ConfigDict(dict(
      variant="matlab_heuristic", gates=r"gate[12]$", input_shape=(224, 224, 3),
      flops_target=ROWS[args.row] / BASELINE_FLOPS, torchvision=""))
  search = _stage("cogd_prune", 1 if args.quick else 30)
  search.cogd = cogd
  cut = _stage("cogd_prune", 1)
  cut.cogd = cogd
  cut.report = "cogd_materialize"
  cut.inputs = ("search",)
  finetune = _stage("cogd_finetune", 1 if args.quick else 60)
  finetune.cogd = ml_collections.ConfigDict(dict(student=""))
  finetune.paths_from = (("cogd.student", "cut", "student.json"),)
  report = ml_collections.ConfigDict(dict(
      report="cogd_prune_report", inputs=("search", "finetune"), cogd=dict(student=""),
      paths_from=(("cogd.student", "cut", "student.json"),)))
  c = ml_collections.ConfigDict()
  c.stage_order = ("search", "cut", "finetune", "report")
  c.stages = ml_collections.ConfigDict(dict(search=search, cut=cut, finetune=finetune,
                                            report=report))
  return c
