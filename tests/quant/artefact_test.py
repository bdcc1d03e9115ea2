"""Tests for jaxcompress.quant.artefact: write, load in-process and in a jax-only process."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import quant
from jaxcompress.ops import conv as conv_ops


class BinaryNet(nn.Module):
  """Float stem on the fast conv entry point (as `jaxcompress.models` builds it), then every
  1-bit serving path: XNOR convs (a strided one whose BatchNorm is folded, a dilated one), an
  RBNN conv, a binary-weight conv with a float input, an XNOR dense layer; a float head."""

  @nn.compact
  def __call__(self, x, train=False):
    x = conv_ops.Conv(8, (3, 3), name="stem")(x)
    y = quant.BinaryConv(32, (3, 3), strides=2, kernel_quantizer="magnitude_aware_sign",
                         name="b1")(x)
    y = nn.BatchNorm(use_running_average=not train)(y)
    y = quant.BinaryConv(16, (3, 3), padding=((1, 1), (2, 0)), kernel_dilation=(1, 2),
                         use_bias=True, name="b2")(y)
    y = quant.RBNNConv(16, name="r")(y)
    y = quant.BinaryConv(8, (3, 3), input_quantizer=None, name="bw")(y)
    y = quant.BinaryDense(20, name="d")(jnp.mean(y, (1, 2)))
    return nn.Dense(3, name="head")(y)


class FloatNet(nn.Module):
  """The float model that `INT8_RULES` quantizes: two 8-bit convolutions between float layers."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), name="stem")(x)
    x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="c1")(x))
    x = nn.Conv(16, (3, 3), name="c2")(x)
    return nn.Dense(3, name="head")(jnp.mean(x, (1, 2)))


INT8_RULES = (quant.QuantRule(module_path="c1|c2", input_quantizer="absmax",
                              kernel_quantizer="absmax_per_channel", bits=8),)
SHAPE = (2, 9, 9, 3)
MANIFEST_KEYS = {"format", "format_version", "program", "program_bytes", "program_sha256",
                 "inputs", "outputs", "batch_polymorphic", "platforms", "jax_version",
                 "calling_convention_version", "layer_modes", "layers", "sizes", "notes"}


def _perturbed(variables, seed):
  """Non-trivial BatchNorm statistics, as a trained model has (so folding is exercised)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, l: (l + rng.normal(size=l.shape).astype(l.dtype) * 0.5
                    if "batch_stats" in jax.tree_util.keystr(p) else l), variables)


@pytest.fixture(scope="module")
def models():
  """name -> (exported, example input)."""
  x = jax.random.normal(jax.random.key(0), SHAPE)
  binary = BinaryNet()
  variables = _perturbed(binary.init(jax.random.key(1), x), seed=0)
  out = {"binary": (quant.export(variables, binary, x, train=False), x)}
  int8 = quant.quantize(FloatNet(), INT8_RULES, log=None)
  out["int8"] = (quant.export(int8.init(jax.random.key(2), x), int8, x), x)
  return out


@pytest.fixture(scope="module")
def artefacts(models, tmp_path_factory):
  """name -> (artefact directory, manifest) for each model, written once."""
  root = tmp_path_factory.mktemp("artefacts")
  return {name: (str(root / name), quant.write_artefact(exported, str(root / name), x))
          for name, (exported, x) in models.items()}


def assert_same_output(got, want):
  # The same operations on the same values: on CPU bit-identical. Other backends may fuse the
  # baked-in constants differently from serve_fn's arguments, so there only float rounding.
  if jax.default_backend() == "cpu":
    np.testing.assert_array_equal(got, want)
  else:
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_modes_of_the_test_models(models):
  modes = {name: {l.spec.mode for l in exported.layers.values()}
           for name, (exported, _) in models.items()}
  assert modes == {"binary": {"xnor", "binary_weight"}, "int8": {"int"}}
  assert models["binary"][0].folded == (("BatchNorm_0", "b1"),)


@pytest.mark.parametrize("name", ["binary", "int8"])
def test_loaded_artefact_equals_serve_fn(models, artefacts, name):
  exported, x = models[name]
  serve = quant.load_artefact(artefacts[name][0])
  assert_same_output(serve(x), quant.serve_fn(exported)(x))
  x2 = jax.random.normal(jax.random.key(7), SHAPE)  # a new input, not the traced example
  assert_same_output(serve(x2), quant.serve_fn(exported)(x2))


def test_jax_only_process_loads_the_program(artefacts, tmp_path):
  # A fresh interpreter that imports only jax and numpy deserializes serve.stablehlo and runs
  # it. It inherits this process's environment (XLA flags and device count included), so the
  # same XLA kernels run and the outputs are bit-identical to the in-process ones.
  x = np.asarray(jax.random.normal(jax.random.key(3), SHAPE))
  np.save(tmp_path / "x.npy", x)
  code = """
