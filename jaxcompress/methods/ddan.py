"""DDAN (domain-generalisable person re-identification) and its ID + triplet baseline: "ddan".

"Dual Distribution Alignment Network for Generalizable Person Re-Identification" (Chen, Dai,
Liu, Chen, Ji, Shao; AAAI 2021, arXiv 2007.13249). The step follows the official code
(https://github.com/PeixianChen/DDAN, `reid/trainers.py`, `transmem.py`, `run.sh`):

  e = E(x) (MobileNetV2 blocks), f_d = T(stop_gradient(e)) (a first train-mode pass of the
  mapping network), f, logits = T(e) (a second one; T's batch statistics move twice per step);
  L_id = CE(logits, pid) over all source identities (`config.ddan.id_epsilon` label smoothing,
  0 in the release's plain `nn.CrossEntropyLoss`), L_tri = DDAN's batch-hard triplet loss on f
  (margin 0.3, L2-normalised inside), L_adv = `uniform_confusion_loss(D(f_d))` (D constant:
  the gradient reaches T only), L_mem = `identity_memory_loss` on f_d (T only);
  E and T take one step on L_id + 1.0 L_tri + 0.18 L_adv + w L_mem with w = 0.05 from epoch 3
  on and 0 before (the memory term is not differentiated then, its features held constant);
  D takes one step on `cross_entropy_label_smooth(D(stop_gradient(f_d)), central, 0)` with
  its own optimizer, central = 1 for samples of the central domain and 0 otherwise. All terms
  are computed at the parameters before the step, as the release's two backward passes do.
  The memory (`state.extra["memory"]`) is updated by every step with the epoch and the step
  within the epoch derived from `state.step` and the run's steps per epoch.

`config.ddan.variant = "baseline"`: E and T with L_id + 1.0 L_tri only (no D, no memory).

Central domain (`config.ddan.central`): a source name (resolved in `config.ddan.source_names`;
the release's "cuhk_sysu"), an index, or "wasserstein": the paper's rule, the source with the
smallest summed Sinkhorn distance to the others (`ddan_central.central_domain`), computed by the
host at the start of training on `central_samples` images per source (their pooled mapping
features f of the initial, ImageNet-initialised E and T, L2-normalised; the paper does not say
which features it compares); the chosen index lives in `state.extra["central"]`.

Networks (`ddan_nets`): E = MobileNetV2 blocks (`config.model.kwargs`: width_mult, setting),
T with `feature_dim` channels and its BN neck, D with `d_hidden` units; E and T start from the
torchvision MobileNetV2 file `config.ddan.pretrained` when given (`load_initial`).

Identity memory candidates (`config.ddan.memory_mask`): "aligned" (each identity's own dataset)
or "official_bug" (the release's misaligned blocks, 18,530 identities only).

Test feature (`predict`): the BN neck output of T (the evaluator L2-normalises it).
"""
from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import reid
from jaxcompress.data import augment as augment_lib
from jaxcompress.data import reid_dg
from jaxcompress.errors import ConfigError
from jaxcompress.methods import ddan_augment, ddan_central, ddan_nets
from jaxcompress.methods.base import Batch, HookContext, Method, Metrics
from jaxcompress.optim import builder
from jaxcompress.reid import memory as memory_lib
from jaxcompress.train.state import TrainState

VARIANTS = ("ddan", "baseline")
WASSERSTEIN = "wasserstein"
_NETS = ("encoder", "mapping", "discriminator")
_TRAINED_BY_MODEL = ("encoder", "mapping")
_DROPOUT_SALT = 0xDDA
# Imported for its side effect: the recipe's rotation and colour jitter become named
# augmentations of the image pipeline.
del ddan_augment


