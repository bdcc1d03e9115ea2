"""Tests for the super-resolution models (EDSR, RDN) and their PAMS variants."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.models import edsr, factory, rdn
from jaxcompress.quant import quantizers as qz

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # optional cross-check against PyTorch's PixelShuffle
  torch = None


def n_params(model, tree="params"):
  v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(v[tree]))


def fake_variables(model, x, seed=0):
  """Variables with init's structure but NumPy values: random init compiles one RNG kernel per
  parameter shape, which dominates the runtime of these tests on CPU."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  special = {"alpha": 10.0, "max_val": 1.0, "count": 0, "active": True, "bias": 0.0}

  def make(path, s):
    name = path[-1].key
    if name in special:
      return jnp.full(s.shape, special[name], s.dtype)
    fan_in = int(np.prod(s.shape[:-1]))
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree_util.tree_map_with_path(make, shapes)


def tiny_edsr(scale=2, bits=None):
  layers = factory.FLOAT if bits is None else edsr.pams_layers(bits)
  return edsr.EDSR(scale=scale, n_resblocks=2, n_feats=8, layers=layers)


def tiny_rdn(scale=2, bits=None, c=2):
  layers = factory.FLOAT if bits is None else edsr.pams_layers(bits)
  return rdn.RDN(scale=scale, g0=8, d=2, c=c, g=4, layers=layers)


class ParamCountTest(parameterized.TestCase):

  def test_reference_counts(self):
    # EDSR-PyTorch: edsr_baseline_x2 1.37 M, x4 1.52 M, EDSR x4 43.1 M; RDN x4 22.3 M.
    self.assertEqual(n_params(edsr.edsr_baseline(2)), 1_369_859)
    self.assertEqual(n_params(edsr.edsr_baseline(4)), 1_517_571)
    self.assertEqual(n_params(edsr.edsr_full(4)), 43_089_923)
    self.assertEqual(n_params(rdn.rdn(4)), 22_271_107)
    # PAMS students add one alpha per activation quantizer: 3 per EDSR block; 1 + (C-1) + 1 per
    # RDB and 1 before the GFF in RDN.
    self.assertEqual(n_params(edsr.edsr_baseline(4, edsr.pams_layers(4))), 1_517_571 + 16 * 3)
    self.assertEqual(n_params(rdn.rdn(4, edsr.pams_layers(8))), 22_271_107 + 16 * 9 + 1)


