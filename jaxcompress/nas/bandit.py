"""Multi-armed-bandit operation search: confidence bounds, sampling, updates and abandonment.

ABanditNAS (arXiv 2008.00698) treats every edge as a bandit whose arms are candidate
ops. With m_k the performance of arm k, n_k its pull count and N the total number of samples:

* LCB       s_L(k) = m_k - sqrt(2 ln N / n_k)
* sampling  p(k) = exp(-s_L(k)) / sum_{j alive} exp(-s_L(j))  (weak / rarely tried ops
  are sampled more: "anti-bandit")
* update    m_k <- (1 - lambda) m_k + lambda a for every sampled arm, a = validation accuracy
* UCB       s_U(k) = m_k + sqrt(2 ln N / n_k); after K * T samples remove argmin_k s_U(k) on
  every edge.

BNAS (arXiv 2009.04247, "1-bit BNAS") abandons by the same UCB of the smoothed performance with
uniform / performance-based sampling: `sample(state, rng, "uniform")` plus `update` and
`remove_worst(state, "ucb")` cover it; its conference likelihood S_k <- S_k / 2 + s_k is any score
array passed to `remove_by_score`.

State lives in `BanditState`, a pytree of fixed-shape arrays over leading "edge" dimensions (e.g.
(cells, edges)) and a last "op" axis. Removed arms are masked (`alive`), never dropped, so the
jitted `sample`, `update` and `remove_worst` compile once for the whole search.

Example:
  >>> import jax
  >>> state = BanditState.create((14,), 8)
  >>> ops = sample(state, jax.random.key(0))           # (14,) op index per edge
  >>> state = update(state, ops, 0.5, 0.7)
  >>> state = remove_worst(state)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _floating(mean: ArrayLike) -> jax.Array:
  """`mean` as an array of a floating dtype (integer means become the default float)."""
  mean = jnp.asarray(mean)
  return mean if jnp.issubdtype(mean.dtype, jnp.floating) else mean.astype(jnp.result_type(float))


def _radius(count: ArrayLike, total: ArrayLike, dtype: Any) -> jax.Array:
  """sqrt(2 ln N / n) in `dtype` (the means' floating dtype, so float64 means get a float64
  bound from integer counts); +inf for untried arms (n = 0) so they are sampled / kept first."""
  n = jnp.asarray(count).astype(dtype)
  big_n = jnp.asarray(total).astype(dtype)
  safe_n = jnp.where(n > 0, n, 1)
  # ln N < 0 only for N < 1, which cannot happen once any arm was pulled; clamp for safety.
  r = jnp.sqrt(2.0 * jnp.log(jnp.maximum(big_n, 1)) / safe_n)
  return jnp.where(n > 0, r, jnp.inf)


def ucb(mean: ArrayLike, count: ArrayLike, total: ArrayLike) -> jax.Array:
  """Upper confidence bound m + sqrt(2 ln N / n) (ABanditNAS abandonment, BNAS UCB).

  Args:
    mean: arm performance m_k.
    count: pulls n_k (broadcastable to `mean`); n = 0 gives +inf.
    total: total number of samples N.

  Returns:
    The bound in the floating dtype of `mean`.
  """
  mean = _floating(mean)
  return mean + _radius(count, total, mean.dtype)


def lcb(mean: ArrayLike, count: ArrayLike, total: ArrayLike) -> jax.Array:
  """Lower confidence bound m - sqrt(2 ln N / n) (ABanditNAS sampling); n = 0 gives -inf."""
  mean = _floating(mean)
  return mean - _radius(count, total, mean.dtype)


@flax.struct.dataclass
class BanditState:
  """Per-arm bandit statistics; all arrays share the shape (*edges, num_ops).

  Attributes:
    mean: performance m (EMA of the rewards of samples that used the arm).
    count: pulls n (int32).
    alive: arms still in the search space.
    total: N, the number of sampling rounds so far (0-d int32).
  """
  mean: jax.Array
  count: jax.Array
  alive: jax.Array
  total: jax.Array

  @classmethod
  def create(cls, edges: int | Sequence[int], num_ops: int, alive: ArrayLike | None = None,
             dtype=jnp.float32) -> "BanditState":
    """A fresh state: zero means and counts, every arm alive unless `alive` says otherwise."""
    shape = (edges,) if isinstance(edges, int) else tuple(edges)
    shape = shape + (num_ops,)
    alive = jnp.ones(shape, bool) if alive is None else jnp.broadcast_to(
        jnp.asarray(alive, bool), shape)
    return cls(mean=jnp.zeros(shape, dtype), count=jnp.zeros(shape, jnp.int32), alive=alive,
               total=jnp.zeros((), jnp.int32))

  def num_alive(self) -> jax.Array:
    """Alive arms per edge, shape (*edges,)."""
    return self.alive.sum(-1)

  # Method forms of the module functions, for `state.sample(rng)`-style code.
  def sample(self, rng: jax.Array, rule="lcb") -> jax.Array:
    return sample(self, rng, rule)

  def update(self, edge_ops: ArrayLike, reward: ArrayLike,
             lam: ArrayLike = 0.7) -> "BanditState":
    return update(self, edge_ops, reward, lam)

  def remove_worst(self, rule="ucb") -> "BanditState":
    return remove_worst(self, rule)


def sampling_logits(state: BanditState, rule: str | Callable = "lcb") -> jax.Array:
  """Log-probabilities (up to a constant) of each arm under `rule`; dead arms get -inf.

  "lcb": log p = -LCB (ABanditNAS); "uniform": equal over alive arms; a callable
  `rule(mean, count, total)` (e.g. `lcb`) gives log p = -rule(...). With any rule, an
  edge that still has untried alive arms samples uniformly among those first, so every arm is
  pulled once before any bound is used (ABanditNAS initialisation; sampling without replacement).
  """
  untried = state.alive & (state.count == 0)
  if callable(rule):
    logits = -jnp.asarray(rule(state.mean, state.count, state.total), state.mean.dtype)
  elif rule.lower() == "lcb":
    logits = -lcb(state.mean, state.count, state.total)
  elif rule.lower() == "ucb":
    logits = -ucb(state.mean, state.count, state.total)
  elif rule.lower() == "uniform":
    logits = jnp.zeros_like(state.mean)
  else:
    raise ValueError(f"Unknown sampling rule {rule!r}; use 'lcb', 'ucb', 'uniform' or a "
                     "callable (mean, count, total) -> score.")
  neg_inf = jnp.array(-jnp.inf, logits.dtype)
  logits = jnp.where(state.alive & jnp.isfinite(logits), logits, neg_inf)
  any_untried = untried.any(-1, keepdims=True)
  return jnp.where(any_untried, jnp.where(untried, 0.0, neg_inf).astype(logits.dtype), logits)


@functools.partial(jax.jit, static_argnames=("rule",))
def sample(state: BanditState, rng: jax.Array, rule: str | Callable = "lcb") -> jax.Array:
  """Samples one alive op per edge.

  Args:
    state: bandit statistics.
    rng: PRNG key.
    rule: "lcb" (ABanditNAS, p proportional to exp(-LCB)), "uniform" (BNAS-style), or a
      callable score (p proportional to exp(-score)); static under jit.

  Returns:
    int32 op indices of shape (*edges,).
  """
  logits = sampling_logits(state, rule)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@jax.jit
def update(state: BanditState, edge_ops: ArrayLike, reward: ArrayLike,
           lam: ArrayLike = 0.7) -> BanditState:
  """Credits a reward to the arm used on every edge (ABanditNAS performance update).

  m_k <- (1 - lam) m_k + lam * a and n_k <- n_k + 1 for the sampled arms, N <- N + 1. An arm's
  first reward initialises it (m_{k,0} = a, as the paper's initialisation round), so the mean is
  not biased towards the zero it was created with.

  Args:
    state: bandit statistics.
    edge_ops: (*edges,) sampled op index per edge.
    reward: accuracy a of the sampled network, scalar (shared by all its ops) or per edge.
    lam: EMA weight lambda of the new reward (traced; no recompile when it changes).

  Returns:
    The updated state.
  """
  num_ops = state.mean.shape[-1]
  used = jax.nn.one_hot(jnp.asarray(edge_ops), num_ops, dtype=bool)
  a = jnp.asarray(reward, state.mean.dtype)
  a = a[..., None] if a.ndim else a
  lam = jnp.asarray(lam, state.mean.dtype)
  ema = (1 - lam) * state.mean + lam * a
  new = jnp.where(state.count == 0, jnp.broadcast_to(a, state.mean.shape), ema)
  return state.replace(mean=jnp.where(used, new, state.mean),
                       count=state.count + used.astype(state.count.dtype),
                       total=state.total + 1)


@jax.jit
def remove_by_score(state: BanditState, score: ArrayLike) -> BanditState:
  """Abandons the alive arm with the lowest `score` on every edge that has more than one alive.

  Ties go to the lowest op index. Edges with a single alive arm are left unchanged.
  """
  score = jnp.asarray(score)
  masked = jnp.where(state.alive, score, jnp.inf)
  worst = jnp.argmin(masked, axis=-1)
  kill = jax.nn.one_hot(worst, state.alive.shape[-1], dtype=bool)
  kill &= (state.num_alive() > 1)[..., None]
  return state.replace(alive=state.alive & ~kill)


@functools.partial(jax.jit, static_argnames=("rule",))
def remove_worst(state: BanditState, rule: str | Callable = "ucb") -> BanditState:
  """Abandons one op per edge: argmin of `rule` over alive arms (ABanditNAS / BNAS).

  Args:
    state: bandit statistics.
    rule: "ucb" (m + sqrt(2 ln N / n); untried arms are +inf, never removed), "lcb", "mean",
      or a callable `rule(mean, count, total) -> score` (e.g. `ucb`).

  Returns:
    The state with one more arm dead per edge (none removed where only one is alive).
  """
  if callable(rule):
    score = rule(state.mean, state.count, state.total)
  elif rule.lower() == "ucb":
    score = ucb(state.mean, state.count, state.total)
  elif rule.lower() == "lcb":
    score = lcb(state.mean, state.count, state.total)
  elif rule.lower() == "mean":
    score = state.mean
  else:
    raise ValueError(f"Unknown removal rule {rule!r}; use 'ucb', 'lcb' or 'mean'.")
  return remove_by_score(state, score)


def best_ops(state: BanditState) -> jax.Array:
  """The alive arm with the highest mean per edge (the final op once one arm is left)."""
  return jnp.argmax(jnp.where(state.alive, state.mean, -jnp.inf), axis=-1)


def samples_per_phase(num_alive: int, t: int = 3) -> int:
  """K * T sampling rounds between two abandonments (ABanditNAS; T = 3 in the paper)."""
  return num_alive * t
