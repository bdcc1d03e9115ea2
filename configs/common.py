"""Shared config pieces: the base experiment block and `parse_arg` (big_vision style)."""
from __future__ import annotations

import ml_collections

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses "quick,epochs=3" into {"quick": True, "epochs": 3} over `defaults`."""
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    if not value:
      out[key] = True
    else:
      kind = type(defaults.get(key, "")) if key in defaults else str
      out[key] = kind(value) if kind is not bool else value.lower() in ("1", "true", "yes")
  return out


def cifar10_data(c: ml_collections.ConfigDict) -> None:
  """CIFAR-10 from TFDS with the standard augmentation (pad-4 random crop + flip), in place.

  Normalised with the CIFAR-10 mean/std; the test split is the eval split; 4 grain workers.
  Batch sizes stay the experiment's own.
  """
  c.data.name = "cifar10"
  c.data.eval_split = "test"
  c.data.mean = CIFAR_MEAN
  c.data.std = CIFAR_STD
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.num_workers = 4


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; experiments override them."""
  c = ml_collections.ConfigDict()
  c.method = "classification"
  c.seed = 0
  c.num_epochs = 1
  c.num_steps = -1          # > 0 overrides num_epochs
  c.log_every = 50          # steps
  c.eval_every = -1         # steps; -1 = every epoch
  c.checkpoint_every = -1   # steps; -1 = every epoch
  c.max_to_keep = 3
  c.async_checkpoint = True
  c.num_devices = -1        # devices in the mesh; -1 = all (global) devices
  # Host pipeline: consecutive training steps per jitted call (one lax.fori_loop over stacked
  # batches; jaxcompress/train/multi_step.py). Saves a dispatch and, on CPU, XLA's fresh
  # temporary buffer per step; runs still stop at every epoch, eval and checkpoint boundary.
  c.steps_per_call = 8
  c.progress = "auto"       # "bar" on a terminal, "lines" otherwise, or "none"
  # XLA options of the compiled train/eval steps, e.g. xla_gpu_autotune_level=0 (see
  # jaxcompress/train/compile_options.py); options named for another backend are dropped.
  c.compiler_options = ml_collections.ConfigDict()
  # CPU: trace the steps with convolutions off oneDNN's custom call, so the persistent
  # compilation cache can store them, and keep the exported init and train step (and the initial
  # state) in train.program_store: restarts skip tracing and compiling (slower steps;
  # compile_options.py).
  c.cacheable_programs = False

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet20"
  c.model.layers = "float"
  c.model.layer_kwargs = ml_collections.ConfigDict()
  c.model.num_classes = 10
  c.model.kwargs = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.batch_size = 128
  c.data.eval_batch_size = 128
  c.data.mean = (0.5,)
  c.data.std = (0.5,)
  c.data.crop_padding = 0
  c.data.flip = False
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.num_workers = 0
  c.data.search_split = 0.0  # > 0: batches pair train[:f] with "val_" examples from train[f:]
  c.data.source_kwargs = ml_collections.ConfigDict()
  c.data.transform = ""      # named per-example transform (jaxcompress/data/transforms.py)
  c.data.transform_kwargs = ml_collections.ConfigDict()
  c.data.on_device = False   # True: split held on device, steps run as one jitted lax.scan
  c.data.scan_steps = -1     # on_device: most steps per scan call; -1 = one epoch
  c.data.on_device_max_bytes = 4 << 30  # on_device: refuse larger splits (per device)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 0.0
  c.optim.groups = []
  return c


def search_then_retrain(search: ml_collections.ConfigDict, retrain: ml_collections.ConfigDict,
                        genotype_key: str = "model.kwargs.genotype") -> ml_collections.ConfigDict:
  """Two stages: an architecture search, then training of the found cell from scratch.

  The "retrain" stage reads the search stage's `genotype.json` through the `genotype_key`
  config entry (hand-over `paths_from`, jaxcompress.train.stages).
  """
  retrain = ml_collections.ConfigDict(retrain.to_dict())
  retrain.paths_from = ((genotype_key, "search", "genotype.json"),)
  c = ml_collections.ConfigDict()
  c.stage_order = ("search", "retrain")
  c.stages = ml_collections.ConfigDict({"search": search, "retrain": retrain})
  return c