class ForwardTest(parameterized.TestCase):

  @parameterized.parameters(("edsr", 2, None), ("edsr", 3, 4), ("edsr", 4, 8), ("rdn", 2, 4),
                            ("rdn", 3, None), ("rdn", 4, 8))
  def test_shapes(self, arch, scale, bits):
    model = (tiny_edsr if arch == "edsr" else tiny_rdn)(scale, bits)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 6, 5, 3)), jnp.float32)
    v = fake_variables(model, x)
    sr, feat = model.apply(v, x, return_features=True)
    self.assertEqual(sr.shape, (2, 6 * scale, 5 * scale, 3))
    self.assertEqual(feat.shape, (2, 6, 5, 8))
    self.assertEqual(jax.eval_shape(model.apply, v, x).shape, sr.shape)  # sr only by default
    self.assertTrue(np.all(np.isfinite(sr)))

  def test_student_params_match_teacher(self):
    # Same names and shapes apart from the alphas, so FP weights initialise the student.
    for make in (tiny_edsr, tiny_rdn):
      t = jax.eval_shape(make(2).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
      s = jax.eval_shape(make(2, 4).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
      flat_t = {k: v.shape for k, v in jax.tree_util.tree_leaves_with_path(t)}
      flat_s = {k: v.shape for k, v in jax.tree_util.tree_leaves_with_path(s)
                if k[-1].key != "alpha"}
      self.assertEqual(flat_s, flat_t)

  def test_mean_shift(self):
    model = tiny_edsr(2)
    x = jnp.zeros((1, 4, 4, 3))
    v = jax.tree_util.tree_map(jnp.zeros_like, fake_variables(model, x))
    np.testing.assert_allclose(model.apply(v, x)[0, 0, 0],
                               np.array([0.4488, 0.4371, 0.4040]) * 255, rtol=1e-6)

  def test_pixel_shuffle_torch_order(self):
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)  # C = 2 output channels, r = 2
    y = edsr.pixel_shuffle(x, 2)
    self.assertEqual(y.shape, (1, 2, 2, 2))
    # torch: out[c, i, j] = in[c * 4 + i * 2 + j]
    np.testing.assert_array_equal(y[0, ..., 0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(y[0, ..., 1], [[4, 5], [6, 7]])

  @absltest.skipIf(torch is None, "PyTorch not installed")
  def test_pixel_shuffle_against_torch(self):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 18)).astype(np.float32)
    ref = torch.nn.PixelShuffle(3)(torch.tensor(np.transpose(x, (0, 3, 1, 2)))).numpy()
    np.testing.assert_array_equal(edsr.pixel_shuffle(jnp.asarray(x), 3),
                                  np.transpose(ref, (0, 2, 3, 1)))

  @absltest.skipIf(torch is None, "PyTorch not installed")
  def test_pams_edsr_against_torch_transcription(self):
    """Tiny PAMS-EDSR vs a PyTorch transcription of the official forward (float64, same weights)."""
    with jax.enable_x64(True):
      model = edsr.EDSR(scale=2, n_resblocks=2, n_feats=8, layers=edsr.pams_layers(4),
                        res_scale=0.5)
      x = np.random.default_rng(7).uniform(0, 255, (1, 5, 6, 3))
      v = fake_variables(model, jnp.asarray(x))
      v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64)
                                 if jnp.issubdtype(a.dtype, jnp.floating) else a, v)
      sr, feat = model.apply({"params": v["params"]}, jnp.asarray(x), return_features=True)
    p = jax.tree_util.tree_map(lambda a: torch.tensor(np.asarray(a, np.float64)), v["params"])
    f = torch.nn.functional

    def qw(w):  # quant_weight
      m = w.abs().max() + 1e-8
      return torch.round(w * 7 / m) * m / 7

    def qa(t, a):  # pams_quant_act after calibration
      return torch.round(torch.max(torch.min(t, a), -a) * 7 / a) * a / 7

    def cv(t, prm, quant=False):
      w = prm["kernel"].permute(3, 2, 0, 1)
      return f.conv2d(t, qw(w) if quant else w, prm["bias"], padding=w.shape[-1] // 2)

    mean = torch.tensor(edsr.DIV2K_RGB_MEAN, dtype=torch.float64).view(1, 3, 1, 1) * 255
    t = cv(torch.tensor(x).permute(0, 3, 1, 2) - mean, p["head"])
    h = t
    for i in range(2):
      b = p[f"body_{i}"]
      skip = qa(h, b["quant_act1"]["alpha"])
      r = qa(f.relu(cv(h, b["conv1"], True)), b["quant_act2"]["alpha"])
      h = qa(cv(r, b["conv2"], True) * 0.5, b["quant_act3"]["alpha"]) + skip
    res = cv(h, p["body_end"]) + t
    up = f.pixel_shuffle(cv(res, p["upsampler"]["conv_0"]), 2)
    out = cv(up, p["tail"]) + mean
    np.testing.assert_allclose(feat, res.permute(0, 2, 3, 1).numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sr, out.permute(0, 2, 3, 1).numpy(), rtol=1e-9, atol=1e-9)

  def test_factory_registry(self):
    layers = factory.get("pams", bits=4, calibration="last_batch")
    self.assertIsInstance(layers, edsr.PAMSLayers)
    self.assertEqual(layers.conv(8).weight_bits, 4)
    self.assertEqual(layers.act_quant().calibration, "last_batch")


class CalibrationTest(absltest.TestCase):

  def test_model_calibration_cycle(self):
    model = tiny_edsr(2, bits=8)
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)), jnp.float32)
    v = fake_variables(model, x)
    # Evaluation needs no pams_calib collection at all.
    y_eval = model.apply({"params": v["params"]}, x)
    (_, feat), upd = model.apply(v, x, return_features=True, mutable=[qz.CALIB_COLLECTION])
    calib = upd[qz.CALIB_COLLECTION]
    self.assertEqual(feat.shape, (2, 5, 5, 8))
    params = qz.calibrated_params(v["params"], calib)
    flat_p = dict(jax.tree_util.tree_leaves_with_path(params))
    n_alpha = 0
    for path, val in jax.tree_util.tree_leaves_with_path(calib):
      if path[-1].key == "max_val":
        n_alpha += 1
        alpha = flat_p[path[:-1] + (jax.tree_util.DictKey("alpha"),)]
        np.testing.assert_array_equal(alpha, val)
        self.assertNotEqual(float(val[0]), 1.0)  # updated from the initial buffer
    self.assertEqual(n_alpha, 6)
    # Calibration switched off: mutable apply equals the evaluation path.
    off = qz.set_calibration(calib, False)
    y_off, upd2 = model.apply({"params": v["params"], qz.CALIB_COLLECTION: off}, x,
                              mutable=[qz.CALIB_COLLECTION])
    np.testing.assert_allclose(y_off, y_eval, rtol=1e-6, atol=1e-4)
    chex.assert_trees_all_equal(upd2[qz.CALIB_COLLECTION], off)


