"""PC-DARTS: bilevel step isolation, frozen architecture warm-up, genotype.json via loop.run,
the DARTS second-order architecture gradient in float64."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from jaxcompress import methods
from jaxcompress.methods import pc_darts
from jaxcompress.models import factory
from jaxcompress.nas import edge_layout, search
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train import loop, one_shot

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny_config(method="pc_darts", **nas):
  c = common.base_config()
  c.method = method
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 64, "image_shape": (8, 8, 1), "num_classes": 4}
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.data.search_split = 0.5
  c.model.num_classes = 4
  c.num_epochs = 2
  c.log_every = 2
  c.progress = "none"
  c.async_checkpoint = False
  c.num_devices = 1  # one device: a much smaller compile than the 8-device SPMD program
  c.optim.learning_rate = 0.05
  c.optim.weight_decay = 3e-4
  c.optim.grad_clip = 5.0
  c.nas = pc_darts.default_nas_config()
  c.nas.update(dict(init_channels=8, layers=3, steps=2, multiplier=2, primitives=OPS4,
                    arch_start_epoch=1, write_png=False))
  c.nas.arch_optim.learning_rate = 0.05  # visible moves in one step
  c.nas.update(nas)
  return c


def batch(seed, n=8):
  k = jax.random.split(jax.random.key(seed), 4)
  return {"image": jax.random.normal(k[0], (n, 8, 8, 1)),
          "label": jax.random.randint(k[1], (n,), 0, 4),
          "val_image": jax.random.normal(k[2], (n, 8, 8, 1)),
          "val_label": jax.random.randint(k[3], (n,), 0, 4)}


@pytest.fixture(scope="module")
def setup():
  method = pc_darts.PCDarts(tiny_config(), steps_per_epoch=2, total_steps=4)
  state = jax.jit(method.init)(jax.random.key(0), batch(0))
  step = jax.jit(method.train_step)
  return method, state, step


def _arch(state):
  return search.split_params(state.params)[1]


def _weights(state):
  return search.split_params(state.params)[0]


def _adam_count(opt_state):
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
  assert len(states) == 1
  return int(states[0].count)


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_supernet_init_jitted_with_edge_loops_eager_unrolled():
  # 3 cells x 5 edges x 8 ops > one_shot.JIT_INIT_MAX_OPS. With edge loops (the default) the
  # init program draws each loop's edges with one vectorised edge init, so it is jitted as is.
  config = tiny_config(primitives=tuple(search.space.PRIMITIVES))
  config.seed = 3
  method = pc_darts.PCDarts(config, steps_per_epoch=2, total_steps=4)
  assert 3 * search.num_edges(2) * len(search.space.PRIMITIVES) > one_shot.JIT_INIT_MAX_OPS
  assert "threefry" in jax.jit(method.init).lower(jax.random.key(3), batch(0)).as_text()
  state = jax.jit(method.init)(jax.random.key(3), batch(0))
  want = method.model.init(jax.random.key(3), batch(0)["image"][:1], train=False)["params"]
  assert jax.tree.structure(state.params) == jax.tree.structure(dict(want))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(dict(want))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
  # Unrolled, the engine's jitted init holds the variables drawn op by op as constants (no
  # random-bit generation, no forward pass): the supernet's init from the run's seed (equal to
  # its jitted init to rounding: tests/train/one_shot_test.py).
  method.model = method.model.clone(scan_edges=False)
  lowered = jax.jit(method.init).lower(jax.random.key(3), batch(0))
  text = lowered.as_text()
  assert "threefry" not in text and "convolution" not in text
  state = lowered.compile()(jax.random.key(3), batch(0))
  want = one_shot.eager_init(method.model.init, jax.random.key(3), batch(0)["image"][:1],
                             train=False)["params"]
  got = state.params
  assert jax.tree.structure(got) == jax.tree.structure(dict(want))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(dict(want))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_with_one_entry_per_edge_restores(setup, tmp_path):
  """A checkpoint written when the edge loops kept one entry per edge (parameters, batch
  statistics and momentum under `edge_<e>`) restores into the stacked layout."""
  method, state, step = setup
  state, _ = step(state, batch(1))  # non-zero momentum and moved statistics
  layout = (method.model.steps, method.model.reduction_layers())
  old = edge_layout.unstack(state, *layout)
  assert "edge_0" in old.params["cell_0"] and "edge_0" in old.model_state["batch_stats"]["cell_0"]
  assert "edge_0" in optax.tree_utils.tree_get(old.opt_state["model"], "trace")["cell_0"]
  writer = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  writer.save(old)
  writer.close()
  reader = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  try:
    with pytest.raises(checkpoint_lib.CheckpointError):
      reader.restore(state)  # the current layout alone does not read it
    restored = reader.restore(state, legacy=method.legacy_layout(state))
  finally:
    reader.close()
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_two_optimizers_and_frozen_arch(setup):
  method, state, step = setup
  assert set(state.opt_state) == {"model", "arch"}
  assert not bool(state.extra["arch_on"])
  b = batch(1)
  new, metrics = step(state, b)
  assert _same(_arch(new), _arch(state))            # architecture frozen before the start epoch
  assert not _same(_weights(new), _weights(state))  # weights trained
  assert _adam_count(new.opt_state["arch"]) == 0
  assert float(metrics["arch_on"]) == 0.0
  # Frozen: the validation half is not used at all.
  other_val = {**b, "val_image": b["val_image"] * -1.0}
  new2, _ = step(state, other_val)
  # Equal up to run-to-run reduction order (GPU kernels are not bit-deterministic).
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
               new2.params, new.params)
  # on_epoch_start switches the architecture on at arch_start_epoch (traced epoch).
  hook = jax.jit(method.on_epoch_start)
  assert not bool(hook(state, jnp.int32(0)).extra["arch_on"])
  assert bool(hook(state, jnp.int32(1)).extra["arch_on"])


def test_bilevel_step_gradient_isolation(setup):
  method, state, step = setup
  state = jax.jit(method.on_epoch_start)(state, jnp.int32(5))
  b = batch(2)
  new, metrics = step(state, b)
  assert float(metrics["arch_on"]) == 1.0 and float(metrics["val_loss"]) > 0
  assert not _same(_arch(new), _arch(state)) and not _same(_weights(new), _weights(state))
  assert _adam_count(new.opt_state["arch"]) == 1
  # alphas depend on the validation half only: new train images leave them unchanged ...
  new_t, _ = step(state, {**b, "image": b["image"] * -1.0, "label": (b["label"] + 1) % 4})
  for x, y in zip(jax.tree.leaves(_arch(new_t)), jax.tree.leaves(_arch(new))):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert not _same(_weights(new_t), _weights(new))
  # ... and new validation images change them.
  new_v, _ = step(state, {**b, "val_image": b["val_image"] * -1.0})
  assert not _same(_arch(new_v), _arch(new))
  # The architecture update equals Adam on d L_val / d arch at the old weights.
  weights, arch = search.split_params(state.params)
  g, *_ = method.arch_grad(state, b, weights, arch, None)
  updates, _ = method.arch_tx.update(g, state.opt_state["arch"], arch)
  expected = optax.apply_updates(arch, updates)
  for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(_arch(new))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_loop_run_writes_genotype(tmp_path):
  out = loop.run(tiny_config(), str(tmp_path))
  state = out["state"]
  assert int(state.step) == 4  # 2 epochs x (32 // 16)
  # Architecture steps only in epoch 1 (arch_start_epoch = 1): 2 Adam steps.
  assert _adam_count(state.opt_state["arch"]) == 2
  path = tmp_path / "genotype.json"
  assert path.exists()
  g = genotype_lib.from_json(path.read_text())
  assert len(g.normal) == 4 and len(g.reduce) == 4 and g.normal_concat == [2, 3]
  assert all(op in OPS4 and op != "none" for op, _ in g.normal + g.reduce)
  for n in range(2):  # two distinct inputs per node, each an earlier state
    inputs = [j for _, j in g.normal[2 * n: 2 * n + 2]]
    assert len(set(inputs)) == 2 and max(inputs) < 2 + n
  report = json.loads((tmp_path / "final_report.json").read_text())
  assert report["genotype"] == json.loads(genotype_lib.to_json(g))
  assert os.path.exists(tmp_path / "metrics.jsonl")
  assert methods.get("pc_darts") is pc_darts.PCDarts


@pytest.mark.slow
def test_unrolled_second_order_step(setup):
  """Both second-order variants run and move the architecture gradient off the first-order one.

  Agreement is not asserted on this ReLU / max-pool net: at the official finite-difference scale
  (eps = 0.01 / ||v||) activation flips make the FD Hessian-vector product several times off.
  The float64 test below checks both variants against Eq. 7-8 on a smooth net.
  """
  method, state, _ = setup
  b = batch(3)
  weights, arch = search.split_params(state.params)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  first = flat(jax.jit(lambda s, bb, w, a: method.arch_grad(s, bb, w, a, None)[0])(
      state, b, weights, arch))
  for hvp in ("finite_difference", "exact"):
    m = pc_darts.PCDarts(tiny_config(unrolled=True, hvp=hvp), steps_per_epoch=2, total_steps=4)
    m.init(jax.random.key(0), batch(0))  # builds the optimizers / schedule
    g = flat(jax.jit(lambda s, bb, w, a, m=m: m.arch_grad(s, bb, w, a, None)[0])(
        state, b, weights, arch))
    assert np.all(np.isfinite(g)) and not np.allclose(g, first)


def _smooth_config(hvp):
  """A tiny plain-DARTS net (K = 1, one node, two cells) for the float64 second-order checks."""
  c = tiny_config(unrolled=True, hvp=hvp, init_channels=4, layers=2, steps=1, multiplier=1,
                  stem_multiplier=1, partial_channels=1,
                  primitives=("skip_connect", "avg_pool_3x3", "sep_conv_3x3"))
  c.model.num_classes = 3
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  return c


def _batch64(seed, n=4):
  k = jax.random.split(jax.random.key(seed), 4)
  return {"image": jax.random.normal(k[0], (n, 8, 8, 1), jnp.float64),
          "label": jax.random.randint(k[1], (n,), 0, 3),
          "val_image": jax.random.normal(k[2], (n, 8, 8, 1), jnp.float64),
          "val_label": jax.random.randint(k[3], (n,), 0, 3)}


def _f64(tree):
  return jax.tree.map(
      lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow
def test_second_order_step_float64_matches_eq7_and_finite_differences(monkeypatch):
  """DARTS (arXiv 1806.09055) Eq. 7-8 in float64, both `nas.hvp` variants.

  Eq. 7: grad_a L_val(w', a) - xi * grad2_{a,w} L_train(w, a) . v, with
  w' = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w) (architect._compute_unrolled_model
  in quark0/darts) and v = grad_w' L_val(w', a). Eq. 8: the Hessian-vector product as the central
  difference (grad_a L_train(w + eps v, a) - grad_a L_train(w - eps v, a)) / (2 eps),
  eps = 0.01 / ||v|| (architect._hessian_vector_product).

  1. "finite_difference" equals Eq. 7-8 recomputed here from the exact (autodiff) gradients of
     the same losses: the unrolled weights, the momentum buffer, the evaluation point w (not
     w'), eps and the sign.
  2. "exact" (autodiff through the unrolled step) equals the finite-difference value to 1e-3
     relative. The central difference is O(eps^2)-accurate only on a smooth loss, so ReLU is
     replaced by softplus here: with ReLU (and max pool) a perturbation of norm 0.01 flips
     activations, and each flip adds an O(1) jump to the difference quotient.
  """
  monkeypatch.setattr(nn, "relu", jax.nn.softplus)
  # The sep/dil convs take their activation from the float layer set, bound at import time.
  monkeypatch.setitem(factory.FLOAT.__dict__, "act", jax.nn.softplus)
  with jax.enable_x64(True):
    methods_ = {h: pc_darts.PCDarts(_smooth_config(h), steps_per_epoch=2, total_steps=4)
                for h in ("finite_difference", "exact")}
    b = _batch64(3)
    state = None
    for m in methods_.values():
      state = m.init(jax.random.key(0), _batch64(0))  # each builds its optimizers / schedule
    weights, arch = search.split_params(_f64(state.params))
    rng = np.random.default_rng(0)
    # Non-trivial architecture logits, a non-zero momentum buffer and a mid-run step, so every
    # term of the unrolled step (and the current learning rate) matters.
    arch = jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape), arch)
    buf = jax.tree.map(lambda x: 0.1 * rng.standard_normal(x.shape), weights)
    opt_state = optax.tree_utils.tree_set(_f64(state.opt_state), trace=buf)
    state = state.replace(step=jnp.asarray(1, state.step.dtype), params=_f64(state.params),
                          model_state=_f64(state.model_state), opt_state=opt_state)
    m = methods_["finite_difference"]
    grads = {h: jax.jit(lambda s, bb, w, a, mm=mm: mm.arch_grad(s, bb, w, a, None)[0])(
        state, b, weights, arch) for h, mm in methods_.items()}
    for g in grads.values():
      assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(g))

    # Eq. 7-8 from autodiff gradients of the same losses.
    xi = 0.1 * 0.5 * (1 + np.cos(np.pi * 1 / 4))  # cosine learning rate at step 1 of 4
    np.testing.assert_allclose(float(m.lr_schedule(1)), xi, rtol=1e-6)
    mom, wd = 0.9, 3e-4
    ms = state.model_state

    def loss(w, a, images, labels):
      return m._loss(w, a, ms, images, labels, None)[0]  # pylint: disable=protected-access

    @jax.jit
    def reference(w, a):
      gw = jax.grad(loss)(w, a, b["image"], b["label"])
      w_un = jax.tree.map(lambda p, g, u: p - xi * (mom * u + g + wd * p), w, gw, buf)
      v, d_arch = jax.grad(loss, argnums=(0, 1))(w_un, a, b["val_image"], b["val_label"])
      eps = 0.01 / jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(v)))
      shift = lambda sign: jax.tree.map(lambda p, d: p + sign * eps * d, w, v)
      g_plus = jax.grad(loss, argnums=1)(shift(1.0), a, b["image"], b["label"])
      g_minus = jax.grad(loss, argnums=1)(shift(-1.0), a, b["image"], b["label"])
      hvp = jax.tree.map(lambda p, q: (p - q) / (2 * eps), g_plus, g_minus)
      return jax.tree.map(lambda d, h: d - xi * h, d_arch, hvp), d_arch

    expected, first_order = map(_flat, reference(weights, arch))
    fd, exact = _flat(grads["finite_difference"]), _flat(grads["exact"])
    print(f"relative differences: fd vs Eq. 7-8 {_rel(fd, expected):.1e}, exact vs fd "
          f"{_rel(exact, fd):.1e}, first order vs Eq. 7 {_rel(first_order, expected):.1e}")
    assert _rel(fd, expected) < 1e-9
    # The implicit term is not negligible here, so agreement below is not the first-order term.
    assert _rel(first_order, expected) > 1e-2
    assert _rel(exact, fd) < 1e-3
