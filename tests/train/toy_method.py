"""A test-only method with the hard shapes of later papers (GAN, NAS, re-ID, UDA).

* two optimizers updated in one step ("model": SGD on the network, "arch": Adam on a mixing
  weight, as NAS weights/architecture or GAN generator/discriminator);
* an epoch hook that rewrites `extra` outside the gradient (as RBNN's rotation solve);
* an EMA copy of the params in `extra` (mean teachers, MoCo key encoders).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcompress import methods
from jaxcompress.methods.base import Method
from jaxcompress.train.state import TrainState

EMA_DECAY = 0.9


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(16)(x))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(4)(x)


@methods.register("toy_two_optimizers")
class ToyMethod(Method):
  """Network weights by SGD, an architecture scalar by Adam, EMA params, epoch-hook state."""

  def init(self, rng, example_batch):
    self.net = _Net()
    variables = self.net.init(rng, example_batch["image"][:1])
    params = {"net": variables["params"], "arch": jnp.zeros(())}
    self.txs = {"model": optax.sgd(self.config.optim.learning_rate, momentum=0.9),
                "arch": optax.adam(1e-2)}
    extra = {"ema": params["net"], "hook_epoch": jnp.array(-1, jnp.int32),
             "hook_calls": jnp.zeros((), jnp.int32), "scale": jnp.ones(())}
    return TrainState.create(params=params, rng=rng,
                             model_state={"batch_stats": variables["batch_stats"]},
                             optimizers={"model": (self.txs["model"], params["net"]),
                                         "arch": (self.txs["arch"], params["arch"])},
                             extra=extra)

  def _logits(self, params, model_state, extra, images, train):
    out = self.net.apply({"params": params["net"], **model_state}, images, train=train,
                         mutable=["batch_stats"] if train else False)
    logits, updates = out if train else (out, model_state)
    # The arch scalar gates the logits, so it gets a real gradient; `scale` comes from the hook.
    return logits * jax.nn.sigmoid(params["arch"]) * 2 * extra["scale"], updates

  def train_step(self, state, batch):
    def loss_fn(params):
      logits, updates = self._logits(params, state.model_state, state.extra, batch["image"], True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return loss, updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    net_updates, net_opt = self.txs["model"].update(grads["net"], state.opt_state["model"])
    arch_updates, arch_opt = self.txs["arch"].update(grads["arch"], state.opt_state["arch"])
    params = {"net": optax.apply_updates(state.params["net"], net_updates),
              "arch": state.params["arch"] + arch_updates}
    ema = jax.tree.map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, state.extra["ema"],
                       params["net"])
    state = state.replace(step=state.step + 1, params=params, model_state=dict(updates),
                          opt_state={"model": net_opt, "arch": arch_opt},
                          extra={**state.extra, "ema": ema})
    return state, {"loss": loss}

  def on_epoch_start(self, state, epoch):
    extra = {**state.extra, "hook_epoch": jnp.asarray(epoch, jnp.int32),
             "hook_calls": state.extra["hook_calls"] + 1,
             "scale": 1.0 + 0.0 * state.extra["scale"]}
    return state.replace(extra=extra)

  def eval_step(self, state, batch):
    logits, _ = self._logits(state.params, state.model_state, state.extra, batch["image"], False)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"accuracy": jnp.sum(correct * batch["mask"])}
