"""DDAN method (arXiv 2007.13249, PeixianChen/DDAN `reid/trainers.py`) on a tiny MobileNetV2 split.

One jitted step against a hand composition of the losses (NumPy references of the identity
cross-entropy, the batch-hard triplet and the uniform confusion terms), the gradient routing
(E from L_id + L_tri only, D from its own loss only, T from everything), the memory state and
its epoch semantics, the baseline variant, the network split, the central-domain rule, the
report and the recipe's rotation and colour-jitter augmentations.
"""
from __future__ import annotations

import functools
import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import optimize

from configs import common
from jaxcompress import reid
from jaxcompress.data import augment
from jaxcompress.errors import ConfigError
from jaxcompress.methods import ddan, ddan_augment, ddan_central, ddan_nets
from jaxcompress.models import mobilenet_v2, torchvision_weights

IDS = (3, 3, 2)           # identities of the three source domains
SPE = 5                   # steps per epoch
SETTING = ((1, 8, 1, 1), (6, 16, 1, 2))
LR = 0.5


def _config(variant="ddan", central=1):
  c = common.base_config()
  c.method = "ddan"
  c.model.num_classes = sum(IDS)
  c.model.kwargs = ml_collections.ConfigDict(dict(width_mult=1.0, setting=SETTING))
  c.ddan = ddan.default_ddan_config()
  c.ddan.update(dict(variant=variant, ids_per_domain=IDS, source_names=("a", "b", "c"),
                     central=central, feature_dim=16, d_hidden=8, knn=2, dropout=0.0))
  # Plain SGD at a constant rate: a parameter's update is -LR times its gradient.
  c.optim.update(dict(name="sgd", learning_rate=LR, momentum=0.0, weight_decay=0.0,
                      schedule="constant"))
  return c


def _batch(seed=0):
  labels = np.asarray([0, 0, 4, 4, 6, 6, 7, 7])
  domains = np.repeat(np.arange(3), IDS)[labels]
  image = jax.random.normal(jax.random.key(seed), (8, 16, 8, 3))
  return {"image": image, "label": jnp.asarray(labels, jnp.int32),
          "domain": jnp.asarray(domains, jnp.int32), "camera": jnp.zeros(8, jnp.int32),
          "mask": jnp.ones(8)}


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  z = x - x.max(1, keepdims=True)
  return z - np.log(np.exp(z).sum(1, keepdims=True))


def _np_triplet(f, labels, margin=0.3):
  x = np.asarray(f, np.float64)
  x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
  total = 0.0
  for i in range(len(x)):
    pos = max(np.sqrt(max(np.sum((x[i] - x[j]) ** 2), 1e-12)) for j in range(len(x))
              if labels[j] == labels[i])
    neg = min(np.sqrt(max(np.sum((x[i] - x[j]) ** 2), 1e-12)) for j in range(len(x))
              if labels[j] != labels[i])
    total += max(0.0, pos - neg + margin)
  return total / len(x)


@pytest.fixture(scope="module")
def setup():
  m = ddan.DDAN(_config(), steps_per_epoch=SPE, total_steps=4 * SPE)
  state = jax.jit(m.init)(jax.random.key(0), _batch())
  return m, state, jax.jit(m.train_step)


@functools.partial(jax.jit, static_argnums=0)
def _forward_jit(m, state, batch, trained):
  return _forward(m, state, batch, trained)


def _forward(m, state, batch, trained):
  """The networks as the step runs them (train mode, the release's pass order)."""
  params = {**state.params, **trained}
  ms = state.model_state
  e, ms = m.call("encoder", params, ms, batch["image"], True)
  (_, f_d, _), ms = m.call("mapping", params, ms, jax.lax.stop_gradient(e), True)
  (logits, f, _), ms = m.call("mapping", params, ms, e, True)
  d_logits, _ = m.call("discriminator", params, ms, f_d, True)
  return logits, f, f_d, d_logits