def default_ddan_config() -> ml_collections.ConfigDict:
  """`config.ddan` with the release's values (`run.sh`, `transmem.py`); not type-safe, so
  `central` takes a name, an index or "wasserstein"."""
  return ml_collections.ConfigDict({
      "variant": "ddan",
      "ids_per_domain": memory_lib.DDAN_IDS_PER_DOMAIN,  # identities of each source, in order
      "source_names": reid_dg.DG_SOURCES,
      "central": reid_dg.CENTRAL,    # a source name, an index, or "wasserstein"
      "central_samples": 256,        # images per source for the Wasserstein rule
      "sinkhorn_eps": 0.1,
      "memory_mask": "aligned",      # or "official_bug"
      "tri_weight": 1.0, "margin": 0.3, "id_epsilon": 0.0,
      "adv_weight": 0.18, "mem_weight": 0.05, "mem_start_epoch": 3,
      "knn": 8, "beta": 0.002, "alpha": 0.05,
      "feature_dim": 1280, "dropout": 0.5, "d_hidden": 128,
      "pretrained": "",              # torchvision mobilenet_v2 state_dict (.pth) for E and T
      "d_optim": {},                 # overrides of config.optim for D
  }, type_safe=False)


def eval_name(target: Any, trial: int | None = None) -> str:
  """The retrieval evaluator name of a target (and trial) that `ddan_report` averages over."""
  return f"{target}" if trial is None else f"{target}_trial{int(trial)}"


