"""CoGD channel pruning: the step order, the correction, channel selection and the exact cut."""
from __future__ import annotations

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.cogd import prune_quick
from jaxcompress import models, prune
from jaxcompress.errors import ConfigError
from jaxcompress.methods import cogd_prune, cogd_prune_stages
from jaxcompress.optim import cogd as cogd_lib
from jaxcompress.summary import summary
from jaxcompress.train import loop

SHAPE = (8, 8, 1)


def _search_config(**cogd):
  c = prune_quick.get_config().stages.search
  c.model.name = "cifar_resnet"  # a small ResNet-8 keeps the compiles short
  c.model.kwargs = dict(depth=8, widths=(4, 8, 16))
  c.cogd.update(cogd)
  c.optim.weight_decay = 0.0
  c.optim.momentum = 0.0
  return c


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(n, *SHAPE)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


def _method(total_steps=10, **cogd):
  m = cogd_prune.CoGDPrune(_search_config(**cogd), steps_per_epoch=5, total_steps=total_steps)
  state = m.init(jax.random.key(0), _batch())
  return m, state


def _flat(tree):
  return traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(tree)))


@pytest.mark.parametrize("variant", ["none", "matlab_heuristic"])
def test_step_is_x_step_then_a_step_at_the_new_masks_then_the_correction(variant):
  m, state = _method(variant=variant, lambda_l1=0.5, mask_lr=0.1)
  batch = _batch()
  new, metrics = jax.jit(m.train_step)(state, batch)
  # Reference composed from the definitions: prox-gradient x-step at (A_t, x_t), plain SGD on A
  # at (A_t, x_{t+1}) with the masks' gradient discarded, then pull-back per gated conv.
  loss = lambda p: m.loss_fn(p, state, batch)[0]  # noqa: E731
  p0 = _flat(state.params)
  g0 = _flat(jax.grad(loss)(state.params))
  px = dict(p0)
  for k in p0:
    if k[-1] == "mask":
      u = p0[k] - 0.1 * g0[k]
      px[k] = np.sign(u) * np.maximum(np.abs(u) - 0.1 * 0.5, 0)
  g1 = _flat(jax.grad(loss)(traverse_util.unflatten_dict(px)))
  want = {k: (v if k[-1] == "mask" else v - m.config.optim.learning_rate * g1[k])
          for k, v in px.items()}
  if variant == "matlab_heuristic":
    for gate, (conv, *_) in m.gates.items():
      key = (*conv.split("/"), "kernel")
      shape = want[key].shape
      corrected = np.asarray(cogd_lib.pull_back_columns(
          want[key].reshape(-1, shape[-1]), p0[key].reshape(-1, shape[-1]),
          px[(*gate.split("/"), "mask")], 1.0, 10)).reshape(shape)
      assert not np.allclose(corrected, want[key])  # the correction moves every gated kernel
      want[key] = corrected
  got = _flat(new.params)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-6, err_msg=str(k))
  masks = np.concatenate([px[k].ravel() for k in px if k[-1] == "mask"])
  np.testing.assert_allclose(float(metrics["mask_l1"]), np.abs(masks).sum(), rtol=1e-5)
  assert float(metrics["mask_l1"]) < masks.size  # shrunk from the all-ones init
  assert np.isfinite(float(metrics["grad_norm_a"])) and float(metrics["grad_norm_x"]) > 0


def test_gates_follow_the_pattern():
  m, state = _method(gates=r"gate1$")
  names = set(prune.mask_params(state.params))
  assert names == set(m.gates) and names and all(n.endswith("gate1") for n in names)
  m2, state2 = _method(gates=r"gate")
  assert set(prune.mask_params(state2.params)) > names


def _masked_and_cut(target, zero_every=3):
  m, state = _method()
  flat = _flat(state.params)
  rng = np.random.default_rng(2)
  for k in flat:
    if k[-1] == "mask":  # soft masks, a third of them exactly 0
      v = rng.uniform(0.2, 1.5, flat[k].shape)
      v[::zero_every] = 0.0
      flat[k] = v.astype(np.float32)
    elif k[-1] in ("scale", "bias"):
      flat[k] = rng.normal(size=flat[k].shape).astype(np.float32)
  params = traverse_util.unflatten_dict(flat)
  masks = {g: np.asarray(prune.mask_params(params)[g]) for g in m.gates}
  plain = models.build("cifar_resnet", num_classes=10, **m.config.model.kwargs)
  unpruned = summary(plain, jax.ShapeDtypeStruct((1, *SHAPE), jnp.float32),
                     train=False).total_macs
  keep = cogd_prune_stages.select_channels(m.model, {g: np.abs(v) for g, v in masks.items()},
                                           SHAPE, target * unpruned)
  folded = cogd_prune_stages._fold(flax.core.unfreeze(params), m.gates, masks)  # pylint: disable=protected-access
  binary = {g: np.where(k, 1.0, -1.0) for g, k in keep.items()}
  small, variables = prune.materialize(m.model, {"params": folded, **state.model_state}, binary,
                                       example_input=jax.ShapeDtypeStruct((1, *SHAPE),
                                                                          jnp.float32))
  return m, state.replace(params=params), masks, keep, small, variables, unpruned


