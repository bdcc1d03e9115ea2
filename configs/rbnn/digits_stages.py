"""Two stages in one command: a float ResNet-20 teacher, then the RBNN 1w1a student initialised from it.

Rotated Binary Neural Network (arXiv 2009.13055) on scikit-learn's digits (real 8x8 digits,
offline). Stage "teacher" is the quickstart's float ResNet-20 (configs/baseline/
digits_resnet20.py, shortened); stage "student" is configs/rbnn/digits_resnet20.py whose float stem
(the first convolution and its batch norm, parameters and statistics, float in both networks)
starts from the teacher's (`init_from`). Not a paper row: it checks the stage engine end to end.
Handing over the binarised layers' latent weights too (rename `Conv_` to `RBNNConv_` inside
the blocks: `--config.stages.student.init_from.rename`) was worse on digits in 15 epochs: a
ReLU network's weights are a poor start for a hardtanh 1-bit network (final accuracy 0.84
with every shared layer, 0.83 without the batch norms, 0.944 with the stem only).
Command:
  python -m launch.main --config=configs/rbnn/digits_stages.py --workdir=/tmp/rbnn_stages
Outputs: <workdir>/teacher and <workdir>/student (each an ordinary run workdir), and
<workdir>/stages.json (the final eval metrics of each stage). Rerunning skips the finished stage
and resumes the unfinished one.
Hardware: any CPU; about 1-2 minutes on 2 cores.
Expected (measured, seed 0, native weight-gradient kernel): teacher 0.989, student 0.944 final
eval accuracy on the 360 held-out digits (>= 0.90).
Variants: `:quick` (one epoch per stage; a smoke test).
"""
import ml_collections

from configs import common
from configs.baseline import digits_resnet20 as float_digits
from configs.rbnn import digits_resnet20 as rbnn_digits


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  teacher = float_digits.get_config()
  teacher.num_epochs = 1 if args.quick else 10
  student = rbnn_digits.get_config()
  student.num_epochs = 1 if args.quick else 15
  student.init_from = ml_collections.ConfigDict(
      {"stage": "teacher", "include": "^(stem|BatchNorm_0)/", "exclude": "", "rename": (),
       "collections": ("params", "batch_stats")})
  c = ml_collections.ConfigDict()
  c.stage_order = ("teacher", "student")
  c.stages = ml_collections.ConfigDict({"teacher": teacher, "student": student})
  return c
