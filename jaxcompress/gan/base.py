"""What the image-to-image GAN methods share: networks built by name, their calls, two optimizers.

`GANMethod` is the base of `CycleGAN` and `Pix2Pix` (`jaxcompress.methods.cyclegan` /
`.pix2pix`) and of the DMAD search and fine-tune methods built on them. It holds every network by
name (`self.nets`, e.g. {"G_A", "G_B", "D_A", "D_B"}); `state.params` and `state.model_state` are
trees keyed by those names, and `state.opt_state` has one optimizer per role: "G" over every
generator, "D" over every discriminator (official `optimizer_G` / `optimizer_D`, Adam 2e-4,
betas (0.5, 0.999), junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`).

Config (besides `config.optim`, used by both optimizers):
  * `config.model.generator` / `config.model.discriminator`: {name, kwargs, layers [float],
    layer_kwargs}; `name` is a model registry name (`jaxcompress.models.names()`) or a
    "module:attribute" path, imported when the method is built.
  * `config.gan.init_type` ["normal"]: the official N(0, init_gain^2) re-initialisation
    (`jaxcompress.gan.init`); "flax" keeps the modules' own initialisers.
  * `config.gan.init_gain` [0.02].
  * `config.gan.d_optim` [{}]: overrides of `config.optim` for the discriminators.
"""
from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.gan import init as init_lib
from jaxcompress.gan import schedules  # noqa: F401  (registers the "gan_linear" schedule)
from jaxcompress.methods.base import Batch, Method
from jaxcompress.models import factory
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState

BATCH_STATS = "batch_stats"


def build_network(spec: ml_collections.ConfigDict, layers: factory.Layers | str | None = None,
                  **overrides: Any) -> nn.Module:
  """A network from a config block {name, kwargs, layers, layer_kwargs}.

  Args:
    spec: the block; `name` is a registry name or "module:attribute".
    layers: a layer factory replacing `spec.layers` (e.g. one with DMAD's gates).
    **overrides: constructor arguments replacing `spec.kwargs` entries.

  Returns:
    The unbound module.

  Raises:
    ConfigError: a missing name or an unknown model.
  """
  name = spec.get("name", None)
  if not name:
    raise ConfigError("A GAN network block needs a name, e.g. config.model.generator.name = "
                      "'cyclegan_resnet_generator'.")
  kwargs = {**dict(spec.get("kwargs", {}) or {}), **overrides}
  if layers is None:
    layers = spec.get("layers", "float") or "float"
  if isinstance(layers, str):
    layers = factory.get(layers, **dict(spec.get("layer_kwargs", {}) or {}))
  if ":" not in name:
    return models.build(name, layers=layers, **kwargs)
  module, attr = name.split(":")
  try:
    ctor = getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f"GAN network {name!r} cannot be imported ({e}). Use a registered model "
                      f"name ({', '.join(models.names())}) or an existing 'module:attribute'.") from e
  return ctor(layers=layers, **kwargs)


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """`nn.L1Loss()`: mean |x - y| in float32."""
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def per_example_mean(x: jax.Array) -> jax.Array:
  """Mean over every axis but the first, float32 (N,)."""
  return jnp.mean(x.astype(jnp.float32).reshape(x.shape[0], -1), axis=1)


