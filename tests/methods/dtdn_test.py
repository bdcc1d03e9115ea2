"""DTDN tests: losses against NumPy loops, one step against a hand composition of the losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jaxcompress import methods
from jaxcompress.methods import dtdn_losses as L
from jaxcompress.methods import dtdn_nets


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_training_gate_and_recombine():
  rng = np.random.default_rng(0)
  g = rng.uniform(size=(4, 3))
  assert np.allclose(L.training_gate(jnp.asarray(g)), g.mean(0, keepdims=True))
  assert np.allclose(L.training_gate(jnp.asarray(g), "per_sample"), g)
  fs, ft = rng.normal(size=(2, 4, 2, 2, 3))
  gs, gt = rng.uniform(size=(2, 1, 3))
  perm = np.asarray([2, 0, 3, 1])
  out = L.recombine(jnp.asarray(fs), jnp.asarray(ft), jnp.asarray(gs), jnp.asarray(gt),
                    jnp.asarray(perm))
  for i in range(4):
    j = perm[i]
    np.testing.assert_allclose(out["sc_sa"][i], gs[0] * fs[i] + (1 - gs[0]) * fs[j], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["sc_ta"][i], gs[0] * fs[i] + (1 - gt[0]) * ft[j], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["tc_sa"][i], gt[0] * ft[i] + (1 - gs[0]) * fs[j], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["tc_ta"][i], gt[0] * ft[i] + (1 - gt[0]) * ft[j], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="batch size"):
    L.recombine(jnp.asarray(fs), jnp.asarray(ft[:2]), jnp.asarray(gs), jnp.asarray(gt),
                jnp.asarray(perm))


def test_agreement_zero_and_value():
  a = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)))
  assert float(L.agreement_loss(a, a)) == 0.0
  b = a + 1.0  # log-softmax is shift invariant
  assert float(L.agreement_loss(a, b)) < 1e-6
  c = np.random.default_rng(2).normal(size=(3, 5))
  want = np.abs(_log_softmax(np.asarray(a)) - _log_softmax(c)).mean()
  np.testing.assert_allclose(L.agreement_loss(a, jnp.asarray(c)), want, rtol=1e-5)


def _memory_loss_ref(memory, x, index, knn, beta):
  logits = x @ memory.T / beta
  total = 0.0
  for i in range(len(x)):
    w = np.zeros(memory.shape[0])
    for j in np.argsort(-logits[i], kind="stable")[:knn]:
      w[j] = 2.0
    w[index[i]] = 3.0
    total += -(w * _log_softmax(logits[i])).sum()
  return total / len(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exemplar_memory_loss_and_gradient(dtype):
  with jax.enable_x64(dtype == np.float64):
    rng = np.random.default_rng(3)
    memory = rng.normal(size=(10, 4)).astype(dtype)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    x = rng.normal(size=(3, 4)).astype(dtype)
    index = np.asarray([1, 7, 4])
    fn = jax.jit(lambda m, v: L.exemplar_memory_loss(m, v, jnp.asarray(index), knn=3, beta=0.5))
    got = fn(jnp.asarray(memory), jnp.asarray(x))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, _memory_loss_ref(memory, x, index, 3, 0.5),
                               rtol=1e-5 if dtype == np.float32 else 1e-10)
    if dtype == np.float64:  # weights held constant: finite differences away from top-k ties
      grad = jax.grad(fn, argnums=1)(jnp.asarray(memory), jnp.asarray(x))
      h, num = 1e-6, np.zeros_like(x)
      for i in range(3):
        for d in range(4):
          e = np.zeros_like(x)
          e[i, d] = h
          num[i, d] = (_memory_loss_ref(memory, x + e, index, 3, 0.5)
                       - _memory_loss_ref(memory, x - e, index, 3, 0.5)) / (2 * h)
      np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_exemplar_weights_own_slot_three_neighbours_two():
  sim = jnp.asarray(np.random.default_rng(4).normal(size=(10, 10)))
  w = np.asarray(L.exemplar_weights(sim, jnp.arange(10), 10))
  assert np.all(np.diag(w) == 3) and np.all(w[~np.eye(10, dtype=bool)] == 2)


def test_memory_update_sequential_with_duplicates():
  rng = np.random.default_rng(5)
  memory = rng.normal(size=(5, 3))
  x = rng.normal(size=(4, 3))
  index = np.asarray([2, 0, 2, 4])
  want = memory.copy()
  for v, y in zip(x, index):
    want[y] = 0.3 * want[y] + 0.7 * v
    want[y] /= np.linalg.norm(want[y])
  got = L.exemplar_memory_update(jnp.asarray(memory), jnp.asarray(x), jnp.asarray(index), 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_schedule_and_weights():
  assert [L.release_lr(e) for e in (0, 5, 10, 14, 15, 19, 20, 21, 30, 31)] == pytest.approx(
      [0.0, 0.0004, 0.1, 0.1, 0.08, 0.08, 0.008, 1e-5, 1e-5, 1e-6])
  got = [float(v) for e in (0, 12, 13) for v in L.loss_weights(e)]
  assert got == pytest.approx([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.35, 0.3, 1.0])
  assert float(L.gate_l1_weight(jnp.ones((1, 4)))) == pytest.approx(1e-4)
  assert float(L.gate_l1_weight(jnp.full((1, 4), 0.5))) == pytest.approx(5e-5)


def test_instance_norm_only_in_last_stage3_block():
  net = dtdn_nets.TaskNet(num_source=3, num_target=5, num_features=8, block="basic",
                          stage_sizes=(1, 1, 3, 1), width=4)
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 4, 8)))["params"]
  with_in = sorted(k for k, v in params.items() if "in" in v)
  assert with_in == ["stage3_block2"]


def _config(variant, epoch_switch=0):
  c = common.base_config()
  c.method = "dtdn"
  c.model.num_classes = 3
  c.model.kwargs = ml_collections.ConfigDict(dict(block="basic", stage_sizes=(1, 1, 2, 1),
                                                  width=4))
  c.dtdn = ml_collections.ConfigDict(dict(variant=variant, num_target=6, num_features=8,
                                          reduction=2, knn=2, beta=0.5, alpha=0.1,
                                          dropout=0.0, switch_epoch=epoch_switch))
  c.optim = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.0))
  return c


def _batch():
  rng = np.random.default_rng(6)
  return {"image": jnp.asarray(rng.normal(size=(4, 32, 16, 3)), jnp.float32),
          "label": jnp.asarray([0, 1, 2, 1]),
          "target/image": jnp.asarray(rng.normal(size=(4, 32, 16, 3)), jnp.float32),
          "target/index": jnp.asarray([5, 0, 3, 2])}


def test_dtdn_step_matches_hand_composition():
  cfg = _config("dtdn", epoch_switch=-1)  # epoch 0 > -1: every term active
  method = methods.get("dtdn")(cfg, steps_per_epoch=10, total_steps=10)
  batch = _batch()
  state = method.init(jax.random.key(0), batch)
  memory = np.random.default_rng(7).normal(size=(6, 8)).astype(np.float32)
  memory /= np.linalg.norm(memory, axis=1, keepdims=True)
  state = state.replace(extra={"memory": jnp.asarray(memory)})
  new, metrics = jax.jit(method.train_step)(state, batch)

  # Hand composition with NumPy losses on the networks' outputs.
  p, ms = state.params, state.model_state
  fs, ms = method.call("encoder", p, ms, batch["image"], True)
  ft, ms = method.call("encoder", p, ms, batch["target/image"], True)
  gs = np.asarray(method.call("gate", p, ms, fs, True)[0]).mean(0)
  gt = np.asarray(method.call("gate", p, ms, ft, True)[0]).mean(0)
  from jaxcompress.methods.dtdn import _SALT, _TASK_PASSES  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(state.step_rng(_SALT), len(_TASK_PASSES) + 2)
  perm = np.asarray(jax.random.permutation(keys[-1], 4))
  fs, ft = np.asarray(fs), np.asarray(ft)
  parts = {"sc_sa": gs * fs + ((1 - gs) * fs)[perm], "sc_ta": gs * fs + ((1 - gt) * ft)[perm],
           "tc_sa": gt * ft + ((1 - gs) * fs)[perm], "tc_ta": gt * ft + ((1 - gt) * ft)[perm],
           "t_c": gt * ft}
  outs = {}
  for k, name in enumerate(_TASK_PASSES):
    o, ms = method.call("task", p, ms, jnp.asarray(parts[name]), True, keys[k])
    outs[name] = {key: np.asarray(v, np.float64) for key, v in o.items()}
  y = np.asarray(batch["label"])

  def ce(z):
    return -np.mean(_log_softmax(z)[np.arange(4), y])

  sc_sa = ce(outs["sc_sa"]["source"])
  sc_ta = ce(outs["sc_ta"]["source"]) + 5e-5 * np.abs(gs).sum()
  agree = np.abs(_log_softmax(outs["tc_sa"]["target"])
                 - _log_softmax(outs["tc_ta"]["target"])).mean() + 5e-5 * np.abs(gt).sum()
  bn = outs["t_c"]["bn"]
  x = bn / np.linalg.norm(bn, axis=1, keepdims=True)
  nb = _memory_loss_ref(memory, x, np.asarray(batch["target/index"]), 2, 0.5)
  want = 0.35 * (sc_sa + sc_ta) + 0.3 * nb + agree
  np.testing.assert_allclose(metrics["sc_sa"], sc_sa, rtol=1e-4)
  np.testing.assert_allclose(metrics["agree"], agree, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(metrics["nb"], nb, rtol=1e-4)
  np.testing.assert_allclose(metrics["loss"], want, rtol=1e-4)
  # Memory: momentum alpha * epoch = 0 at epoch 0: the slots become the normalised features.
  np.testing.assert_allclose(new.extra["memory"][np.asarray(batch["target/index"])],
                             x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-3)
  # BN statistics moved by the two encoder and five TaskNet passes, as threaded above.
  np.testing.assert_allclose(
      jax.tree.leaves(new.model_state["task"])[0], jax.tree.leaves(ms["task"])[0], rtol=1e-3, atol=1e-4)
  assert int(new.step) == 1


def test_early_epochs_train_source_terms_only_and_predict():
  cfg = _config("dtdn", epoch_switch=12)
  method = methods.get("dtdn")(cfg, steps_per_epoch=10, total_steps=10)
  batch = _batch()
  state = method.init(jax.random.key(1), batch)
  new, metrics = jax.jit(method.train_step)(state, batch)
  np.testing.assert_allclose(metrics["loss"], metrics["sc_sa"] + metrics["sc_ta"], rtol=1e-5)
  # The target head gets no gradient before the switch (plain SGD without decay).
  np.testing.assert_array_equal(new.params["task"]["target_classifier"]["kernel"],
                                state.params["task"]["target_classifier"]["kernel"])
  out = method.predict(new, batch)
  assert out["features"].shape == (4, 32) and out["logits"].shape == (4, 3)


def test_source_only_variant():
  method = methods.get("dtdn")(_config("source_only"), steps_per_epoch=1, total_steps=1)
  batch = {k: v for k, v in _batch().items() if not k.startswith("target/")}
  state = method.init(jax.random.key(2), batch)
  assert "gate" not in state.params and "memory" not in state.extra
  _, metrics = jax.jit(method.train_step)(state, batch)
  assert np.isfinite(float(metrics["loss"]))
