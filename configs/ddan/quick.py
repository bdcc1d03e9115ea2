"""DDAN vs its ID + triplet baseline on synthetic domain generalisation, in one command on a CPU.

The toy DG check of DDAN (Chen et al., AAAI 2021, arXiv 2007.13249): five labelled source
domains of 50 procedural persons each (`synthetic_reid_dg`: every domain has its own colour
cast, brightness, contrast, blur, noise and background, every camera its own shift), tested
without adaptation on unseen target domains. Stages:

1. `baseline`: E + T trained with L_id + L_tri (`config.ddan.variant = "baseline"`);
2. `ddan`: the same networks, data and budget with the domain discriminator, the uniform
   confusion loss and the identity-similarity memory; the central domain is chosen by the
   paper's Wasserstein (Sinkhorn) rule on the initial features;
3. `report`: `reid_report.json` with `baseline_rank1` and `ddan_rank1`, the rank-1 accuracy
   (standard protocol, same-camera matches removed) averaged over the unseen targets, and the
   per-target values.

CPU-sized changes to the release's recipe (everything else as `run.sh`): 64x32 images, a
MobileNetV2 at width 0.5 without the stride of its 160-channel stage (a 4x2 map before the
head), a 256-wide mapping, batch 64 = 16 persons x 4, no ImageNet weights (so SGD 0.1 for
every layer, no 0.01 backbone rate), pad-4 crop and flip only, 100 epochs with the learning rate x0.1 at epochs 40 and 80 as in the
release; the memory term starts at epoch 3 as in the release.
Command:
  python -m launch.main --config=configs/ddan/quick.py --workdir=/tmp/ddan_quick
Hardware: any CPU (2 cores).
Expected: see BENCHMARKS.md ("Re-identification quick configs"): at this size DDAN ties its
baseline; the ablation stages show what each of its two terms does on the toy.
Variants: `:small` (fewer epochs and target persons, for the slow test); `:ablation` adds
`ddan_no_adv` (adv_weight 0) and `ddan_no_mem` (mem_weight 0) stages (twice the time);
`:seed=N`, `:epochs=N`.
"""
from __future__ import annotations

import ml_collections

from configs import common
from jaxcompress.methods import ddan

NUM_SOURCES = 5
IDS_PER_SOURCE = 50
# MobileNetV2's stages without the stride of the 160-channel stage: 64x32 inputs end at 4x2
# (stride 16) instead of 2x1.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 1), (6, 320, 1, 1))


def _source_kwargs(num_test_ids: int, target: int | None = None) -> dict:
  kwargs = dict(num_sources=NUM_SOURCES, num_ids=IDS_PER_SOURCE, image_size=(64, 32),
                num_test_ids=num_test_ids, query_per_id=1, gallery_per_id=2)
  if target is not None:
    kwargs["target"] = target
  return kwargs


def train(variant: str, epochs: int, num_targets: int, num_test_ids: int, seed: int = 0
          ) -> ml_collections.ConfigDict:
  """One training stage ("baseline" or "ddan") evaluated on every unseen target."""
  c = common.base_config()
  c.method = "ddan"
  c.seed = seed
  c.data.name = "synthetic_reid_dg"
  c.data.source_kwargs = ml_collections.ConfigDict(_source_kwargs(num_test_ids))
  c.data.mean = common.IMAGENET_MEAN
  c.data.std = common.IMAGENET_STD
  c.data.batch_size = 64
  c.data.eval_batch_size = 128
  c.data.sampler = ml_collections.ConfigDict(dict(name="pk", num_instances=4, labels="label"))
  c.data.augment = [("crop", {"padding": 4}), ("flip", {})]
  c.num_devices = 1
  c.model.name = "ddan_mobilenet_v2"
  c.model.num_classes = NUM_SOURCES * IDS_PER_SOURCE
  c.model.kwargs = ml_collections.ConfigDict(dict(width_mult=0.5, setting=SETTING))
  c.ddan = ddan.default_ddan_config()
  c.ddan.variant = variant
  c.ddan.ids_per_domain = (IDS_PER_SOURCE,) * NUM_SOURCES
  c.ddan.source_names = tuple(f"synthetic_{d}" for d in range(NUM_SOURCES))
  c.ddan.central = ddan.WASSERSTEIN
  c.ddan.central_samples = 64
  c.ddan.feature_dim = 256
  c.num_epochs = epochs
  c.log_every = 15
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "multistep"  # the release's x0.1 at 40 and 80 of 100 epochs
  c.optim.milestones = [round(epochs * 0.4), round(epochs * 0.8)]
  c.optim.gamma = 0.1
  c.eval_every = 10**9  # at the end only
  c.checkpoint_every = 10**9
  c.evals = ml_collections.ConfigDict({
      ddan.eval_name(f"target{t}"): dict(
          type="retrieval", splits=("query", "gallery"), ranks=(1, 5, 10),
          data=dict(source_kwargs=_source_kwargs(num_test_ids, t)))
      for t in range(num_targets)})
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, small=False, epochs=0, seed=0, ablation=False)
  epochs = args.epochs or (4 if args.small else 100)
  num_targets, num_test_ids = (2, 50) if args.small else (4, 100)
  stages = {name: train(name, epochs, num_targets, num_test_ids, args.seed)
            for name in ("baseline", "ddan")}
  if args.ablation:  # DDAN with one of its two alignment terms switched off
    for name, weight in (("ddan_no_adv", "adv_weight"), ("ddan_no_mem", "mem_weight")):
      stages[name] = train("ddan", epochs, num_targets, num_test_ids, args.seed)
      stages[name].ddan[weight] = 0.0
  trained = tuple(stages)
  stages["report"] = dict(report="ddan_report", inputs=trained,
                          targets=tuple(f"target{t}" for t in range(num_targets)), trials=0,
                          labels={n: n for n in trained})
  c = ml_collections.ConfigDict()
  c.stage_order = trained + ("report",)
  c.stages = ml_collections.ConfigDict(stages)
  return c
