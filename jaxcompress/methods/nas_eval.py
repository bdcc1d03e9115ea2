"""Retraining a searched cell from scratch: the DARTS evaluation recipe (`quark0/darts`
`cnn/train.py`; DARTS arXiv 1806.09055 Sec. 3.3, PC-DARTS arXiv 1907.05737 Sec. 4.2, BNAS arXiv
1911.10862 Sec. 4).

Per step, on the network `config.model` (normally "darts_eval", `jaxcompress.nas.eval_network`):

* cutout (DeVries & Taylor, arXiv 1708.04552; DARTS `utils.Cutout`): one `cutout` x `cutout`
  square per training image, centred uniformly over the image and clipped at its border, set to 0
  AFTER normalisation (as DARTS, which applies `Cutout` after `Normalize`); done on device from the
  step's RNG (`cutout_batch`), so the input pipeline is unchanged;
* loss L = CE(logits) + aux_weight * CE(aux_logits) (aux_weight 0.4; the auxiliary head sits on
  cell 2 * layers // 3);
* drop path with probability p = drop_path_prob * epoch / epochs (DARTS sets
  `model.drop_path_prob = args.drop_path_prob * epoch / args.epochs` at every epoch start); p is
  written into `state.extra["drop_prob"]` by `on_epoch_start` (traced: no recompiles);
* gradients clipped to global norm `config.optim.grad_clip` (5 in the paper configs) before the
  optimizer (SGD 0.025 momentum 0.9, weight decay 3e-4, cosine to 0 in the paper configs).

PCNN cells (`config.model.kwargs.op_set = "pcnn"`, BNAS with PCNN): the projection loss
L_P = (lambda / 2) sum ||C_hat - W o (C + eta delta)||^2 (PCNN, arXiv 1811.12755; BNAS arXiv
1911.10862) is added with delta = dL/dC_hat of the same step, read from the gradient w.r.t. the
model's "perturbations" collection (one forward/backward, then L_P's own gradient, so delta is
this step's); `pcnn_lambda` (1e-4) and `pcnn_eta` (1.0) set its weight and step (CHOICE: our
defaults, no published values). Metric `projection_loss`.

Settings in `config.nas_eval` (defaults = the paper): aux_weight 0.4, drop_path_prob 0.2
(DARTS; 0.3 in PC-DARTS' train.py), cutout 16; the clipping norm is `config.optim.grad_clip`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.methods.classification import Classification, cross_entropy
from jaxcompress.nas import pcnn
from jaxcompress.train.state import TrainState


def default_nas_eval_config() -> ml_collections.ConfigDict:
  """`config.nas_eval` with the DARTS CIFAR-10 evaluation settings."""
  return ml_collections.ConfigDict(dict(aux_weight=0.4, drop_path_prob=0.2, cutout=16,
                                        pcnn_lambda=1e-4, pcnn_eta=1.0))


def apply_cutout(images: jax.Array, cy: jax.Array, cx: jax.Array, length: int) -> jax.Array:
  """Zeroes, per image n, the square rows [cy_n - length//2, cy_n + length//2) x columns
  [cx_n - length//2, cx_n + length//2), clipped at the border (DARTS `utils.Cutout` with given
  centres).

  Args:
    images: (N, H, W, C).
    cy, cx: (N,) integer centres.
    length: side of the square.

  Returns:
    The images with the squares set to 0.
  """
  h, w = images.shape[1:3]
  half = length // 2
  cy = jnp.asarray(cy)[:, None, None]
  cx = jnp.asarray(cx)[:, None, None]
  yy = jnp.arange(h)[None, :, None]
  xx = jnp.arange(w)[None, None, :]
  inside = (yy >= cy - half) & (yy < cy + half) & (xx >= cx - half) & (xx < cx + half)
  return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def cutout_batch(images: jax.Array, rng: jax.Array, length: int) -> jax.Array:
  """DARTS `Cutout(length)` on a batch: per image one length x length square set to 0.

  The centre (y, x) is uniform over the pixels and the square is clipped at the border (so it
  may lie partly outside the image), as `utils.Cutout`; see `apply_cutout`.

  Args:
    images: (N, H, W, C) normalised images.
    rng: PRNG key.
    length: side of the square; 0 returns the images unchanged.

  Returns:
    The images with the squares zeroed.
  """
  if length <= 0:
    return images
  n, h, w = images.shape[:3]
  ky, kx = jax.random.split(rng)
  cy = jax.random.randint(ky, (n,), 0, h)
  cx = jax.random.randint(kx, (n,), 0, w)
  return apply_cutout(images, cy, cx, length)


class NASEval(Classification):
  """Trains an evaluation network with auxiliary loss, drop-path schedule, cutout, grad clip."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    s = default_nas_eval_config()
    given = config.get("nas_eval", ml_collections.ConfigDict())
    if "grad_clip" in given:
      raise ConfigError("config.nas_eval.grad_clip is now config.optim.grad_clip (the optimizer "
                        "clips for every method); move the value there, e.g. "
                        "--config.optim.grad_clip=5.")
    s.update(given)
    self.settings = s
    self.num_epochs = max(1, -(-self.total_steps // max(self.steps_per_epoch, 1)))

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    # Gradient clipping is part of the optimizer (`config.optim.grad_clip`, builder).
    state = super().init(rng, example_batch)
    return state.replace(extra={"drop_prob": jnp.zeros((), jnp.float32)})

  def drop_prob(self, epoch: Any) -> jax.Array:
    """The DARTS linear schedule drop_path_prob * epoch / epochs (traced)."""
    return (jnp.asarray(self.settings.drop_path_prob, jnp.float32)
            * jnp.asarray(epoch, jnp.float32) / self.num_epochs)

  def on_epoch_start(self, state: TrainState, epoch: Any) -> TrainState:
    return state.replace(extra={**state.extra, "drop_prob": self.drop_prob(epoch)})

  def _forward(self, params: Any, model_state: Any, images: jax.Array, rng: jax.Array,
               drop_prob: jax.Array) -> tuple[jax.Array, jax.Array | None, Any]:
    variables = {"params": params, **model_state}
    mutable = [k for k in model_state if k not in ("params", "perturbations")]
    (logits, aux), updates = self.model.apply(
        variables, images, train=True, drop_prob=drop_prob, with_aux=True, mutable=mutable,
        rngs={"drop_path": rng})
    return logits, aux, {**model_state, **updates}

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng_cut, rng_drop = jax.random.split(state.step_rng(23))
    images = cutout_batch(batch["image"], rng_cut, int(self.settings.cutout))
    drop_prob = state.extra["drop_prob"]

    perturbations = state.model_state.get("perturbations")

    def loss_fn(params, perturbations):
      ms = dict(state.model_state)
      if perturbations is not None:
        ms["perturbations"] = perturbations
      logits, aux, model_state = self._forward(params, ms, images, rng_drop, drop_prob)
      loss = jnp.mean(cross_entropy(logits, batch["label"]))
      aux_loss = jnp.zeros((), jnp.float32)
      if aux is not None:
        aux_loss = jnp.mean(cross_entropy(aux, batch["label"]))
      total = loss + self.settings.aux_weight * aux_loss
      return total, (logits, model_state, loss, aux_loss)

    (total, (logits, model_state, loss, aux_loss)), (grads, deltas) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, perturbations)
    proj_loss = jnp.zeros((), jnp.float32)
    if perturbations is not None:  # PCNN cells: add the projection loss with this step's delta
      lam, eta = self.settings.pcnn_lambda, self.settings.pcnn_eta
      proj_loss, g_proj = jax.value_and_grad(
          lambda p: pcnn.projection_loss_tree(p, deltas, lam, eta))(state.params)
      grads = jax.tree.map(jnp.add, grads, g_proj)
      total = total + proj_loss
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = state.apply_gradients(self.tx, grads, model_state=model_state)
    return new_state, {"loss": total, "ce_loss": loss, "aux_loss": aux_loss,
                       "accuracy": accuracy, "drop_prob": drop_prob,
                       **({"projection_loss": proj_loss} if perturbations is not None else {})}