import sys
import jax
import numpy as np
x = np.load("x.npy")
for name, directory in zip(sys.argv[1::2], sys.argv[2::2]):
  with open(directory + "/serve.stablehlo", "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  np.save(name + ".npy", np.asarray(exported.call(x)))
assert "jaxcompress" not in sys.modules, [m for m in sys.modules if m.startswith("jaxcompress")]
"""
  args = [a for name, (directory, _) in artefacts.items() for a in (name, directory)]
  proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name, (directory, _) in artefacts.items():
    want = np.asarray(quant.load_artefact(directory)(x))
    np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), want)


def test_wrong_inputs_name_the_expected_shape(artefacts):
  directory, _ = artefacts["binary"]
  serve = quant.load_artefact(directory)
  with pytest.raises(ValueError, match=re.escape("written for shape (2, 9, 9, 3)")) as err:
    serve(jnp.zeros((3, 9, 9, 3)))
  assert "batch_polymorphic=True" in str(err.value)   # the fix is named
  with pytest.raises(ValueError, match="dtype float64.*dtype float32"):
    serve(np.zeros(SHAPE, np.float64))
  with pytest.raises(ValueError, match=re.escape("takes 1 input array(s) ((2, 9, 9, 3))")):
    serve(jnp.zeros(SHAPE), jnp.zeros(SHAPE))


def test_manifest(models, artefacts):
  for name, (directory, manifest) in artefacts.items():
    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
      assert json.load(f) == manifest
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["format_version"] == 1
    assert manifest["inputs"] == [{"shape": list(SHAPE), "dtype": "float32"}]
    assert manifest["outputs"] == [{"shape": [2, 3], "dtype": "float32"}]
    assert manifest["jax_version"] == jax.__version__
    assert manifest["platforms"] == [jax.default_backend()]
    assert not manifest["batch_polymorphic"]
    assert manifest["program_bytes"] == os.path.getsize(os.path.join(directory, "serve.stablehlo"))
    assert manifest["sizes"] == pytest.approx(quant.export_sizes(models[name][0]))
  binary, int8 = artefacts["binary"][1], artefacts["int8"][1]
  assert binary["layer_modes"] == {"xnor": {"layers": 4, "weight_bits": [1]},
                                   "binary_weight": {"layers": 1, "weight_bits": [1]}}
  assert binary["layers"]["b1"] == {"mode": "xnor", "kind": "conv", "kernel_shape": [3, 3, 8, 32],
                                    "weight_bits": 1, "weight_dtype": "uint32"}
  assert int8["layer_modes"] == {"int": {"layers": 2, "weight_bits": [8]}}
  assert int8["layers"]["c2"]["weight_dtype"] == "int8"


@pytest.mark.parametrize("name", ["binary", "int8"])
def test_batch_polymorphic(models, tmp_path, name):
  exported, x = models[name]
  manifest = quant.write_artefact(exported, str(tmp_path / "art"), x, batch_polymorphic=True)
  assert manifest["inputs"] == [{"shape": ["b", 9, 9, 3], "dtype": "float32"}]
  assert manifest["outputs"] == [{"shape": ["b", 3], "dtype": "float32"}]
  serve = quant.load_artefact(str(tmp_path / "art"))
  for n in (1, 5):
    xn = jax.random.normal(jax.random.key(n), (n,) + SHAPE[1:])
    assert_same_output(serve(xn), quant.serve_fn(exported)(xn))
  with pytest.raises(ValueError, match=re.escape("written for shape (b, 9, 9, 3)")):
    serve(jnp.zeros((2, 8, 9, 3)))


def test_atomic_write_and_replace(models, tmp_path):
  binary, x = models["binary"]
  directory = str(tmp_path / "art")
  quant.write_artefact(binary, directory, x)
  assert sorted(os.listdir(tmp_path)) == ["art"]          # no temporary directory left
  assert sorted(os.listdir(directory)) == ["manifest.json", "serve.stablehlo"]
  (tmp_path / "plain").mkdir()   # the artefact gets a plain directory's permissions
  assert os.stat(directory).st_mode == os.stat(tmp_path / "plain").st_mode
  (tmp_path / "plain").rmdir()
  # Writing over an artefact replaces it.
  int8, _ = models["int8"]
  quant.write_artefact(int8, directory, x)
  assert sorted(os.listdir(tmp_path)) == ["art"]
  serve = quant.load_artefact(directory)
  assert set(serve.manifest["layer_modes"]) == {"int"}
  assert_same_output(serve(x), quant.serve_fn(int8)(x))
  # A write that fails (here while tracing: an input the model cannot take) leaves the previous
  # artefact as it was, no temporary directory, and the convolution setting restored.
  impl = conv_ops.get_conv_impl()
  with pytest.raises(Exception):
    quant.write_artefact(binary, directory, jnp.zeros((2, 9, 9, 5)))
  assert conv_ops.get_conv_impl() == impl
  assert sorted(os.listdir(tmp_path)) == ["art"]
  assert quant.load_artefact(directory).manifest == serve.manifest
  # Any other existing path is refused, not replaced.
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "keep.txt").write_text("data")
  with pytest.raises(FileExistsError, match="not a serving artefact"):
    quant.write_artefact(int8, str(tmp_path / "other"), x)
  assert os.listdir(tmp_path / "other") == ["keep.txt"]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the oneDNN convolution is CPU-only")
def test_onednn_custom_call_is_traced_as_xla_convolution(models, tmp_path, monkeypatch):
  # On one CPU device large float32 convolutions run as oneDNN's custom call, which jax.export
  # refuses to serialize; this test process has 8 devices, so the choice is forced instead.
  exported, x = models["binary"]
  want = quant.serve_fn(exported)(x)
  monkeypatch.setattr(conv_ops, "_onednn_applies", lambda *args: True)
  serve = jax.jit(lambda x: quant.serve_apply(exported, x))
  with pytest.raises(ValueError, match="custom calls"):
    jax.export.export(serve)(jax.ShapeDtypeStruct(SHAPE, jnp.float32))
  quant.write_artefact(exported, str(tmp_path / "art"), x)
  monkeypatch.undo()
  loaded = quant.load_artefact(str(tmp_path / "art"))
  assert "stablehlo.custom_call" not in loaded.exported.mlir_module()
  assert_same_output(loaded(x), want)
