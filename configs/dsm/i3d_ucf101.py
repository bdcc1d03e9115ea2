"""DSM paper rows: I3D pretrained on UCF101 split 1, fine-tuned on UCF101 and HMDB51.

Wang et al., AAAI 2021, arXiv 2009.05757, README table (I3D, UCF101 pretraining; UCF101 /
HMDB51 top-1): random init 47.9 / 29.6, MoCo 62.3 / 36.5, DSM(Triplet) 70.7 / 48.5, DSM 74.8 /
52.5. One config, the row chosen by its argument: `:dsm` (default), `:moco`, `:triplet`, or
`:random` (no pretraining stage); `,quick` added to a row (e.g. `:moco,quick`) runs every stage
for one epoch, a smoke run of the recipe on the real data. Recipes in configs/dsm/_paper.py.
Command:
  python -m launch.main --config=configs/dsm/i3d_ucf101.py:moco --workdir=/tmp/dsm_i3d_moco \
      --config.stages.pretrain.data.data_dir=UCF101 --config.stages.ucf101.data.data_dir=UCF101 \
      --config.stages.hmdb51.data.data_dir=HMDB51
Hardware: GPUs (I3D at 224 x 224, 64-frame fine-tuning clips).
Expected: the row of the table above.
"""
from configs import common
from configs.dsm import _paper

ROWS = ("dsm", "moco", "triplet", "random")


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  rows = [k for k in args.keys() if k != "quick"]
  if len(rows) > 1 or any(r not in ROWS for r in rows):
    raise ValueError(f"configs/dsm/i3d_ucf101.py takes one of {ROWS} (plus ',quick'), got {arg!r}.")
  row = rows[0] if rows else "dsm"
  stages = {}
  if row != "random":
    stages["pretrain"] = _paper.pretrain("i3d", "ucf101_frames", row, size=224)
  for name, dataset in (("ucf101", "ucf101_frames"), ("hmdb51", "hmdb51_frames")):
    stages[name] = _paper.finetune("i3d", dataset)
    if row != "random":
      stages[name].init_from = _paper.handover("pretrain")
  if args.quick:
    for stage in stages.values():
      stage.num_epochs = 1
  return _paper.staged(stages)
