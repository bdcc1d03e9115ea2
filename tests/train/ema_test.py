"""train.ema: warm-up decay (TF ExponentialMovingAverage num_updates rule) and the batch-stats rules,
against a NumPy loop."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.errors import ConfigError
from jaxcompress.train import ema


def test_decay_at_follows_the_tf_num_updates_rule():
  t = np.arange(0, 3000, 7)
  got = np.array([float(ema.decay_at(0.999, jnp.int32(i))) for i in t])
  np.testing.assert_allclose(got, np.minimum(0.999, (1.0 + t) / (10.0 + t)), rtol=1e-6)
  assert float(ema.decay_at(0.999, 0)) == pytest.approx(0.1)
  assert float(ema.decay_at(0.9, 5, warmup=False)) == pytest.approx(0.9)


def _live(seed):
  rng = np.random.default_rng(seed)
  return ({"conv": {"kernel": rng.normal(size=(3, 3)).astype(np.float32)},
           "bias": rng.normal(size=(4,)).astype(np.float32)},
          {"batch_stats": {"mean": rng.normal(size=(4,)).astype(np.float32),
                           "var": rng.uniform(0.5, 2, size=(4,)).astype(np.float32)},
           "counter": np.int32(seed)})


@pytest.mark.parametrize("rule", ["copy", "average", "keep"])
@pytest.mark.parametrize("warmup", [True, False])
def test_update_matches_numpy(rule, warmup):
  decay = 0.9
  p0, s0 = _live(0)
  state = ema.init(jax.tree.map(jnp.asarray, p0), jax.tree.map(jnp.asarray, s0))
  step = jax.jit(lambda e, p, s: ema.update(e, p, s, decay=decay, warmup=warmup,
                                            batch_stats=rule))
  ref_p = jax.tree.map(np.float64, p0)
  ref_s = jax.tree.map(np.float64, s0["batch_stats"])
  for t in range(6):
    p, s = _live(t + 1)
    state = step(state, jax.tree.map(jnp.asarray, p), jax.tree.map(jnp.asarray, s))
    d = min(decay, (1 + t) / (10 + t)) if warmup else decay
    ref_p = jax.tree.map(lambda e, x: d * e + (1 - d) * x, ref_p, p)
    if rule == "average":
      ref_s = jax.tree.map(lambda e, x: d * e + (1 - d) * x, ref_s, s["batch_stats"])
    elif rule == "copy":
      ref_s = s["batch_stats"]
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_p)):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(state.model_state["batch_stats"]),
                         jax.tree.leaves(ref_s)):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # integer leaves are never averaged: the live value, or the initial one under "keep".
    assert int(state.model_state["counter"]) == (0 if rule == "keep" else t + 1)
  assert int(state.count) == 6
  assert state.params["conv"]["kernel"].dtype == jnp.float32


def test_init_copies_and_update_without_model_state():
  p, _ = _live(0)
  params = jax.tree.map(jnp.asarray, p)
  state = ema.init(params)
  assert state.model_state == {} and int(state.count) == 0
  new = ema.update(state, jax.tree.map(jnp.zeros_like, params), decay=0.5, warmup=False)
  np.testing.assert_allclose(np.asarray(new.params["bias"]), 0.5 * p["bias"], rtol=1e-6)


def test_rule_errors():
  p, s = _live(0)
  state = ema.init(p, s)
  with pytest.raises(ConfigError, match="copy, average, keep"):
    ema.update(state, p, s, decay=0.9, batch_stats="mean")
  with pytest.raises(ConfigError, match="needs the live model_state"):
    ema.update(state, p, decay=0.9, batch_stats="average")
  kept = ema.update(state, p, decay=0.9, batch_stats="keep")
  np.testing.assert_array_equal(np.asarray(kept.model_state["batch_stats"]["mean"]),
                                s["batch_stats"]["mean"])