class DDAN(Method):
  """DDAN / ID + triplet baseline on `config.ddan` (module docstring)."""

  host_hooks = frozenset({"on_epoch_start"})

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    defaults = default_ddan_config()
    defaults.update(dict(config.get("ddan", {}) or {}))
    self.opts = o = defaults
    if o.variant not in VARIANTS:
      raise ConfigError(f"config.ddan.variant {o.variant!r}: use one of {VARIANTS}.")
    self.ids_per_domain = tuple(int(n) for n in o.ids_per_domain)
    self.num_ids = sum(self.ids_per_domain)
    num_classes = config.model.get("num_classes", self.num_ids)
    if num_classes != self.num_ids or min(self.ids_per_domain) < 1:
      raise ConfigError(f"config.model.num_classes ({num_classes}) must equal the sum of the "
                        f"positive config.ddan.ids_per_domain {self.ids_per_domain}; set both "
                        "from the DG source (DGSource.id_domains).")
    self.id_domains = self._id_domains()
    self.central = self._resolve_central(o.central)
    model_kwargs = dict(config.model.get("kwargs", {}) or {})
    self.nets = {
        "encoder": ddan_nets.Encoder(**model_kwargs),
        "mapping": ddan_nets.Mapping(self.num_ids, int(o.feature_dim), float(o.dropout)),
        "discriminator": ddan_nets.Discriminator(int(o.d_hidden)),
    }
    if not self.is_ddan:
      del self.nets["discriminator"]
    self.tx: dict[str, Any] = {}

  @property
  def is_ddan(self) -> bool:
    return self.opts.variant == "ddan"

  def _id_domains(self) -> np.ndarray:
    mask = self.opts.memory_mask
    if mask == "official_bug":
      if self.ids_per_domain != memory_lib.DDAN_IDS_PER_DOMAIN:
        raise ConfigError("config.ddan.memory_mask = 'official_bug' reproduces the release's "
                          "block layout of the 18,530 DG identities only; use 'aligned'.")
      return memory_lib.ddan_id_domains(aligned=False)
    if mask != "aligned":
      raise ConfigError(f"config.ddan.memory_mask {mask!r}: use 'aligned' or 'official_bug'.")
    return np.repeat(np.arange(len(self.ids_per_domain)), self.ids_per_domain).astype(np.int32)

  def _resolve_central(self, central: Any) -> int:
    """The central index, or -1 when the Wasserstein rule picks it at the start."""
    n = len(self.ids_per_domain)
    if central == WASSERSTEIN:
      return -1
    if isinstance(central, str):
      names = tuple(self.opts.source_names)
      if central not in names or len(names) != n:
        raise ConfigError(f"config.ddan.central {central!r} is not one of the {n} sources "
                          f"config.ddan.source_names = {names}; name one, give its index or "
                          f"'{WASSERSTEIN}'.")
      return names.index(central)
    if isinstance(central, bool) or not isinstance(central, (int, np.integer)) or not (
        0 <= central < n):
      raise ConfigError(f"config.ddan.central must be a source name, an index in [0, {n}) or "
                        f"'{WASSERSTEIN}', got {central!r}.")
    return int(central)

  # -- networks ------------------------------------------------------------------------------
  def call(self, name: str, params: Any, model_state: Any, x: jax.Array, train: bool,
           rng: jax.Array | None = None) -> tuple[Any, Any]:
    """Network `name` on x: (output, model_state with its batch statistics updated in train)."""
    own = dict(model_state.get(name, {}))
    variables = {"params": params[name], **own}
    if not train:
      return self.nets[name].apply(variables, x, train=False), model_state
    y, updates = self.nets[name].apply(variables, x, train=True, mutable=list(own),
                                       rngs={"dropout": rng} if rng is not None else None)
    return y, {**model_state, name: {**own, **updates}}

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    keys = dict(zip(_NETS, jax.random.split(rng, len(_NETS))))
    x = example_batch["image"][:1]
    params, model_state = {}, {}
    for name in self.nets:
      variables = dict(flax.core.unfreeze(self.nets[name].init(keys[name], x, train=False)))
      params[name] = variables.pop("params")
      model_state[name] = variables
      if name == "encoder":  # the mapping's example input is the encoder's output
        x = self.nets[name].apply({"params": params[name], **variables}, x, train=False)
      elif name == "mapping":
        x = jnp.zeros((1, int(self.opts.feature_dim)), x.dtype)
    trained = {n: params[n] for n in _TRAINED_BY_MODEL}
    self.tx = {"model": builder.make_optimizer(self.config.optim, trained, self.total_steps,
                                               self.steps_per_epoch)}
    optimizers = {"model": (self.tx["model"], trained)}
    extra = {}
    if self.is_ddan:
      d_cfg = ml_collections.ConfigDict({**self.config.optim.to_dict(),
                                         **dict(self.opts.get("d_optim", {}) or {})})
      d_params = {"discriminator": params["discriminator"]}
      self.tx["D"] = builder.make_optimizer(d_cfg, d_params, self.total_steps,
                                            self.steps_per_epoch)
      optimizers["D"] = (self.tx["D"], d_params)
      extra = {"memory": reid.identity_memory_init(self.num_ids, int(self.opts.feature_dim)),
               "central": jnp.asarray(self.central, jnp.int32)}
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers=optimizers, extra=extra)

  def load_initial(self, state: TrainState) -> TrainState:
    """E and T from the torchvision MobileNetV2 file `config.ddan.pretrained` (if set)."""
    path = self.opts.get("pretrained", "")
    if not path:
      return state
    from jaxcompress.models import torchvision_weights  # pylint: disable=g-import-not-at-top
    enc, mapping = ddan_nets.split_torchvision_weights(
        torchvision_weights.convert_torchvision("mobilenet_v2", path))
    params, model_state = dict(state.params), dict(state.model_state)
    for name, loaded in (("encoder", enc), ("mapping", mapping)):
      trees = {"params": dict(params[name]),
               "batch_stats": dict(model_state[name].get("batch_stats", {}))}
      for col, tree in trees.items():
        for module, value in loaded.get(col, {}).items():
          have = tree.get(module)
          if have is None or jax.tree.map(np.shape, have) != jax.tree.map(np.shape, value):
            raise ConfigError(f"config.ddan.pretrained: {name}/{module} does not match the "
                              "ImageNet MobileNetV2 (width 1.0, torchvision setting, "
                              "feature_dim 1280); use that model or no pretrained file.")
          tree[module] = value
      params[name] = trees["params"]
      model_state[name] = {**model_state[name], "batch_stats": trees["batch_stats"]}
    return state.replace(params=params, model_state=model_state)

  # -- central domain (host) -----------------------------------------------------------------
  def on_epoch_start(self, state: TrainState, epoch: int, context: HookContext) -> TrainState:
    """Checks the source's identity layout; picks the Wasserstein central domain once."""
    source = context.train_source
    if epoch == 0 and getattr(source, "id_domains", None) is not None:
      want = np.repeat(np.arange(len(self.ids_per_domain)), self.ids_per_domain)
      if not np.array_equal(np.asarray(source.id_domains), want):
        raise ConfigError(f"The training source's identities per domain "
                          f"{np.bincount(np.asarray(source.id_domains)).tolist()} differ from "
                          f"config.ddan.ids_per_domain {list(self.ids_per_domain)}.")
    if not self.is_ddan or int(jax.device_get(state.extra["central"])) >= 0:
      return state
    central, sums = self.wasserstein_central(state, source)
    if context.writer is not None:
      context.writer.log(f"DDAN central domain {central} (summed Sinkhorn distances "
                         f"{np.round(sums, 4).tolist()})")
    old = state.extra["central"]
    new = jax.device_put(jnp.asarray(central, jnp.int32), old.sharding)
    return state.replace(extra={**state.extra, "central": new})

  def wasserstein_central(self, state: TrainState, source: Any) -> tuple[int, np.ndarray]:
    """The paper's central domain from `central_samples` images per source domain."""
    domains = np.asarray(source.domains)
    rng = np.random.default_rng(int(self.config.get("seed", 0)))
    picked = []
    for d in range(len(self.ids_per_domain)):
      members = np.flatnonzero(domains == d)
      picked.append(rng.permutation(members)[:int(self.opts.central_samples)])
    index = np.concatenate(picked)
    data = self.config.data
    batch = int(data.get("eval_batch_size", 64))
    feats = []
    fn = jax.jit(lambda s, x: self.features(s, x)[1])
    for start in range(0, len(index), batch):
      images = np.stack([np.asarray(source[int(i)]["image"]) for i in index[start:start + batch]])
      feats.append(np.asarray(fn(state, augment_lib.normalize(images, data.mean, data.std))))
    return ddan_central.central_domain(np.concatenate(feats), domains[index],
                                       len(self.ids_per_domain), eps=float(self.opts.sinkhorn_eps))

  # -- step ----------------------------------------------------------------------------------
  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    o = self.opts
    images, labels = batch["image"], batch["label"]
    epoch = state.step // self.steps_per_epoch
    in_epoch = state.step % self.steps_per_epoch
    k_detached, k_main = jax.random.split(state.step_rng(_DROPOUT_SALT))

    def loss_fn(trained):
      params = {**state.params, **trained}
      ms = state.model_state
      e, ms = self.call("encoder", params, ms, images, True)
      aux = {}
      if self.is_ddan:  # the release's first mapping pass, on the detached encoder output
        (_, f_d, _), ms = self.call("mapping", params, ms, jax.lax.stop_gradient(e), True,
                                    k_detached)
      (logits, f, _), ms = self.call("mapping", params, ms, e, True, k_main)
      terms = {"id": reid.cross_entropy_label_smooth(logits, labels, float(o.id_epsilon)),
               "tri": reid.triplet_loss(f, labels, margin=float(o.margin))}
      total = terms["id"] + float(o.tri_weight) * terms["tri"]
      if self.is_ddan:
        d_logits, ms = self.call("discriminator", params, ms, f_d, True)
        terms["adv"] = reid.uniform_confusion_loss(d_logits)
        active = epoch >= int(o.mem_start_epoch)
        # Before mem_start_epoch the term weighs 0 and is not differentiated (raw features at
        # epoch 0 have unbounded log-derivatives); the memory still updates every step.
        f_mem = jax.lax.cond(active, lambda x: x, jax.lax.stop_gradient, f_d)
        terms["mem"], aux["memory"], _ = reid.identity_memory_loss(
            state.extra["memory"], f_mem, labels, batch["domain"], self.id_domains, epoch,
            in_epoch, knn=int(o.knn), beta=float(o.beta), alpha=float(o.alpha),
            central=state.extra["central"])
        w_mem = jnp.where(active, float(o.mem_weight), 0.0)
        total = total + float(o.adv_weight) * terms["adv"] + w_mem * terms["mem"]
        aux["f_d"] = jax.lax.stop_gradient(f_d)
      return total, (ms, terms, logits, aux)

    trained = {n: state.params[n] for n in _TRAINED_BY_MODEL}
    (loss, (ms, terms, logits, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
    new, opt = builder.apply_updates(self.tx["model"], grads, state.opt_state["model"], trained)
    params, opt_state, extra = {**state.params, **new}, {**state.opt_state, "model": opt}, {}
    metrics = {"loss": loss, **terms,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    if self.is_ddan:
      target = (batch["domain"] == state.extra["central"]).astype(jnp.int32)

      def d_loss_fn(d_params):
        out, d_ms = self.call("discriminator", d_params, ms, aux["f_d"], True)
        return reid.cross_entropy_label_smooth(out, target, 0.0), (d_ms, out)

      d_params = {"discriminator": state.params["discriminator"]}
      (d_loss, (ms, d_out)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      d_new, d_opt = builder.apply_updates(self.tx["D"], d_grads, state.opt_state["D"], d_params)
      params.update(d_new)
      opt_state["D"] = d_opt
      extra = {**state.extra, "memory": aux["memory"]}
      metrics.update(dis=d_loss, d_accuracy=jnp.mean(jnp.argmax(d_out, -1) == target))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=ms, extra=extra or state.extra)
    return new_state, metrics

  # -- evaluation ----------------------------------------------------------------------------
  def features(self, state: TrainState, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eval-mode (f_bn, f): the BN-neck test feature and the pooled mapping feature."""
    e, _ = self.call("encoder", state.params, state.model_state, images, False)
    (_, f, f_bn), _ = self.call("mapping", state.params, state.model_state, e, False)
    return f_bn, f

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """{"features": the BN-neck output of T} (the release's test feature, "pool5")."""
    return {"features": self.features(state, batch["image"])[0]}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    """No labelled objective on unseen domains: the summed feature norm (evaluate with
    retrieval evaluators, `eval_name`)."""
    f = self.predict(state, batch)["features"].astype(jnp.float32)
    return {"feature_norm": jnp.sum(jnp.linalg.norm(f, axis=-1) * batch["mask"])}


def _final_eval(workdir: str) -> dict[str, float]:
  with open(os.path.join(workdir, "stage_done.json"), encoding="utf-8") as f:
    return json.load(f)["eval"]


def ddan_report(config: ml_collections.ConfigDict, inputs: dict[str, str], stage_dir: str,
                root: str) -> dict[str, Any]:
  """`reid_report.json` in the run's workdir: unseen-target retrieval of each training stage.

  Per stage (label from `config.labels`, default the stage name) and per target of
  `config.targets`: the mean and standard deviation over the target's trials (`config.trials`,
  evaluators named `eval_name(target, trial)`; 0 trials: one evaluator `eval_name(target)`) of
  rank-1 and mAP; then `<label>_rank1` / `<label>_mAP`, the mean over targets of the per-target
  means (the paper's "average" column).

  Args:
    config: the report stage: targets, trials, labels.
    inputs: {stage: workdir} of the training stages.
    stage_dir: the report stage's workdir (unused).
    root: the staged run's workdir; the report goes there.

  Returns:
    The report dict ({"<label>_rank1", "<label>_mAP", "<label>/<target>/rank1_mean", ...}).
  """
  del stage_dir
  targets = tuple(config.get("targets", ()) or ())
  trials = int(config.get("trials", 0) or 0)
  labels = dict(config.get("labels", {}) or {})
  if not targets:
    raise ConfigError("The ddan_report stage needs `targets` (the unseen target names of the "
                      "retrieval evaluators, see ddan.eval_name).")
  report: dict[str, Any] = {"targets": list(targets), "trials": trials}
  for stage, workdir in inputs.items():
    final, label = _final_eval(workdir), labels.get(stage, stage)
    per_target = {"rank1": [], "mAP": []}
    for target in targets:
      names = [eval_name(target, t) for t in range(trials)] if trials else [eval_name(target)]
      for metric in per_target:
        keys = [f"{n}/{metric}" for n in names]
        missing = [k for k in keys if k not in final]
        if missing:
          raise ConfigError(f"Stage {stage!r} has no final metrics {missing[:3]}; name its "
                            "retrieval evaluators with ddan.eval_name(target, trial).")
        values = np.asarray([final[k] for k in keys], np.float64)
        report[f"{label}/{target}/{metric}_mean"] = float(values.mean())
        report[f"{label}/{target}/{metric}_std"] = float(values.std())
        per_target[metric].append(values.mean())
    for metric, values in per_target.items():
      report[f"{label}_{metric}"] = float(np.mean(values))
  with open(os.path.join(root, "reid_report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report

