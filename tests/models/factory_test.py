"""Tests for jaxcompress.models.factory: named layer sets, gates, widths, taps and layering."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

import jaxcompress
from jaxcompress.errors import ConfigError
from jaxcompress.models import factory, layer_sets
from jaxcompress.quant import layers as quant_layers

PACKAGE_DIR = os.path.dirname(jaxcompress.__file__)


def imported_modules(path: str) -> set[str]:
  """Every module a source file imports (absolute names, at any nesting level)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


class LayerSetRegistryTest(absltest.TestCase):

  def test_techniques_do_not_import_models_engine_or_methods(self):
    quant_dir = os.path.join(PACKAGE_DIR, "quant")
    forbidden = ("jaxcompress.models", "jaxcompress.train", "jaxcompress.methods", "launch")
    for name in sorted(os.listdir(quant_dir)):
      if name.endswith(".py"):
        bad = [m for m in imported_modules(os.path.join(quant_dir, name))
               if m.startswith(forbidden)]
        self.assertEqual(bad, [], name)

  def test_named_sets_resolve_without_importing_them_first(self):
    # A fresh interpreter: nothing but the factory imported, as a config selecting by name does.
    code = ("from jaxcompress.models import factory\n"
            "import sys\n"
            "assert 'jaxcompress.quant.layers' not in sys.modules\n"
            "print(factory.get('rbnn').conv.__name__, factory.get('binary').conv.func.__name__,"
            " type(factory.get('pams', bits=4)).__name__)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertEqual(out.stdout.split(), ["RBNNConv", "BinaryConv", "PAMSLayers"])

  def test_rbnn_set(self):
    ly = factory.get("rbnn", bn_scale_init=0.5)
    self.assertIs(ly.conv, quant_layers.RBNNConv)
    self.assertIs(ly.act, nn.hard_tanh)
    self.assertEqual(ly.bn_scale_init, 0.5)   # overrides reach the Layers fields
    self.assertIs(ly.first_conv, factory.FLOAT.first_conv)   # the stem stays float
    self.assertIsNone(ly.gate)

  def test_binary_set_quantizers(self):
    ly = layer_sets.binary_layers(input_quantizer=None, kernel_quantizer="ste_sign")
    conv = ly.conv(4, (3, 3))
    dense = ly.dense(2)
    self.assertIsInstance(conv, quant_layers.BinaryConv)
    self.assertIsInstance(dense, quant_layers.BinaryDense)
    self.assertEqual((conv.input_quantizer, conv.kernel_quantizer), (None, "ste_sign"))
    self.assertEqual((dense.input_quantizer, dense.kernel_quantizer), (None, "ste_sign"))
    self.assertIs(factory.get("binary").act, nn.hard_tanh)

  def test_unknown_set_is_config_error(self):
    with self.assertRaisesRegex(ConfigError, "'nope'.*rbnn"):
      factory.get("nope")


class GateTest(absltest.TestCase):

  def test_default_gate_is_identity_without_module(self):
    x = jnp.arange(6.0).reshape(1, 1, 2, 3)
    g = factory.gate(factory.FLOAT, 3, "g")
    self.assertNotIsInstance(g, nn.Module)
    np.testing.assert_array_equal(g(x), x)

  def test_channel_gate_multiplies_last_axis(self):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    mask = rng.randn(5).astype(np.float32)
    ly = factory.FLOAT.replace(gate=factory.ChannelGate)
    gate = factory.gate(ly, 5, "g")
    params = gate.init(jax.random.key(0), x)["params"]
    np.testing.assert_array_equal(params["mask"], np.ones(5))   # a no-op at init
    y = gate.apply({"params": {"mask": mask}}, x)
    np.testing.assert_allclose(y, x * mask[None, None, None, :], rtol=1e-6)

  def test_channel_gate_width_mismatch(self):
    with self.assertRaisesRegex(ValueError, "4 channels, input has 5"):
      factory.ChannelGate(4).init(jax.random.key(0), jnp.zeros((1, 2, 2, 5)))


class WidthsTest(absltest.TestCase):
  defaults = {"a": 8, "b/conv1": 16}

  def test_defaults_and_overrides(self):
    self.assertEqual(factory.resolve_widths(None, self.defaults, "M"), self.defaults)
    self.assertEqual(factory.resolve_widths({"b/conv1": 3}, self.defaults, "M"),
                     {"a": 8, "b/conv1": 3})

  def test_errors_name_the_problem(self):
    with self.assertRaisesRegex(ConfigError, "unknown layer role 'c'.*a, b/conv1"):
      factory.resolve_widths({"c": 3}, self.defaults, "M")
    for bad in (0, -2, 2.5, True):
      with self.assertRaisesRegex(ConfigError, "positive int"):
        factory.resolve_widths({"a": bad}, self.defaults, "M")
    with self.assertRaisesRegex(ConfigError, "must map layer roles"):
      factory.resolve_widths((4, 8), self.defaults, "M")


class _Tapped(nn.Module):
  @nn.compact
  def __call__(self, x):
    tap = factory.tapper(self)
    y = nn.Dense(3, name="dense")(x)
    tap("dense", y)           # a role may share its name with a layer
    tap("twice", y * 2)
    tap("twice", y * 3)       # a second value under one role: the last one wins
    return y + 1


class _Outer(nn.Module):
  @nn.compact
  def __call__(self, x):
    tap = factory.tapper(self)
    y = _Tapped(name="child")(x)
    tap("top", y)
    return y


class TapsTest(absltest.TestCase):

  def test_taps_by_role_and_not_at_init(self):
    x = jnp.arange(8.0).reshape(2, 4)
    model = _Outer()
    variables = model.init(jax.random.key(0), x)
    self.assertEqual(set(variables), {"params"})   # init returns no activations
    self.assertEqual(set(variables["params"]), {"child"})
    y, state = model.apply(variables, x, mutable=[factory.TAPS])
    got = factory.taps(state)
    self.assertEqual(set(got), {"top", "child/dense", "child/twice"})
    w = variables["params"]["child"]["dense"]
    dense = np.asarray(x) @ np.asarray(w["kernel"]) + np.asarray(w["bias"])
    np.testing.assert_allclose(got["child/dense"], dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["child/twice"], dense * 3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["top"], dense + 1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(factory.taps(state[factory.TAPS])["top"], got["top"])
    np.testing.assert_array_equal(y, model.apply(variables, x))


  def test_tap_module_only_when_the_collection_is_mutable(self):
    # Plain calls (and model summaries, which trace `init`) see no `Taps` module at all.
    x = jnp.ones((1, 4))
    model = _Outer()
    variables = model.init(jax.random.key(0), x)
    seen = []

    def interceptor(next_fun, args, kwargs, context):
      seen.append(type(context.module).__name__)
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(interceptor):
      model.apply(variables, x)
    self.assertIn("_Tapped", seen)
    self.assertNotIn("Taps", seen)
    seen.clear()
    with nn.intercept_methods(interceptor):
      model.apply(variables, x, mutable=[factory.TAPS])
    self.assertIn("Taps", seen)


if __name__ == "__main__":
  absltest.main()
