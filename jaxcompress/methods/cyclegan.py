"""CycleGAN (Zhu et al., arXiv 1703.10593): unpaired image-to-image translation, "cyclegan".

The official training step (junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`,
`optimize_parameters`; the same in SJLeo/DMAD `models/CycleGAN.py`, whose full-size CycleGANs
are the teachers of DMAD, arXiv 2011.08382):

  * G_A: A -> B and G_B: B -> A (ResNet generators); D_A judges B-domain images (real B against
    G_A(A)), D_B judges A-domain images (official naming: code G_A, G_B, D_A, D_B = paper G, F,
    D_Y, D_X).
  * forward: fake_B = G_A(A), rec_A = G_B(fake_B), fake_A = G_B(B), rec_B = G_A(fake_A).
  * generator step, discriminators frozen (`set_requires_grad(D, False)`): one Adam step of G_A
    and G_B on
      L_G = L_GAN(D_A(fake_B), real) + L_GAN(D_B(fake_A), real)
            + lambda_A |rec_A - A|_1 + lambda_B |rec_B - B|_1
            + lambda_idt (lambda_B |G_A(B) - B|_1 + lambda_A |G_B(A) - A|_1)
    (paper Eq. 3, the identity terms from Sec. 5.2, only when lambda_identity > 0;
    lambda_A = lambda_B = 10, lambda_idt 0.5).
  * discriminator step: fakes of the forward above (before the generator update) go through the
    50-image pools (`jaxcompress.gan.image_pool`); one Adam step of D_A and D_B on
    0.5 (L(D_A(B), real) + L(D_A(pool_B(fake_B)), fake)) + the same for D_B on A.
  * LSGAN loss (`gan.gan_mode`), Adam 2e-4 (0.5, 0.999) for both optimizers (`config.optim`),
    constant 100 epochs then linear decay over 100 (`optim.schedule = "gan_linear"`), conv weights
    N(0, 0.02), biases 0.

Batches: "A" and "B", float32 NHWC in [-1, 1], unpaired. Training metrics are the official loss
values (weighted): loss (= L_G), G_A, G_B, cycle_A, cycle_B, idt_A, idt_B, D_A, D_B. Eval metrics
(sums over valid examples): the unweighted cycle L1 (`cycle_error_A` = |G_B(G_A(A)) - A|_1,
`cycle_error_B`; lower is better, as the engine reads "error") and the mean
discriminator outputs on real and generated images (`D_A_real`, `D_A_fake`, `D_B_real`,
`D_B_fake`); when the eval batch carries "B_ref", the known ideal translation of A (offline
sets), also `psnr_B_ref`, the PSNR of G_A(A) against it on [0, 1]-scaled images. `predict`
gives fake_B, fake_A, real_A and real_B for image evaluators (FID).

For subclasses (DMAD's search and fine-tune): `generator_loss(params, state, batch, rng)`
returns (loss, aux) from the whole parameter tree and state, so mask penalties and distillation
terms add to it; `generator_layers(name)` / `build_generator(name)` choose the generator models
and their layer factory (the gate slot); `discriminator_loss` is separate as well.

Config block `config.gan`: gan_mode ["lsgan"], lambda_A [10], lambda_B [10], lambda_identity
[0.5], pool_size [50], init_type ["normal"], init_gain [0.02], d_optim [{}].
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

# Salts of the per-step key (dropout of each generator call, pool draws).
_GEN_SALT, _POOL_SALT = 0, 1


class CycleGAN(GANMethod):
  """CycleGAN: two generators, two PatchGAN discriminators, cycle and identity losses."""

  GENERATORS = ("G_A", "G_B")
  DISCRIMINATORS = ("D_A", "D_B")

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    g = self.gan
    self.lambda_A = float(g.get("lambda_A", 10.0))
    self.lambda_B = float(g.get("lambda_B", 10.0))
    self.lambda_idt = float(g.get("lambda_identity", 0.5))
    self.pool_size = int(g.get("pool_size", 50))
    self.criterion = GANLoss(g.get("gan_mode", "lsgan"))
    if self.pool_size < 0 or min(self.lambda_A, self.lambda_B, self.lambda_idt) < 0:
      raise ConfigError(f"config.gan: pool_size and the lambdas must be >= 0, got pool_size "
                        f"{self.pool_size}, lambda_A {self.lambda_A}, lambda_B {self.lambda_B}, "
                        f"lambda_identity {self.lambda_idt}.")

  # -- state -----------------------------------------------------------------------------------

  def example_input(self, batch: Batch, name: str) -> jax.Array:
    # G_A and D_B read domain A, G_B and D_A domain B.
    return batch["A"] if name in ("G_A", "D_B") else batch["B"]

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    a, b = example_batch["A"][:1], example_batch["B"][:1]
    if self.lambda_idt > 0 and a.shape[-1] != b.shape[-1]:
      raise ConfigError(f"The identity loss feeds B to G_A, so A and B need the same channels "
                        f"(got {a.shape[-1]} and {b.shape[-1]}); set gan.lambda_identity = 0.")
    k_nets, k_extra = jax.random.split(rng)
    params, model_state = self.init_networks(
        k_nets, {n: self.example_input({"A": a, "B": b}, n) for n in self.nets})
    for name, x, want in (("G_A", a, b), ("G_B", b, a)):
      out = jax.eval_shape(lambda p, s, x=x, name=name: self.net(name, p, s, x, train=False)[0],
                           params, model_state)
      if out.shape != want.shape:
        raise ConfigError(f"{name} maps {x.shape} to {out.shape}, the other domain is "
                          f"{want.shape}: set the generator's output_nc in config.model.generator"
                          ".kwargs to the target domain's channels.")
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers=self.make_optimizers(params),
                             extra=self.init_extra(k_extra, example_batch, params))

  def init_extra(self, rng: jax.Array, example_batch: Batch, params: Any) -> dict[str, Any]:
    """Method state: the two image pools (subclasses add theirs)."""
    del rng, params
    return {"fake_A_pool": image_pool.init(self.pool_size, example_batch["A"].shape[1:]),
            "fake_B_pool": image_pool.init(self.pool_size, example_batch["B"].shape[1:])}

  # -- losses ----------------------------------------------------------------------------------

  def generator_loss(self, params: Any, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """The official `backward_G` loss (module docstring) at `params`.

    Args:
      params: every network's parameters (the generators' are the differentiated ones).
      state: the training state (model_state, extra).
      batch: "A" and "B".
      rng: dropout key of the generator calls.

    Returns:
      (L_G, aux) with aux = {"metrics": the weighted terms, "fakes": {"fake_A", "fake_B"},
      "model_state": the state after every call, "taps": {"G_A", "G_B"} -> features by role
      of the calls on the real images when `collect_taps` is set (DMAD distillation), else {}}.
    """
    real_a, real_b = batch["A"], batch["B"]
    ms = state.model_state
    calls = iter(range(8))

    taps = {}

    def gen(name, x, tapped=False):
      nonlocal ms
      out = self.net(name, params, ms, x, train=True, rng=jax.random.fold_in(rng, next(calls)),
                     taps=tapped)
      y, ms = out[:2]
      if tapped:
        taps[name] = out[2]
      return y

    def disc(name, x):
      nonlocal ms
      y, ms = self.net(name, params, ms, x, train=True)
      return y

    fake_b = gen("G_A", real_a, self.collect_taps)
    rec_a = gen("G_B", fake_b)
    fake_a = gen("G_B", real_b, self.collect_taps)
    rec_b = gen("G_A", fake_a)
    terms = {}
    if self.lambda_idt > 0:  # G_A should be the identity on B, G_B on A
      terms["idt_A"] = l1(gen("G_A", real_b), real_b) * self.lambda_B * self.lambda_idt
      terms["idt_B"] = l1(gen("G_B", real_a), real_a) * self.lambda_A * self.lambda_idt
    else:
      terms["idt_A"] = terms["idt_B"] = jnp.zeros((), jnp.float32)
    terms["G_A"] = self.criterion.generator(disc("D_A", fake_b))
    terms["G_B"] = self.criterion.generator(disc("D_B", fake_a))
    terms["cycle_A"] = l1(rec_a, real_a) * self.lambda_A
    terms["cycle_B"] = l1(rec_b, real_b) * self.lambda_B
    loss = sum(terms[k] for k in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B"))
    return loss, {"metrics": terms, "fakes": {"fake_A": fake_a, "fake_B": fake_b},
                  "model_state": ms, "taps": taps}

  def discriminator_loss(self, params: Any, state: TrainState, batch: Batch,
                         fakes: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
    """The official `backward_D_A` + `backward_D_B` loss at `params`.

    Args:
      params: every network's parameters (the discriminators' are the differentiated ones).
      state: the training state.
      batch: "A" and "B".
      fakes: {"fake_A", "fake_B"} as drawn from the pools.

    Returns:
      (D_A + D_B, {"metrics": {"D_A", "D_B"}, "model_state": ...}).
    """
    ms = state.model_state
    terms = {}
    for name, real, fake in (("D_A", batch["B"], fakes["fake_B"]),
                             ("D_B", batch["A"], fakes["fake_A"])):
      pred_real, ms = self.net(name, params, ms, real, train=True)
      pred_fake, ms = self.net(name, params, ms, jax.lax.stop_gradient(fake), train=True)
      terms[name] = self.criterion.discriminator(pred_real, pred_fake)
    return terms["D_A"] + terms["D_B"], {"metrics": terms, "model_state": ms}

  # -- steps -----------------------------------------------------------------------------------

  def generator_step(self, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[TrainState, jax.Array, dict[str, Any]]:
    """One Adam step of the generators, discriminators frozen (only G's gradients are taken).

    Returns:
      (state with new generator params and model_state, L_G, the loss aux).
    """
    def loss_fn(g_params):
      return self.generator_loss({**state.params, **g_params}, state, batch, rng)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        self.subtree(state.params, self.GENERATORS))
    return self.update(state, "G", grads, model_state=aux["model_state"]), loss, aux

  def discriminator_step(self, state: TrainState, batch: Batch, fakes: dict[str, jax.Array],
                         rng: jax.Array) -> tuple[TrainState, dict[str, Any]]:
    """The pools' draws, then one Adam step of the discriminators.

    Returns:
      (state with new discriminator params, pools and model_state, the loss aux).
    """
    k_a, k_b = jax.random.split(rng)
    fake_b, pool_b = image_pool.query(state.extra["fake_B_pool"], fakes["fake_B"], k_b)
    fake_a, pool_a = image_pool.query(state.extra["fake_A_pool"], fakes["fake_A"], k_a)

    def loss_fn(d_params):
      return self.discriminator_loss({**state.params, **d_params}, state, batch,
                                     {"fake_A": fake_a, "fake_B": fake_b})
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        self.subtree(state.params, self.DISCRIMINATORS))
    extra = {**state.extra, "fake_A_pool": pool_a, "fake_B_pool": pool_b}
    return self.update(state, "D", grads, model_state=aux["model_state"], extra=extra), aux

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """The official `optimize_parameters`: generator step, then discriminator step."""
    state, loss, g_aux = self.generator_step(state, batch, state.step_rng(_GEN_SALT))
    fakes = jax.tree.map(jax.lax.stop_gradient, g_aux["fakes"])
    state, d_aux = self.discriminator_step(state, batch, fakes, state.step_rng(_POOL_SALT))
    metrics = {"loss": loss, **g_aux["metrics"], **d_aux["metrics"]}
    return state.replace(step=state.step + 1), metrics

  # -- evaluation ------------------------------------------------------------------------------

  def translate(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """fake_B = G_A(A) and fake_A = G_B(B) in evaluation mode."""
    p, ms = state.params, state.model_state
    return {"fake_B": self.net("G_A", p, ms, batch["A"], train=False)[0],
            "fake_A": self.net("G_B", p, ms, batch["B"], train=False)[0]}

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    return {**self.translate(state, batch), "real_A": batch["A"], "real_B": batch["B"]}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    p, ms, mask = state.params, state.model_state, batch["mask"]
    fakes = self.translate(state, batch)

    def run(name, x):
      return self.net(name, p, ms, x, train=False)[0]

    per = {
        "cycle_error_A": per_example_mean(jnp.abs(run("G_B", fakes["fake_B"]) - batch["A"])),
        "cycle_error_B": per_example_mean(jnp.abs(run("G_A", fakes["fake_A"]) - batch["B"])),
        "D_A_real": per_example_mean(run("D_A", batch["B"])),
        "D_A_fake": per_example_mean(run("D_A", fakes["fake_B"])),
        "D_B_real": per_example_mean(run("D_B", batch["A"])),
        "D_B_fake": per_example_mean(run("D_B", fakes["fake_A"])),
    }
    if "B_ref" in batch:  # the data knows the ideal translation of A (offline sets)
      per["psnr_B_ref"] = psnr01(fakes["fake_B"], batch["B_ref"])
    return {k: jnp.sum(v * mask) for k, v in per.items()}