def test_step_loss_is_the_hand_composition(setup):
  m, state, step = setup
  b = _batch(1)
  _, metrics = step(state, b)
  trained = {n: state.params[n] for n in ("encoder", "mapping")}
  logits, f, f_d, d_logits = (np.asarray(x) for x in _forward_jit(m, state, b, trained))
  labels = np.asarray(b["label"])
  want_id = -np.mean(_np_log_softmax(logits)[np.arange(8), labels])
  want_tri = _np_triplet(f, labels)
  want_adv = -np.mean(_np_log_softmax(d_logits + 1e-6))
  # Epoch 0: zero memory, raw features: the symmetric KL reduces to sum(P log P - P log 1e-8).
  p = f_d.astype(np.float64)
  plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
  want_mem = np.sum(plogp - p * np.log(1e-8)) * 2 / (8 * 2 * 16)
  np.testing.assert_allclose(float(metrics["id"]), want_id, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["tri"]), want_tri, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(metrics["adv"]), want_adv, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["mem"]), want_mem, rtol=1e-4)
  # The memory term weighs 0 before epoch 3.
  np.testing.assert_allclose(float(metrics["loss"]), want_id + want_tri + 0.18 * want_adv,
                             rtol=1e-4)
  # D's own loss: central = source 1 -> label 1 for domain-1 samples only.
  target = (np.asarray(b["domain"]) == 1).astype(int)
  want_dis = -np.mean(_np_log_softmax(d_logits)[np.arange(8), target])
  np.testing.assert_allclose(float(metrics["dis"]), want_dis, rtol=1e-4)


def _updates(state, new_state, name):
  return jax.tree.map(lambda a, b: (np.asarray(a) - np.asarray(b)) / LR,
                      state.params[name], new_state.params[name])


@pytest.mark.parametrize("epoch", [0, 3])
def test_gradients_reach_each_network_from_its_terms_only(setup, epoch):
  m, state, step = setup
  b = _batch(2)
  if epoch:  # a filled memory and the step counter in epoch 3: the memory term is active
    state, _ = step(state, b)
    state = state.replace(step=jnp.asarray(epoch * SPE, jnp.int32))
  new_state, metrics = step(state, b)
  w_mem = 0.05 if epoch >= 3 else 0.0
  labels, domains = b["label"], b["domain"]

  def terms(trained):
    """(L_id, L_tri, L_adv, L_mem) at `trained`, as the release composes them."""
    logits, f, f_d, d_logits = _forward(m, state, b, trained)
    mem = jnp.zeros(())
    if w_mem:
      mem = reid.identity_memory_loss(state.extra["memory"], f_d, labels, domains,
                                      m.id_domains, epoch, 0, knn=2, central=1)[0]
    return jnp.stack([reid.cross_entropy_label_smooth(logits, labels, 0.0),
                      reid.triplet_loss(f, labels), reid.uniform_confusion_loss(d_logits), mem])

  trained = {n: state.params[n] for n in ("encoder", "mapping")}
  # One Jacobian: the gradient of every term, combined with the release's weights below.
  values, jac = jax.jit(lambda t: (terms(t), jax.jacrev(terms)(t)))(trained)
  weights = np.asarray([1.0, 1.0, 0.18, w_mem])
  g_all = jax.tree.map(lambda j: np.tensordot(weights, np.asarray(j), 1), jac)
  g_task = jax.tree.map(lambda j: np.asarray(j[0] + j[1]), jac)
  for name, want in (("encoder", g_task["encoder"]), ("mapping", g_all["mapping"])):
    got = _updates(state, new_state, name)
    for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, w, rtol=2e-3, atol=2e-5)
  # The adversarial (and memory) terms do move the mapping, and never the encoder.
  diff = jax.tree.map(lambda a, c: np.abs(a - c).max(), g_all["mapping"], g_task["mapping"])
  assert max(jax.tree.leaves(diff)) > 1e-6
  for j in jax.tree.leaves(jac["encoder"]):
    assert np.all(np.asarray(j[2:]) == 0)
  np.testing.assert_allclose(float(metrics["loss"]), float(weights @ np.asarray(values)),
                             rtol=1e-4)

  # D: only its own cross-entropy on the detached features.
  _, _, f_d, _ = _forward_jit(m, state, b, trained)
  target = (domains == 1).astype(jnp.int32)

  def d_loss(d_params):
    out, _ = m.call("discriminator", d_params, state.model_state, jax.lax.stop_gradient(f_d),
                    True)
    return reid.cross_entropy_label_smooth(out, target, 0.0)

  want = jax.grad(d_loss)({"discriminator": state.params["discriminator"]})["discriminator"]
  for a, w in zip(jax.tree.leaves(_updates(state, new_state, "discriminator")),
                  jax.tree.leaves(want)):
    np.testing.assert_allclose(a, np.asarray(w), rtol=2e-3, atol=2e-6)
  assert int(new_state.step) == int(state.step) + 1


