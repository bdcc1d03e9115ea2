"""MEB-Net source pretraining of one expert, and the parts the adaptation method shares.

Zhai, Ye, Lu, Jia, Ji and Tian, "Multiple Expert Brainstorming for Domain Adaptive Person
Re-identification", ECCV 2020, arXiv 2007.01546, Sec. 3.1; official code YunpengZhai/MEB-Net
(`main/source_pretrain.py`, `mebnet/trainers.py` `PreTrainer`, `pretrain.sh`).

"mebnet_source": one expert (`config.model`, networks in `jaxcompress.methods.mebnet_nets`) on
labelled source PK batches, L = CE with label smoothing 0.1 (`reid.cross_entropy_label_smooth`)
+ the soft-margin batch-hard triplet loss on the pooled features (`reid.soft_triplet_loss`,
margin 0). With a `config.data.streams.target` stream every step also forwards a target batch in
training mode without a loss, so the BN statistics see the target domain (the release does).
`config.model.torchvision = dict(arch=..., path=...)` starts the backbone from a torchvision
ImageNet file the user provides (`models.torchvision_weights`). The release's learning rate,
`WarmupMultiStepLR` stepped once per epoch, is the schedule "mebnet_warmup_multistep".

Also here: `config.mebnet` defaults and the `mebnet_views` data transform (independently
augmented copies of every training image, one per expert, the release's
`Preprocessor(mutual=3)`), used by the adaptation method `jaxcompress.methods.mebnet`.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import reid
from jaxcompress.data import augment as augment_lib
from jaxcompress.data import transforms
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.methods.mebnet_nets import build_net
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState


def default_mebnet_config() -> ml_collections.ConfigDict:
  """`config.mebnet`: the release's settings (`train.sh`, `pretrain.sh`)."""
  return ml_collections.ConfigDict({
      "experts": (),                 # model blocks {name, kwargs, head} of the experts
      "init": {},                    # {"expert<i>": workdir of that expert's pretraining}
      "num_clusters": 500,
      "kmeans_iterations": 100,      # the release's MiniBatchKMeans max_iter
      "ce_soft_weight": 0.5,         # lambda_id
      "tri_soft_weight": 0.8,        # lambda_tri
      "epsilon": 0.1,                # label smoothing
      "margin": 0.0,                 # pretraining SoftTripletLoss margin (0: soft margin)
      "alpha": 0.999,                # mean-teacher momentum cap
      "scatter": True,               # authority from J (False: all ones, the release's --scatter 0)
      "centroids": "consensus",      # classifier init: "consensus" (release) or "own"
      "reset_optimizer": True,       # a fresh optimizer state every epoch (release)
      "pseudo_label_key": "pseudo_labels",
      "eval_expert": 0,              # the expert `predict` serves to the retrieval evaluator
      "eval_teacher": True,          # its EMA teacher (evaluated by the release) or its student
      "expert_eval_splits": (),      # ("query", "gallery"): every expert's mAP after each epoch
  })