class PlacementTest(absltest.TestCase):

  def _record(self, model, x):
    """Module path -> (class name, call input) for every PAMSConv / Conv / PAMSQuantAct call."""
    calls = {}

    def interceptor(next_fun, args, kwargs, context):
      mod = context.module
      if context.method_name == "__call__" and isinstance(mod, (nn.Conv, qz.PAMSConv,
                                                                qz.PAMSQuantAct)):
        calls["/".join(mod.path)] = (type(mod).__name__, np.asarray(args[0]))
      return next_fun(*args, **kwargs)

    v = fake_variables(model, x)
    with nn.intercept_methods(interceptor):
      model.apply(v, x)
    return calls

  def _on_grid(self, a, alpha, bits):
    step = alpha / (2 ** (bits - 1) - 1)
    return np.allclose(a / step, np.round(a / step), atol=1e-3)

  def test_edsr_placement(self):
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 6, 6, 3)), jnp.float32)
    calls = self._record(tiny_edsr(4, bits=4), x)
    for name in ("head", "body_end", "upsampler/conv_0", "upsampler/conv_1", "tail"):
      self.assertNotEqual(calls[name][0], "PAMSConv", name)
    for b in ("body_0", "body_1"):
      self.assertEqual(calls[f"{b}/conv1"][0], "PAMSConv")
      self.assertEqual(calls[f"{b}/conv2"][0], "PAMSConv")
      for q in ("quant_act1", "quant_act2", "quant_act3"):
        self.assertEqual(calls[f"{b}/{q}"][0], "PAMSQuantAct")
      # conv2's input is quantized (alpha = 10 at init); conv1 takes the block input as is.
      self.assertTrue(self._on_grid(calls[f"{b}/conv2"][1], 10.0, 4))
      np.testing.assert_array_equal(calls[f"{b}/conv1"][1], calls[f"{b}/quant_act1"][1])
    self.assertFalse(self._on_grid(calls["body_0/conv1"][1], 10.0, 4))  # head output: float
    self.assertLen([k for k, v in calls.items() if v[0] == "PAMSQuantAct"], 6)

  def test_rdn_placement(self):
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 5, 5, 3)), jnp.float32)
    calls = self._record(tiny_rdn(2, bits=8, c=3), x)
    for name in ("sfe1", "sfe2", "up_0", "up_out"):
      self.assertNotEqual(calls[name][0], "PAMSConv", name)
    for name in ("rdb_0/conv_0", "rdb_0/conv_2", "rdb_1/lff", "gff_0", "gff_1"):
      self.assertEqual(calls[name][0], "PAMSConv", name)
    quant = sorted(k for k, v in calls.items() if v[0] == "PAMSQuantAct")
    self.assertEqual(quant, sorted(
        ["quant_act"] + [f"rdb_{i}/{q}" for i in range(2) for q in
                         ("quant_act1", "quant_act2", "quant_act_in_1", "quant_act_in_2")]))
    # Inputs of every quantized conv except gff_1 are on the 8-bit grid.
    for name in ("rdb_0/conv_0", "rdb_0/conv_1", "rdb_1/conv_2", "rdb_0/lff", "gff_0"):
      self.assertTrue(self._on_grid(calls[name][1], 10.0, 8), name)
    self.assertFalse(self._on_grid(calls["gff_1"][1], 10.0, 8))


if __name__ == "__main__":
  absltest.main()