def test_memory_advances_with_the_epoch_means(setup):
  m, state, step = setup
  b = _batch(3)
  new_state, _ = step(state, b)
  trained = {n: state.params[n] for n in ("encoder", "mapping")}
  f_d = np.asarray(_forward_jit(m, state, b, trained)[2], np.float64)
  mem = new_state.extra["memory"]
  labels = np.asarray(b["label"])
  for y in range(sum(IDS)):
    rows = f_d[labels == y]
    want = rows.mean(0) if len(rows) else np.zeros(16)
    np.testing.assert_allclose(np.asarray(mem.memory[y]), want, rtol=1e-4, atol=1e-6)
    assert float(mem.count[y]) == len(rows)
  # Epoch 1, step 0: last <- memory, counts restart, memory = 0.05 last + 0.95 epoch mean.
  s1 = new_state.replace(step=jnp.asarray(SPE, jnp.int32))
  s2, _ = step(s1, b)
  f_d1 = np.asarray(_forward_jit(m, s1, b, {n: s1.params[n] for n in ("encoder", "mapping")})[2])
  np.testing.assert_allclose(np.asarray(s2.extra["memory"].last), np.asarray(mem.memory))
  y = 4
  want = 0.05 * np.asarray(mem.memory[y]) + 0.95 * f_d1[labels == y].mean(0)
  np.testing.assert_allclose(np.asarray(s2.extra["memory"].memory[y]), want, rtol=1e-4,
                             atol=1e-6)
  assert float(s2.extra["memory"].count[y]) == 2


def test_baseline_is_id_plus_triplet_only(setup):
  full_state = setup[1]
  m = ddan.DDAN(_config("baseline"), steps_per_epoch=SPE, total_steps=SPE)
  b = _batch(4)
  abstract = jax.eval_shape(m.init, jax.random.key(1), b)  # traces init: builds m.tx
  assert set(abstract.params) == {"encoder", "mapping"} and abstract.extra == {}
  assert set(abstract.opt_state) == {"model"}
  # The DDAN state without D and memory is a baseline state (same E, T and optimizer).
  nets = ("encoder", "mapping")
  state = full_state.replace(params={n: full_state.params[n] for n in nets},
                             model_state={n: full_state.model_state[n] for n in nets},
                             opt_state={"model": full_state.opt_state["model"]}, extra={})
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  (_, metrics), out = jax.jit(lambda s, x: (m.train_step(s, x), m.predict(s, x)))(state, b)
  assert set(metrics) == {"loss", "id", "tri", "accuracy"}
  np.testing.assert_allclose(float(metrics["loss"]), float(metrics["id"] + metrics["tri"]),
                             rtol=1e-6)
  assert out["features"].shape == (8, 16)


@pytest.fixture(scope="module")
def mnv2():
  """A tiny MobileNetV2 and its variables, every one moved off its initial value (BN
  statistics included) so that a split really has to carry each of them."""
  net = mobilenet_v2.MobileNetV2(num_classes=1000, setting=SETTING)
  variables = jax.jit(functools.partial(net.init, train=False))(jax.random.key(6),
                                                                 jnp.zeros((1, 16, 8, 3)))
  rng = np.random.default_rng(7)
  return net, jax.tree.map(lambda v: np.asarray(v) + 0.1 * rng.uniform(size=v.shape), variables)