def test_cut_network_equals_the_soft_masked_one_when_only_zero_masks_go():
  m, state, masks, keep, small, variables, _ = _masked_and_cut(target=1.0)
  for g in masks:
    np.testing.assert_array_equal(keep[g], masks[g] != 0)
  x = _batch(16, seed=3)["image"]
  want = m.model.apply({"params": state.params, **state.model_state}, x, train=False)
  got = small.apply(variables, x, train=False)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert sum(np.size(v) for v in jax.tree.leaves(variables["params"])) < sum(
      np.size(v) for v in jax.tree.leaves(state.params))


def test_selection_removes_the_fewest_smallest_channels_that_meet_the_target():
  m, _, masks, keep, small, _, unpruned = _masked_and_cut(target=0.5)
  x = jax.ShapeDtypeStruct((1, *SHAPE), jnp.float32)
  assert summary(small, x, train=False).total_macs <= 0.5 * unpruned
  scores = np.concatenate([np.abs(masks[g]) for g in sorted(masks)])
  kept = np.concatenate([keep[g] for g in sorted(masks)])
  assert scores[~kept].max() <= scores[kept].min()  # removed by increasing |m|
  # One channel fewer removed (the smallest kept one restored) misses the target.
  restore = np.argmin(np.where(kept, np.inf, -scores))  # the largest removed channel
  kept[restore] = True
  offsets = np.cumsum([0] + [len(masks[g]) for g in sorted(masks)])
  binary = {g: np.where(kept[offsets[i]:offsets[i + 1]], 1.0, -1.0)
            for i, g in enumerate(sorted(masks))}
  widths = prune.pruned_widths(m.model, binary)
  bigger = m.model.clone(widths=widths, layers=m.model.layers.replace(gate=None))
  assert summary(bigger, x, train=False).total_macs > 0.5 * unpruned


def test_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="unknown keys"):
    _method(lamda_l1=1.0)
  with pytest.raises(ConfigError, match="variant"):
    _method(variant="projection")
  with pytest.raises(NotImplementedError, match="unconfirmed"):
    _method(variant="paper")
  with pytest.raises(ConfigError, match="flops_target"):
    _method(flops_target=1.5)
  with pytest.raises(ConfigError, match="selects none"):
    _method(gates="nothing_here")
  c = prune_quick.get_config()
  c.stages.cut.cogd.input_shape = ()
  with pytest.raises(ConfigError, match="input_shape"):
    cogd_prune_stages.cogd_materialize(c.stages.cut, {"search": str(tmp_path)}, str(tmp_path),
                                       str(tmp_path))
  with pytest.raises(ConfigError, match="cogd_materialize"):
    cogd_prune.load_student(str(tmp_path / "missing.json"))


@pytest.mark.slow
def test_small_prune_quick_reaches_its_target_and_reports_both_accuracies(tmp_path):
  import time  # pylint: disable=g-import-not-at-top
  cpu0 = time.process_time()
  loop.run(prune_quick.get_config("small"), str(tmp_path))
  with open(tmp_path / "cogd_prune_report.json", encoding="utf-8") as f:
    report = json.load(f)
  assert report["reached_target"] and report["pruned_macs"] <= 0.5 * report["unpruned_macs"]
  assert report["pruned_params"] < report["unpruned_params"]
  for label in ("unpruned", "search", "finetune"):
    assert 0.2 < report[f"{label}/accuracy"] <= 1.0, label
  assert time.process_time() - cpu0 < 300


def test_resnet50_rows_target_the_readme_flops_and_gate_both_inner_convs():
  from configs.cogd import resnet50_imagenet  # pylint: disable=g-import-not-at-top
  for row, flops in resnet50_imagenet.ROWS.items():
    c = resnet50_imagenet.get_config(f"row={row}")
    assert c.stages.search.cogd.flops_target == pytest.approx(flops / 4.09)
    assert c.stage_order == ("search", "cut", "finetune", "report")
  m = cogd_prune.CoGDPrune(c.stages.search)
  assert len(m.gates) == 2 * (3 + 4 + 6 + 3)  # gate1 and gate2 of every bottleneck
  plain = models.build("resnet50", num_classes=1000)
  macs = summary(plain, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32), train=False)
  assert macs.total_macs == pytest.approx(4.09e9, rel=0.01)  # the README's baseline FLOPs
  with pytest.raises(ValueError, match="row="):
    resnet50_imagenet.get_config("row=0.6")


@pytest.mark.slow
def test_search_starts_from_a_torchvision_file(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "models"))
  import torchvision_weights_test as tvt  # pylint: disable=g-import-not-at-top

  from configs.cogd import resnet50_imagenet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = tvt.ResNet(tvt.Bottleneck, [3, 4, 6, 3]).eval()
  path = str(tmp_path / "resnet50.pth")
  torch.save(net.state_dict(), path)
  c = resnet50_imagenet.get_config().stages.search
  c.cogd.torchvision = path
  m = cogd_prune.CoGDPrune(c)
  x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
  state = m.load_initial(m.init(jax.random.key(0), {"image": jnp.asarray(x)}))
  logits = m.predict(state, {"image": jnp.asarray(x)})["logits"]
  with torch.no_grad():
    want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-3)  # masks at 1: torchvision's
