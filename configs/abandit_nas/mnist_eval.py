"""ABanditNAS on MNIST: the released MNIST cells, PGD-40 training, PGD-100 evaluation at eps 0.3.

Paper: arXiv 2008.00698 (MNIST table). Network of the review release
(`anonymous-paper/anonymous1789`, script/mnist_darts_manual.sh): genotype
ABANDIT_MINIST_NORMAL_MANNUAL_1, C = 16, 6 layers, hand-placed denoising, no auxiliary head,
normalisation inside the model (MNIST mean/std), BN eps 1e-3. Evaluation: clean and PGD-100
(eps 0.3, step 0.01, random start), the `defense_all.py` MNIST protocol.

Command:
  python -m launch.main --config=configs/abandit_nas/mnist_eval.py --workdir=$HOME/runs/abnas_mnist
Data: `tfds build mnist --file_format=array_record` once.
Hardware: 1 GPU (about a day for 100 epochs of PGD-40 training).
Expected (not confirmed against the paper): clean about 99.5 %; PGD-100 accuracy in
final_report.json.
Choices (paper silent): PGD-40 step 0.01 training (unconfirmed), SGD 0.025 cosine,
100 epochs, batch 128, no affine augmentation (the pipeline offers crop/flip only; none used).
Variants: `:quick`.
"""
from configs import common
from configs.abandit_nas import _shared
from jaxcompress.nas.abandit_network import MNIST_MEAN, MNIST_STD


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.method = "adversarial"
  c.data.name = "mnist"
  c.data.eval_split = "test"
  c.data.mean = (0.0,)
  c.data.std = (1.0,)
  c.data.batch_size = 128
  c.data.eval_batch_size = 500
  c.data.num_workers = 4
  c.model.name = "abandit_network"
  c.model.init = "he_fout"
  c.model.kwargs = common.ml_collections.ConfigDict(dict(
      genotype="ABANDIT_MINIST_NORMAL_MANNUAL_1", C=16, layers=6, auxiliary=False,
      manual_denoising=True, mean=MNIST_MEAN, std=MNIST_STD))
  c.adv = _shared.adv_block(epsilon=0.3, step_size=0.01, num_steps=40,
                            eval_attacks=("clean", "pgd100"), robust_eval_at_end=False)
  c.num_epochs = 100
  c.optim.learning_rate = 0.025
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.log_every = 100
  c.eval_every = 10 * (60000 // 128)
  if args.quick:
    c.model.kwargs.C = 4
    c.adv.num_steps = 2
    c.adv.eval_attacks = ("clean", "pgd2")
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.data.num_workers = 0
    c.num_steps = 2
  return c