def test_encoder_and_mapping_are_mobilenet_v2_split(mnv2):
  net, variables = mnv2
  enc = ddan_nets.Encoder(setting=SETTING)
  mapping = ddan_nets.Mapping(num_classes=5, features=1280, dropout=0.0)

  @jax.jit
  def run(variables, x):
    enc_vars, map_vars = ddan_nets.split_torchvision_weights(variables)
    e = enc.apply(enc_vars, x, train=False)
    init = mapping.init(jax.random.key(8), e, train=False)
    _, f, _ = mapping.apply({c: {**init[c], **map_vars[c]} for c in init}, e, train=False)
    cls = variables["params"]["classifier"]
    return e, f @ cls["kernel"] + cls["bias"], net.apply(variables, x, train=False)

  e, got, want = run(dict(variables), jax.random.normal(jax.random.key(5), (2, 16, 8, 3)))
  assert e.shape == (2, 4, 2, 16)  # the last block's output: the 1x1 head belongs to T
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def _np_sinkhorn(x, y, eps, max_iter, thresh):
  """Scaling-form Sinkhorn (a = mu / K b, b = nu / K^T a) with the release's stopping rule."""
  cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  k = np.exp(-cost / eps)
  mu, nu = np.full(len(x), 1 / len(x)) + 1e-8, np.full(len(y), 1 / len(y)) + 1e-8
  a, b = np.ones(len(x)), np.ones(len(y))
  for _ in range(max_iter):
    prev = a
    a = mu / (k @ b)
    b = nu / (k.T @ a)
    if np.sum(np.abs(eps * np.log(a) - eps * np.log(prev))) < thresh:
      break
  return float(np.sum(a[:, None] * k * b[None, :] * cost))


def test_sinkhorn_matches_references():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.5
  for eps, iters, thresh in ((1.0, 100, 0.1), (0.5, 300, 1e-6)):
    np.testing.assert_allclose(ddan_central.sinkhorn_distance(x, y, eps, iters, thresh),
                               _np_sinkhorn(x, y, eps, iters, thresh), rtol=1e-6)
  # Small eps, equal sizes: close to the exact transport cost (an assignment).
  y2 = rng.normal(size=(7, 3))
  cost = ((x[:, None] - y2[None]) ** 2).sum(-1)
  r, c = optimize.linear_sum_assignment(cost)
  exact = cost[r, c].sum() / 7
  got = ddan_central.sinkhorn_distance(x, y2, eps=0.01, max_iter=5000, thresh=1e-10)
  np.testing.assert_allclose(got, exact, rtol=0.02)


def test_central_domain_is_the_middle_gaussian():
  rng = np.random.default_rng(1)
  centres = [(-3, 0), (3, 0), (0, 0), (0, 3), (0, -3)]  # domain 2 in the middle
  feats = np.concatenate([rng.normal(c, 0.5, size=(40, 2)) for c in centres])
  domains = np.repeat(np.arange(5), 40)
  central, sums = ddan_central.central_domain(feats, domains, 5, normalize=False, eps=0.5)
  assert central == 2 and np.argmin(sums) == 2 and sums.shape == (5,)


class _Source:
  """A DG-like source: domain d's images are constant d-dependent colours."""

  def __init__(self):
    self.domains = np.repeat(np.arange(3), 6)
    self.id_domains = np.repeat(np.arange(3), IDS)

  def __len__(self):
    return 18

  def __getitem__(self, i):
    value = np.uint8(40 + 60 * self.domains[i] + i % 3)
    return {"image": np.full((16, 8, 3), value, np.uint8), "label": 0,
            "domain": int(self.domains[i])}


def test_wasserstein_central_is_chosen_once_on_the_host(setup):
  m = ddan.DDAN(_config(central="wasserstein"), steps_per_epoch=SPE, total_steps=SPE)
  assert m.central == -1  # what init puts in state.extra["central"]
  state = setup[1]
  state = state.replace(extra={**state.extra, "central": jnp.asarray(-1, jnp.int32)})
  context = types.SimpleNamespace(train_source=_Source(), writer=None)
  new = m.on_epoch_start(state, 0, context)
  want, _ = m.wasserstein_central(state, _Source())
  assert int(new.extra["central"]) == want and 0 <= want < 3
  # Once chosen, later epochs keep it.
  assert m.on_epoch_start(new, 1, context) is new


