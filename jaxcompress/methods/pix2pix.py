"""Pix2Pix (Isola et al., arXiv 1611.07004): paired image-to-image translation, "pix2pix".

The official training step (junyanz/pytorch-CycleGAN-and-pix2pix `models/pix2pix_model.py`,
`optimize_parameters`; the same order in SJLeo/DMAD `models/Pix2Pix.py`, whose full-size Pix2Pix
models are the teachers of DMAD, arXiv 2011.08382):

  * forward: fake_B = G(A) (training mode: batch statistics, dropout);
  * discriminator step first: one Adam step of D on
      0.5 (L(D(cat(A, fake_B)), fake) + L(D(cat(A, B)), real))
    (fakes detached, the conditional D sees input and output stacked on channels, 6 for RGB);
  * then the generator step with the updated D frozen: one Adam step of G on
      L_G = L_GAN(D(cat(A, fake_B)), real) + lambda_L1 |fake_B - B|_1      (paper Eq. 4)
    with lambda_L1 = 100. The same fake_B is used by both steps (recomputed here with the same
    dropout key; G's batch statistics are updated once).

GAN loss (`gan.gan_mode`): "hinge" by default, as DMAD trains its Pix2Pix models (`--gan_mode
hinge` in scripts/pix2pix/{edges2shoes,cityscapes}/train.sh: D minimises relu(1 - D(real)) +
relu(1 + D(fake)), G minimises -D(fake)); "vanilla" is the original pix2pix cross-entropy on
logits; "lsgan" also works. No image pool by default (official pix2pix `pool_size=0`;
`gan.pool_size` > 0 pools cat(A, fake_B) as the official `fake_AB_pool`). UNet-256 generator with
batch norm and dropout, 70x70 PatchGAN with batch norm (`config.model`), Adam 2e-4 (0.5, 0.999)
for both, weights N(0, 0.02) and batch-norm scales N(1, 0.02).

Batches: "A" (input) and "B" (target), float32 NHWC in [-1, 1], paired. Training metrics are the
official ones: loss (= L_G), G_GAN, G_L1 (weighted), D_real, D_fake. Eval (networks in eval mode,
running batch statistics and no dropout, as DMAD's `model_eval`): per-image PSNR of fake_B
against B on [0, 1]-scaled images (`psnr`, 10 log10(1 / MSE)) and the mean absolute error in
[-1, 1] units (`l1`). `predict` gives fake_B, real_A and real_B for image evaluators (FID).

For subclasses (DMAD): `generator_loss(params, state, batch, rng)` returns (loss, aux) from the
whole parameter tree and state; `generator_layers(name)` / `build_generator(name)` choose the
generator and its layer factory.

Config block `config.gan`: gan_mode ["hinge"], lambda_L1 [100], pool_size [0], init_type
["normal"], init_gain [0.02], d_optim [{}].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress.errors import ConfigError
from jaxcompress.gan import image_pool
from jaxcompress.gan.base import GANMethod, l1, per_example_mean, psnr01
from jaxcompress.gan.losses import GANLoss
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.train.state import TrainState

_GEN_SALT, _POOL_SALT = 0, 1


class Pix2Pix(GANMethod):
  """Pix2Pix: a conditional generator G(A) ~ B and a conditional PatchGAN D(A, B)."""

  GENERATORS = ("G",)
  DISCRIMINATORS = ("D",)

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    g = self.gan
    self.lambda_l1 = float(g.get("lambda_L1", 100.0))
    self.pool_size = int(g.get("pool_size", 0))
    self.criterion = GANLoss(g.get("gan_mode", "hinge"))
    if self.lambda_l1 < 0 or self.pool_size < 0:
      raise ConfigError(f"config.gan: lambda_L1 and pool_size must be >= 0, got "
                        f"{self.lambda_l1} and {self.pool_size}.")

  # -- state -----------------------------------------------------------------------------------

  def example_input(self, batch: Batch, name: str) -> jax.Array:
    if name == "G":
      return batch["A"]
    return jnp.concatenate([batch["A"], batch["B"]], axis=-1)

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    one = {"A": example_batch["A"][:1], "B": example_batch["B"][:1]}
    k_nets, k_extra = jax.random.split(rng)
    params, model_state = self.init_networks(
        k_nets, {n: self.example_input(one, n) for n in self.nets})
    out = jax.eval_shape(lambda p, s: self.net("G", p, s, one["A"], train=False)[0],
                         params, model_state)
    if out.shape != one["B"].shape:
      raise ConfigError(f"G maps {one['A'].shape} to {out.shape}, the target is "
                        f"{one['B'].shape}: check config.model.generator.kwargs (output_nc, "
                        "num_downs: the image side must be divisible by 2^num_downs).")
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers=self.make_optimizers(params),
                             extra=self.init_extra(k_extra, example_batch, params))

  def init_extra(self, rng: jax.Array, example_batch: Batch, params: Any) -> dict[str, Any]:
    """Method state: the cat(A, fake_B) pool when `gan.pool_size` > 0 (subclasses add theirs)."""
    del rng, params
    if not self.pool_size:
      return {}
    shape = self.example_input(example_batch, "D").shape[1:]
    return {"fake_AB_pool": image_pool.init(self.pool_size, shape)}

  # -- losses ----------------------------------------------------------------------------------

  def generator_loss(self, params: Any, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """The official `backward_G` loss at `params`: L_GAN(D(A, G(A)), real) + lambda |G(A) - B|.

    Args:
      params: every network's parameters (G's are the differentiated ones).
      state: the training state (model_state, extra).
      batch: "A" and "B".
      rng: G's dropout key.

    Returns:
      (L_G, aux) with aux = {"metrics": {"G_GAN", "G_L1"}, "fakes": {"fake_B"},
      "model_state": the state after the calls, "taps": {"G": features by role} when
      `collect_taps` is set (DMAD distillation), else {}}.
    """
    out = self.net("G", params, state.model_state, batch["A"], train=True, rng=rng,
                   taps=self.collect_taps)
    fake_b, ms = out[:2]
    taps = {"G": out[2]} if self.collect_taps else {}
    pred_fake, ms = self.net("D", params, ms, jnp.concatenate([batch["A"], fake_b], -1),
                             train=True)
    terms = {"G_GAN": self.criterion.generator(pred_fake),
             "G_L1": l1(fake_b, batch["B"]) * self.lambda_l1}
    return terms["G_GAN"] + terms["G_L1"], {"metrics": terms, "fakes": {"fake_B": fake_b},
                                            "model_state": ms, "taps": taps}

  def discriminator_loss(self, params: Any, state: TrainState, batch: Batch,
                         fakes: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
    """The official `backward_D` loss at `params`: 0.5 (L(D(fake_AB), fake) + L(D(real_AB), real)).

    Args:
      params: every network's parameters (D's are the differentiated ones).
      state: the training state.
      batch: "A" and "B".
      fakes: {"fake_AB"}: cat(A, fake_B) as drawn from the pool.

    Returns:
      (loss_D, {"metrics": {"D_real", "D_fake"}, "model_state": ...}).
    """
    ms = state.model_state
    pred_fake, ms = self.net("D", params, ms, jax.lax.stop_gradient(fakes["fake_AB"]), train=True)
    pred_real, ms = self.net("D", params, ms, jnp.concatenate([batch["A"], batch["B"]], -1),
                             train=True)
    terms = {"D_fake": self.criterion(pred_fake, False), "D_real": self.criterion(pred_real, True)}
    return 0.5 * (terms["D_fake"] + terms["D_real"]), {"metrics": terms, "model_state": ms}

  # -- steps -----------------------------------------------------------------------------------

  def discriminator_step(self, state: TrainState, batch: Batch, fake_b: jax.Array,
                         rng: jax.Array) -> tuple[TrainState, dict[str, Any]]:
    """The pool's draw (when kept), then one Adam step of D."""
    fake_ab = jax.lax.stop_gradient(jnp.concatenate([batch["A"], fake_b], -1))
    extra = state.extra
    if self.pool_size:
      fake_ab, pool = image_pool.query(state.extra["fake_AB_pool"], fake_ab, rng)
      extra = {**extra, "fake_AB_pool": pool}

    def loss_fn(d_params):
      return self.discriminator_loss({**state.params, **d_params}, state, batch,
                                     {"fake_AB": fake_ab})
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        self.subtree(state.params, self.DISCRIMINATORS))
    return self.update(state, "D", grads, model_state=aux["model_state"], extra=extra), aux

  def generator_step(self, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[TrainState, jax.Array, dict[str, Any]]:
    """One Adam step of G with D frozen (only G's gradients are taken)."""
    def loss_fn(g_params):
      return self.generator_loss({**state.params, **g_params}, state, batch, rng)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        self.subtree(state.params, self.GENERATORS))
    return self.update(state, "G", grads, model_state=aux["model_state"]), loss, aux

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """The official `optimize_parameters`: forward, discriminator step, generator step."""
    k_gen, k_pool = state.step_rng(_GEN_SALT), state.step_rng(_POOL_SALT)
    # The forward's G statistics update is dropped: the generator step repeats this exact call
    # (same params, statistics and dropout key) and keeps its update, so they change once.
    fake_b, _ = self.net("G", state.params, state.model_state, batch["A"], train=True, rng=k_gen)
    state, d_aux = self.discriminator_step(state, batch, fake_b, k_pool)
    state, loss, g_aux = self.generator_step(state, batch, k_gen)
    metrics = {"loss": loss, **g_aux["metrics"], **d_aux["metrics"]}
    return state.replace(step=state.step + 1), metrics

  # -- evaluation ------------------------------------------------------------------------------

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    fake_b, _ = self.net("G", state.params, state.model_state, batch["A"], train=False)
    return {"fake_B": fake_b, "real_A": batch["A"], "real_B": batch["B"]}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    fake_b = self.predict(state, batch)["fake_B"]
    mask = batch["mask"]
    return {"psnr": jnp.sum(psnr01(fake_b, batch["B"]) * mask),
            "l1": jnp.sum(per_example_mean(jnp.abs(fake_b - batch["B"])) * mask)}