def options(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.mebnet` over the defaults (a config without the block gets the defaults)."""
  opts = default_mebnet_config()
  opts.update(dict(config.get("mebnet", None) or {}))
  return opts


def _warmup_multistep(cfg: ml_collections.ConfigDict, total_steps: int,
                      steps_per_epoch: int) -> Any:
  """The pretraining `WarmupMultiStepLR` (stepped per epoch): lr * w(e) * gamma^#{m <= e} with
  w(e) = f + (1 - f) * e / warmup_epochs before warmup_epochs, else 1."""
  del total_steps
  warm, factor = float(cfg.get("warmup_epochs", 10)), float(cfg.get("warmup_factor", 0.01))
  milestones, gamma = tuple(cfg.get("milestones", (40, 70))), float(cfg.get("gamma", 0.1))

  def schedule(count):
    epoch = (count // steps_per_epoch).astype(jnp.float32)
    w = jnp.where(epoch < warm, factor + (1.0 - factor) * epoch / max(warm, 1.0), 1.0)
    drops = sum((epoch >= m).astype(jnp.float32) for m in milestones)
    return cfg.learning_rate * w * gamma ** drops
  return schedule


builder.register_schedule("mebnet_warmup_multistep", _warmup_multistep, override=True)


@transforms.register("mebnet_views")
def mebnet_views(train: bool, num_views: int = 3, augment: Sequence[Any] = ()) -> Any:
  """`num_views` independently augmented copies of each training image, stacked as "image"
  (V, H, W, C) (the release's `Preprocessor(mutual=3)`: one view per expert); in evaluation the
  example is unchanged. `augment` is an `augment.compose` list (flip, crop, random_erasing); set
  no `config.data.augment`, which would give all views one draw."""
  fn = augment_lib.compose(list(augment))

  def views(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if not train:
      return example
    image = np.asarray(example["image"])
    return {**example, "image": np.stack([fn(image, rng) for _ in range(num_views)])}
  return views


def views_of(images: jax.Array) -> list[jax.Array]:
  """The views of a batch: (B, V, H, W, C) -> V arrays (B, H, W, C); (B, H, W, C) -> [it]."""
  return [images[:, v] for v in range(images.shape[1])] if images.ndim == 5 else [images]


_CLASSIFIER = r"(^|/)(classifier|fc)(/|$)"  # classifier paths (ours; torchvision's "fc")


def merged_except_classifier(like: Any, loaded: Any, what: str) -> Any:
  """`like` with every leaf but the classifier's taken from `loaded` (an error otherwise)."""
  from jaxcompress.train import stages  # pylint: disable=g-import-not-at-top
  merged, taken = stages.merge_tree(like, loaded, exclude=_CLASSIFIER, what=what)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(like), sep="/")
  missing = [p for p in flat if p not in taken and not re.search(_CLASSIFIER, p)]
  if missing:
    raise ConfigError(f"{what}: {len(missing)} arrays have no counterpart in the loaded run "
                      f"(e.g. {missing[:3]}); start from a run of the same architecture.")
  return merged


def put_like(value: Any, like: jax.Array) -> jax.Array:
  """`value` as an array of `like`'s dtype and sharding (host hooks replace state leaves)."""
  return jax.device_put(jnp.asarray(value, like.dtype), like.sharding)


class MEBNetSource(Method):
  """Source pretraining of one expert (module docstring); `config.model.num_classes` = source
  identities."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    self.opts = options(config)
    self.net = build_net(config.model, config.model.num_classes)

  def apply(self, params: Any, model_state: Any, images: jax.Array, train: bool,
            rng: jax.Array | None = None) -> tuple[dict[str, jax.Array], Any]:
    """The net's outputs and the new model state (BN statistics move in training)."""
    variables = {"params": params, **model_state}
    if not train:
      return self.net.apply(variables, images, train=False), model_state
    out, updates = self.net.apply(variables, images, train=True, mutable=list(model_state),
                                  rngs={"dropout": rng} if rng is not None else {})
    return out, {**model_state, **updates}

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    variables = dict(self.net.init(rng, views_of(example_batch["image"])[0][:1], train=False))
    params = variables.pop("params")
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    return TrainState.create(params=params, model_state=dict(flax.core.unfreeze(variables)),
                             rng=rng, optimizers={"model": (self.tx, params)})

  def load_initial(self, state: TrainState) -> TrainState:
    """The backbone from `config.model.torchvision` (arch, path) when a path is given."""
    spec = dict(self.config.model.get("torchvision", None) or {})
    if not spec.get("path"):
      return state
    from jaxcompress.models import torchvision_weights  # pylint: disable=g-import-not-at-top
    loaded = torchvision_weights.convert_torchvision(spec["arch"], spec["path"])
    params, model_state = jax.device_get((state.params, state.model_state))
    what = f"ImageNet {spec['arch']}"
    params = {**params, "backbone": merged_except_classifier(
        params["backbone"], loaded["params"], f"{what} parameters")}
    stats = dict(model_state.get("batch_stats", {}))
    if "backbone" in stats:
      stats["backbone"] = merged_except_classifier(stats["backbone"], loaded["batch_stats"],
                                                   f"{what} BN statistics")
    return state.replace(params=params, model_state={**model_state, "batch_stats": stats})

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    labels = batch["label"]

    def loss_fn(params):
      out, model_state = self.apply(params, state.model_state, batch["image"], True,
                                    state.step_rng(0xD50))
      ce = reid.cross_entropy_label_smooth(out["logits"], labels, self.opts.epsilon)
      tri = reid.soft_triplet_loss(out["pooled"], labels, margin=self.opts.margin)
      return ce + tri, (model_state, ce, tri, out["logits"])

    (loss, (model_state, ce, tri, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    if "target/image" in batch:  # target images only move the BN statistics (release)
      _, model_state = self.apply(state.params, model_state, batch["target/image"], True,
                                  state.step_rng(0xD51))
    new_state = state.apply_gradients(self.tx, grads, model_state=model_state)
    return new_state, {"loss": loss, "loss_ce": ce, "loss_tri": tri,
                       "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    out, _ = self.apply(state.params, state.model_state, views_of(batch["image"])[0], False)
    return {"features": out["feature"]}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    """The mean feature norm (1 for valid rows); evaluate with the "retrieval" evaluator."""
    f = self.predict(state, batch)["features"]
    return {"feature_norm": jnp.sum(jnp.linalg.norm(f, axis=-1) * batch["mask"])}