def test_source_layout_must_match_ids_per_domain(setup):
  m, state, _ = setup
  source = _Source()
  source.id_domains = np.repeat(np.arange(3), (2, 3, 3))
  with pytest.raises(ConfigError, match="ids_per_domain"):
    m.on_epoch_start(state, 0, types.SimpleNamespace(train_source=source, writer=None))


@pytest.mark.parametrize("change, match", [
    (dict(variant="dann"), "variant"),
    (dict(central="market"), "not one of"),
    (dict(central=3), "index"),
    (dict(memory_mask="official_bug"), "18,530"),
    (dict(memory_mask="shifted"), "memory_mask"),
])
def test_bad_options_are_config_errors(change, match):
  c = _config()
  c.ddan.update(change)
  with pytest.raises(ConfigError, match=match):
    ddan.DDAN(c)


def test_official_memory_mask_and_central_name():
  c = _config()
  c.model.num_classes = 18530
  c.ddan.update(dict(ids_per_domain=(1501, 1812, 1467, 1816, 11934), memory_mask="official_bug",
                     source_names=("market1501", "dukemtmc_reid", "cuhk03", "cuhk02",
                                   "cuhk_sysu"), central="cuhk_sysu"))
  m = ddan.DDAN(c)
  assert m.central == 4
  np.testing.assert_array_equal(m.id_domains, reid.ddan_id_domains(aligned=False))


def test_report_averages_trials_then_targets(tmp_path):
  rng = np.random.default_rng(3)
  inputs, values = {}, {}
  for stage in ("base", "full"):
    workdir = tmp_path / stage
    workdir.mkdir()
    final = {"best_viper_trial0/rank1": 1.0}
    for target in ("viper", "grid"):
      for t in range(3):
        values[stage, target, t] = rng.uniform(size=2)
        final[f"{target}_trial{t}/rank1"], final[f"{target}_trial{t}/mAP"] = values[
            stage, target, t]
    with open(workdir / "stage_done.json", "w", encoding="utf-8") as f:
      json.dump({"eval": final}, f)
    inputs[stage] = str(workdir)
  cfg = ml_collections.ConfigDict(dict(targets=("viper", "grid"), trials=3,
                                       labels=dict(base="baseline", full="ddan")))
  report = ddan.ddan_report(cfg, inputs, "", str(tmp_path))
  for stage, label in (("base", "baseline"), ("full", "ddan")):
    per_target = []
    for target in ("viper", "grid"):
      r1 = [values[stage, target, t][0] for t in range(3)]
      mean = sum(r1) / 3
      std = (sum((v - mean) ** 2 for v in r1) / 3) ** 0.5
      assert report[f"{label}/{target}/rank1_mean"] == pytest.approx(mean)
      assert report[f"{label}/{target}/rank1_std"] == pytest.approx(std)
      per_target.append(mean)
    assert report[f"{label}_rank1"] == pytest.approx(sum(per_target) / 2)
  with open(os.path.join(tmp_path, "reid_report.json"), encoding="utf-8") as f:
    assert json.load(f)["ddan_rank1"] == pytest.approx(report["ddan_rank1"])
  cfg.trials = 4
  with pytest.raises(ConfigError, match="trial3"):
    ddan.ddan_report(cfg, inputs, "", str(tmp_path))


def _np_rotate_nearest(image, angle):
  """PIL's inverse affine map for `rotate(angle)` about the centre, sampled at pixel centres
  and floored (nearest), zero outside."""
  h, w = image.shape[:2]
  t = -np.radians(angle)
  a, b, d, e = np.cos(t), np.sin(t), -np.sin(t), np.cos(t)
  cx, cy = w / 2, h / 2
  out = np.zeros_like(image)
  for yo in range(h):
    for xo in range(w):
      x, y = xo + 0.5 - cx, yo + 0.5 - cy
      xi, yi = int(np.floor(a * x + b * y + cx)), int(np.floor(d * x + e * y + cy))
      if 0 <= xi < w and 0 <= yi < h:
        out[yo, xo] = image[yi, xi]
  return out


