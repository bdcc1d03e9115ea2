"""White-box L-infinity attacks for adversarial training and robustness evaluation.

Inputs live in [clip_min, clip_max] (default [0, 1], pixel space; normalisation belongs inside the
model as in ABanditNAS). Each attack takes either

* `fn = apply_fn(x) -> logits` with integer `labels`: the loss is the mean softmax cross-entropy
  (advertorch's `nn.CrossEntropyLoss()`, as the ABanditNAS evaluation), or
* `fn = loss_fn(x) -> scalar` with `labels=None`: the loss is used as given.

The attacks (semantics of advertorch, used by the ABanditNAS release `attacks/`):

* FGSM (Goodfellow et al. 2015): x_adv = clip(x + eps sign(grad_x L), 0, 1).
* PGD (Madry et al. 2018): delta_0 ~ U(-eps, eps) (random start) clipped so x + delta_0 is in
  [0, 1]; k times delta <- clip_[-eps, eps](delta + alpha sign(grad)), then x + delta clipped to
  [0, 1]; returns x + delta.
* MI-FGSM (Dong et al. 2018, Algorithm 1): g <- mu g + grad / ||grad||_1 (per sample, floor 1e-6),
  delta <- clip_[-eps, eps](delta + alpha sign(g)) and the box clip; no random start.

All loops are `lax.fori_loop`s; epsilon, step size and decay may be traced values.

Example:
  >>> x_adv = pgd(apply_fn, x, y, epsilon=8 / 255, step_size=2 / 255, num_steps=7,
  ...             rng=jax.random.key(0))
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike


def _loss(fn: Callable[[jax.Array], jax.Array],
          labels: ArrayLike | None) -> Callable[[jax.Array], jax.Array]:
  if labels is None:
    return lambda x: jnp.asarray(fn(x)).sum()

  def ce(x: jax.Array) -> jax.Array:
    logits = fn(x)
    if isinstance(logits, (tuple, list)):  # (logits, aux_logits) models: attack the main head
      logits = logits[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)).mean()
  return ce


def input_gradient(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                   labels: ArrayLike | None = None) -> jax.Array:
  """Gradient of the attack loss with respect to the input."""
  return jax.grad(_loss(fn, labels))(x)


def fgsm(fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: ArrayLike | None = None,
         epsilon: ArrayLike = 8 / 255, *, clip_min: float = 0.0,
         clip_max: float = 1.0) -> jax.Array:
  """Fast gradient sign method: clip(x + epsilon * sign(grad_x L(x)), clip_min, clip_max).

  Args:
    fn: `apply_fn(x) -> logits` (with `labels`) or `loss_fn(x) -> scalar` (labels None).
    x: clean inputs.
    labels: integer labels, or None when `fn` returns the loss.
    epsilon: L-inf budget.
    clip_min: lower bound of valid inputs.
    clip_max: upper bound of valid inputs.

  Returns:
    Adversarial inputs with the dtype of `x`.
  """
  eps = jnp.asarray(epsilon, x.dtype)
  g = input_gradient(fn, x, labels)
  return jnp.clip(x + eps * jnp.sign(g), clip_min, clip_max).astype(x.dtype)


def _project(x: jax.Array, delta: jax.Array, eps: jax.Array, clip_min: float,
             clip_max: float) -> jax.Array:
  # Ball first, then box: the order advertorch uses; the result satisfies both constraints
  # because x itself lies in the box.
  delta = jnp.clip(delta, -eps, eps)
  return jnp.clip(x + delta, clip_min, clip_max) - x


def pgd(fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: ArrayLike | None = None,
        epsilon: ArrayLike = 8 / 255, step_size: ArrayLike = 2 / 255, num_steps: int = 7, *,
        rng: jax.Array | None = None, random_start: bool = True, clip_min: float = 0.0,
        clip_max: float = 1.0) -> jax.Array:
  """Projected gradient descent (sign steps, L-inf ball, box [clip_min, clip_max]).

  Args:
    fn: `apply_fn(x) -> logits` (with `labels`) or `loss_fn(x) -> scalar` (labels None).
    x: clean inputs.
    labels: integer labels or None.
    epsilon: L-inf radius.
    step_size: alpha per step.
    num_steps: k (PGD-7 / PGD-20 in ABanditNAS' evaluation).
    rng: PRNG key for the uniform random start (required when `random_start`).
    random_start: start from delta ~ U(-epsilon, epsilon).
    clip_min: lower bound of valid inputs.
    clip_max: upper bound of valid inputs.

  Returns:
    Adversarial inputs, within epsilon of `x` and inside the box.
  """
  eps = jnp.asarray(epsilon, x.dtype)
  alpha = jnp.asarray(step_size, x.dtype)
  loss = _loss(fn, labels)
  if random_start:
    if rng is None:
      raise ValueError("pgd(random_start=True) needs rng=jax.random.key(...).")
    delta = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0) * eps
    delta = jnp.clip(x + delta, clip_min, clip_max) - x
  else:
    delta = jnp.zeros_like(x)
  grad = jax.grad(lambda d: loss(x + d))

  def body(_, d):
    return _project(x, d + alpha * jnp.sign(grad(d)), eps, clip_min, clip_max)

  delta = jax.lax.fori_loop(0, num_steps, body, delta)
  return jnp.clip(x + delta, clip_min, clip_max)


def mi_fgsm(fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: ArrayLike | None = None,
            epsilon: ArrayLike = 8 / 255, step_size: ArrayLike = 2 / 255, num_steps: int = 10,
            decay: ArrayLike = 1.0, *, clip_min: float = 0.0,
            clip_max: float = 1.0) -> jax.Array:
  """Momentum iterative FGSM (Dong et al. 2018, Algorithm 1) in advertorch's form.

  Args:
    fn: `apply_fn(x) -> logits` (with `labels`) or `loss_fn(x) -> scalar` (labels None).
    x: clean inputs, (N, ...) with the batch on the first axis.
    labels: integer labels or None.
    epsilon: L-inf radius.
    step_size: alpha per step (the paper's eps / T when step_size = epsilon / num_steps).
    num_steps: T.
    decay: momentum mu (1.0 in the ABanditNAS evaluation).
    clip_min: lower bound of valid inputs.
    clip_max: upper bound of valid inputs.

  Returns:
    Adversarial inputs.
  """
  eps = jnp.asarray(epsilon, x.dtype)
  alpha = jnp.asarray(step_size, x.dtype)
  mu = jnp.asarray(decay, x.dtype)
  loss = _loss(fn, labels)
  grad = jax.grad(lambda d: loss(x + d))
  axes = tuple(range(1, x.ndim))

  def body(_, carry):
    d, g = carry
    gr = grad(d)
    l1 = jnp.maximum(jnp.abs(gr).sum(axis=axes, keepdims=True), jnp.asarray(1e-6, x.dtype))
    g = mu * g + gr / l1
    return _project(x, d + alpha * jnp.sign(g), eps, clip_min, clip_max), g

  delta, _ = jax.lax.fori_loop(0, num_steps, body, (jnp.zeros_like(x), jnp.zeros_like(x)))
  return x + delta