def psnr01(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR (N,) of [-1, 1] images mapped to [0, 1] (clipped): 10 log10(1 / MSE).

  MSE over all pixels and channels of an image, floored at 1e-10.
  """
  a = (jnp.clip(x.astype(jnp.float32), -1.0, 1.0) + 1.0) * 0.5
  b = (jnp.clip(y.astype(jnp.float32), -1.0, 1.0) + 1.0) * 0.5
  mse = per_example_mean(jnp.square(a - b))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


class GANMethod(Method):
  """Networks by name, their calls with threaded batch statistics, optimizers "G" and "D".

  Subclasses set `GENERATORS` / `DISCRIMINATORS` (network names) and implement the steps.
  """

  GENERATORS: tuple[str, ...] = ()
  DISCRIMINATORS: tuple[str, ...] = ()
  # Return the generators' features by role from `generator_loss` (aux["taps"]) for
  # distillation; off by default (sowing costs nothing in the program but memory).
  collect_taps: bool = False

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    self.gan = config.get("gan", None) or ml_collections.ConfigDict()
    self.init_type = self.gan.get("init_type", "normal")
    if self.init_type not in ("normal", "flax"):
      raise ConfigError(f"config.gan.init_type must be 'normal' (official N(0, init_gain^2)) or "
                        f"'flax', got {self.init_type!r}.")
    self.init_gain = float(self.gan.get("init_gain", 0.02))
    model = config.model
    for role in ("generator", "discriminator"):
      if not model.get(role, None):
        raise ConfigError(f"{type(self).__name__} needs config.model.{role} = {{name, kwargs}}; "
                          "see configs/gan/cyclegan_quick.py.")
    self.nets: dict[str, nn.Module] = {}
    for name in self.GENERATORS:
      self.nets[name] = self.build_generator(name)
    for name in self.DISCRIMINATORS:
      self.nets[name] = self.build_discriminator(name)
    self.tx: dict[str, optax.GradientTransformation] = {}

  # -- networks (override to change the models or their layers) --------------------------------

  def generator_layers(self, name: str) -> factory.Layers | str | None:
    """The layer factory of generator `name` (None: `config.model.generator.layers`).

    DMAD overrides this to place its differentiable masks in the gate slot.
    """
    del name
    return None

  def build_generator(self, name: str) -> nn.Module:
    """Generator `name` from `config.model.generator` with `generator_layers(name)`."""
    return build_network(self.config.model.generator, self.generator_layers(name))

  def build_discriminator(self, name: str) -> nn.Module:
    """Discriminator `name` from `config.model.discriminator`."""
    del name
    return build_network(self.config.model.discriminator)

  def net(self, name: str, params: Any, model_state: Any, x: jax.Array, *, train: bool,
          rng: jax.Array | None = None, taps: bool = False) -> tuple[Any, ...]:
    """Calls network `name`: (output, model_state with its batch statistics updated[, taps]).

    Args:
      name: the network.
      params: every network's parameters ({name: params}).
      model_state: every network's other collections ({name: {collection: ...}}).
      x: the input.
      train: training mode (batch statistics from the batch and updated, dropout on).
      rng: the dropout key (train mode).
      taps: also return the sown features by role (`factory.taps`).

    Returns:
      (y, new model_state) or (y, new model_state, {role: feature}) with `taps`.
    """
    own = dict(model_state.get(name, {}))
    mutable = [BATCH_STATS] if train and BATCH_STATS in own else []
    if taps:
      mutable.append(factory.TAPS)
    rngs = {"dropout": rng} if (train and rng is not None) else None
    variables = {"params": params[name], **own}
    if mutable:
      y, updates = self.nets[name].apply(variables, x, train=train, rngs=rngs, mutable=mutable)
      updates = dict(updates)
      sown = updates.pop(factory.TAPS, {})
      if updates:
        model_state = {**model_state, name: {**own, **updates}}
    else:
      y, sown = self.nets[name].apply(variables, x, train=train, rngs=rngs), {}
    return (y, model_state, factory.taps(sown)) if taps else (y, model_state)

  # -- state -----------------------------------------------------------------------------------

  def init_networks(self, rng: jax.Array, inputs: dict[str, jax.Array]) -> tuple[Any, Any]:
    """Every network initialised on its example input, official init applied.

    Args:
      rng: a PRNG key.
      inputs: {network name: example input (one example)}.

    Returns:
      (params {name: ...}, model_state {name: other collections}).
    """
    params, model_state = {}, {}
    # The draws use XLA's RngBitGenerator ("rbg" keys seeded from `rng`): one threefry hash per
    # parameter made `init` of the four tiny CycleGAN networks compile for 25-40 s on a CPU,
    # against 2-3 s this way. Only initial values depend on it; steps use threefry keys.
    rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    for i, name in enumerate(self.nets):
      k_init, k_reinit = jax.random.split(jax.random.fold_in(rng, i))
      variables = dict(self.nets[name].init(k_init, inputs[name], train=False))
      p = variables.pop("params")
      if self.init_type == "normal":
        p = init_lib.init_weights(p, k_reinit, self.init_gain)
      params[name], model_state[name] = p, variables
    return params, model_state

  def make_optimizers(self, params: Any) -> dict[str, tuple[optax.GradientTransformation, Any]]:
    """`self.tx` = {"G": over the generators, "D": over the discriminators} from `config.optim`
    (`config.gan.d_optim` overrides D's); returns them with their parameters for
    `TrainState.create`."""
    optim = self.config.optim
    d_cfg = ml_collections.ConfigDict({**optim.to_dict(),
                                       **dict(self.gan.get("d_optim", {}) or {})})
    g_params = self.subtree(params, self.GENERATORS)
    d_params = self.subtree(params, self.DISCRIMINATORS)
    self.tx = {"G": builder.make_optimizer(optim, g_params, self.total_steps, self.steps_per_epoch),
               "D": builder.make_optimizer(d_cfg, d_params, self.total_steps,
                                           self.steps_per_epoch)}
    return {"G": (self.tx["G"], g_params), "D": (self.tx["D"], d_params)}

  @staticmethod
  def subtree(params: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """{name: params[name]} for `names`."""
    return {n: params[n] for n in names}

  def update(self, state: TrainState, role: str, grads: Any, **changes: Any) -> TrainState:
    """`state` after optimizer `role` ("G" or "D") applied `grads` (a subtree of params).

    The step counter is left alone: one training step updates both roles.
    """
    names = tuple(grads)
    sub = self.subtree(state.params, names)
    new, opt = builder.apply_updates(self.tx[role], grads, state.opt_state[role], sub)
    return state.replace(params={**state.params, **new},
                         opt_state={**state.opt_state, role: opt}, **changes)

  def summary(self, example_batch: Batch) -> str:
    """The first generator's table (MACs counted the GAN-compression way)."""
    try:
      from jaxcompress.summary import summary as summarize  # pylint: disable=g-import-not-at-top
      name = self.GENERATORS[0]
      x = jax.ShapeDtypeStruct((1, *self.example_input(example_batch, name).shape[1:]),
                               jnp.float32)
      return f"{name}\n{summarize(self.nets[name], x, mac_convention='gan')}"
    except Exception:  # pylint: disable=broad-except  # the summary is informative only
      return ""

  def example_input(self, batch: Batch, name: str) -> jax.Array:
    """The input of network `name` for `batch` (shape only is used)."""
    raise NotImplementedError