def test_rotation_augmentation():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (32, 16, 3)).astype(np.uint8)
  fn = augment.get_augmentation("ddan_rotation", degrees=(180.0, 180.0))
  np.testing.assert_array_equal(fn(x, np.random.default_rng(1)), x[::-1, ::-1])
  np.testing.assert_array_equal(ddan_augment.rotate(x, rng, 0.0), x)
  angle = np.random.default_rng(2).uniform(-5.0, 5.0)
  got = ddan_augment.rotate(x, np.random.default_rng(2), 5.0)
  want = _np_rotate_nearest(x, angle)
  assert got.shape == x.shape and got.dtype == np.uint8
  assert np.mean(np.any(got != want, axis=-1)) < 0.02  # rounding at sampling boundaries only


def test_color_jitter_augmentation():
  rng = np.random.default_rng(3)
  x = rng.integers(0, 256, (8, 6, 3)).astype(np.uint8)
  xf = x.astype(np.float64)
  got = ddan_augment.color_jitter(x, rng, brightness=(1.5, 1.5))
  np.testing.assert_allclose(got, np.clip(xf * 1.5, 0, 255), atol=1)
  grey = (xf @ np.asarray([0.299, 0.587, 0.114]))[..., None]
  got = ddan_augment.color_jitter(x, rng, saturation=(0.5, 0.5))
  np.testing.assert_allclose(got, np.clip(grey + 0.5 * (xf - grey), 0, 255), atol=2)
  red = np.tile(np.asarray([200, 30, 30], np.uint8), (4, 4, 1))
  green = ddan_augment.color_jitter(red, rng, hue=(1 / 3, 1 / 3))
  assert np.all(green[..., 1] > 150) and np.all(green[..., 0] < 60)
  jitter = augment.get_augmentation("ddan_color_jitter", brightness=(0.5, 2.0),
                                    saturation=(0.5, 2.0), hue=(-0.1, 0.1))
  np.testing.assert_array_equal(jitter(x, np.random.default_rng(4)),
                                jitter(x, np.random.default_rng(4)))
  with pytest.raises(ConfigError, match="uint8"):
    jitter(xf, rng)


@pytest.mark.parametrize("feature_dim", [1280, 16])
def test_pretrained_mobilenet_v2_fills_encoder_and_mapping(setup, mnv2, monkeypatch,
                                                           feature_dim):
  variables = mnv2[1]
  monkeypatch.setattr(torchvision_weights, "convert_torchvision",
                      lambda arch, path: dict(variables) if arch == "mobilenet_v2" else None)
  c = _config()
  c.ddan.update(dict(feature_dim=feature_dim, pretrained="mobilenet_v2-b0353104.pth"))
  m = ddan.DDAN(c, steps_per_epoch=SPE, total_steps=SPE)
  if feature_dim != 1280:  # the fixture's 16-wide mapping cannot take the 1280-wide head
    with pytest.raises(ConfigError, match="mapping/head"):
      m.load_initial(setup[1])
    return
  state = jax.eval_shape(m.init, jax.random.key(3), _batch())  # shapes are all it reads
  loaded = m.load_initial(state)
  for col, key in (("params", None), ("batch_stats", "batch_stats")):
    src = variables[col]
    enc = loaded.params["encoder"] if key is None else loaded.model_state["encoder"][key]
    mapping = loaded.params["mapping"] if key is None else loaded.model_state["mapping"][key]
    for module in src:
      where = mapping if module in ("head", "head_bn") else enc
      if module == "classifier":
        assert module not in enc
        continue
      for a, b in zip(jax.tree.leaves(where[module]), jax.tree.leaves(src[module])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # New layers keep their initial values.
  for module in ("bn", "classifier"):
    assert loaded.params["mapping"][module] is state.params["mapping"][module]
