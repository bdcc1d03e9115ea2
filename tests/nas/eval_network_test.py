"""DARTS evaluation network: published parameter counts, structure, drop path, aux head, genotypes."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.nas import eval_network as en
from jaxcompress.nas import genotype as genotype_lib


def _param_counts(net, shape=(1, 32, 32, 3)):
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(shape)))
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  total = sum(int(np.prod(leaf.shape)) for _, leaf in flat)
  no_aux = sum(int(np.prod(leaf.shape)) for p, leaf in flat
               if "auxiliary" not in jax.tree_util.keystr(p))
  return total, no_aux, shapes


@pytest.mark.parametrize("name,expected", [
    # `param size` printed by quark0/darts train.py (utils.count_parameters_in_MB excludes the
    # auxiliary head): DARTS_V2 3.349342 MB; PC-DARTS train.py: 3.634678 MB (paper: 3.6 M).
    ("DARTS_V2", 3_349_342), ("PC_DARTS", 3_634_678)])
def test_published_parameter_counts(name, expected):
  _, no_aux, _ = _param_counts(en.EvalNetwork(en.get_genotype(name), C=36, num_cells=20))
  assert no_aux == expected


def test_structure_reductions_preprocessing_and_aux_head():
  net = en.EvalNetwork(en.get_genotype("DARTS_V2"), C=4, num_cells=6)
  _, _, shapes = _param_counts(net, (1, 16, 16, 3))
  p = shapes["params"]
  # reductions at 6 // 3 = 2 and 2 * 6 // 3 = 4: the next cell's c_{k-2} is FactorizedReduce-d
  # (two 1x1 convs), the others use ReLU-1x1 conv-BN (one conv).
  for i in range(6):
    pre = p[f"cell_{i}"]["preprocess0"]
    assert len([k for k in pre if k.startswith("Conv")]) == (2 if i in (3, 5) else 1), i
  assert "auxiliary_head" in p
  # channels: C = 4 doubled at cells 2 and 4; cell output = 4 nodes x C.
  assert p["cell_1"]["preprocess1"]["Conv_0"]["kernel"].shape[-1] == 4
  assert p["cell_2"]["preprocess1"]["Conv_0"]["kernel"].shape[-1] == 8
  assert p["cell_5"]["preprocess1"]["Conv_0"]["kernel"].shape[-1] == 16
  assert p["classifier"]["kernel"].shape == (64, 10)
  x = jnp.ones((2, 16, 16, 3))
  v = net.init(jax.random.key(0), x)
  logits, aux = net.apply(v, x, train=False, with_aux=True)
  assert logits.shape == (2, 10) and aux is None
  (logits, aux), _ = net.apply(v, x, train=True, drop_prob=0.0, with_aux=True,
                               mutable=["batch_stats"], rngs={"drop_path": jax.random.key(1)})
  assert aux.shape == (2, 10)


def test_drop_path_matches_numpy_reference():
  x = jax.random.normal(jax.random.key(0), (64, 3, 3, 2))
  rng = jax.random.key(5)
  y = np.asarray(en.drop_path(x, 0.3, rng))
  keep_mask = np.asarray(jax.random.bernoulli(rng, 0.7, (64, 1, 1, 1)), np.float32)
  np.testing.assert_allclose(y, np.asarray(x) / 0.7 * keep_mask, rtol=1e-6)
  assert 0 < keep_mask.sum() < 64
  np.testing.assert_array_equal(np.asarray(en.drop_path(x, 0.0, rng)), np.asarray(x))


@pytest.mark.parametrize("eps, hw", [(1e-5, 8), (1e-3, 8), (1e-5, 2)])
def test_auxiliary_head_matches_torch_auxiliary_head_cifar(eps, hw):
  # DARTS `AuxiliaryHeadCIFAR` (ABanditNAS: the same head, BN epsilon 1e-3), training-mode BN.
  # A 2x2 map (digits) skips the 5x5 pool (CHOICE).
  import torch  # pylint: disable=g-import-not-at-top
  # Small activations: batch variances near the epsilon, so a wrong epsilon shows.
  x = np.asarray(jax.random.normal(jax.random.key(0), (3, hw, hw, 4))) * 0.02
  head = en.AuxiliaryHead(5, bn_epsilon=eps)
  v = head.init(jax.random.key(1), jnp.asarray(x), train=False)
  got, _ = head.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
  p = v["params"]
  conv1 = torch.nn.Conv2d(4, 128, 1, bias=False)
  conv2 = torch.nn.Conv2d(128, 768, 2, bias=False)
  fc = torch.nn.Linear(768, 5)
  with torch.no_grad():
    conv1.weight.copy_(torch.from_numpy(np.asarray(p["Conv_0"]["kernel"]).transpose(3, 2, 0, 1)))
    conv2.weight.copy_(torch.from_numpy(np.asarray(p["Conv_1"]["kernel"]).transpose(3, 2, 0, 1)))
    fc.weight.copy_(torch.from_numpy(np.asarray(p["Dense_0"]["kernel"]).T))
    fc.bias.copy_(torch.from_numpy(np.asarray(p["Dense_0"]["bias"])))
  pool = [torch.nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)] if hw >= 5 else []
  features = torch.nn.Sequential(torch.nn.ReLU(), *pool, conv1, torch.nn.BatchNorm2d(128, eps),
                                 torch.nn.ReLU(), conv2, torch.nn.BatchNorm2d(768, eps),
                                 torch.nn.ReLU()).train()
  with torch.no_grad():
    y = features(torch.from_numpy(x).permute(0, 3, 1, 2))
    want = fc(y.reshape(y.shape[0], -1)).numpy()
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def _cell_outputs(edges, drop_prob, train=True):
  cell = en.EvalCell(edges, (2, 3), 4)
  s = jax.random.normal(jax.random.key(0), (8, 6, 6, 4))
  v = cell.init({"params": jax.random.key(1), "drop_path": jax.random.key(2)}, s, s)
  if not train:
    return cell.apply(v, s, s, train=False, drop_prob=drop_prob)
  return cell.apply(v, s, s, train=True, drop_prob=drop_prob, mutable=["batch_stats"],
                    rngs={"drop_path": jax.random.key(3)})[0]


def test_drop_path_skips_identity_and_eval():
  identity_cell = (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2),
                   ("skip_connect", 0))
  np.testing.assert_allclose(_cell_outputs(identity_cell, 0.9), _cell_outputs(identity_cell, 0.0))
  conv_cell = (("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
               ("sep_conv_3x3", 0))
  assert not np.allclose(_cell_outputs(conv_cell, 0.9), _cell_outputs(conv_cell, 0.0))
  np.testing.assert_allclose(_cell_outputs(conv_cell, 0.9, train=False),
                             _cell_outputs(conv_cell, 0.0, train=False))


def test_get_genotype_sources(tmp_path):
  g = genotype_lib.PC_DARTS
  path = tmp_path / "genotype.json"
  path.write_text(genotype_lib.to_json(g))
  report = tmp_path / "final_report.json"
  report.write_text(json.dumps({"genotype": json.loads(genotype_lib.to_json(g))}))
  expected = en.get_genotype(g)
  for spec in ("PC_DARTS", str(path), str(tmp_path), str(report), genotype_lib.to_json(g),
               json.loads(genotype_lib.to_json(g))):
    assert en.get_genotype(spec) == expected
  hash(expected)  # usable as a linen attribute
  with pytest.raises(ConfigError, match="digits_search"):
    en.get_genotype(str(tmp_path / "missing" / "genotype.json"))
  with pytest.raises(ConfigError, match="published name"):
    en.get_genotype(3)


def test_registry_builds_float_and_binary_networks():
  x = jnp.ones((2, 8, 8, 1))
  for op_set in ("darts", "binary"):
    net = models.build("darts_eval", num_classes=10, genotype="DARTS_V2", C=4, num_cells=3,
                       op_set=op_set)
    v = net.init(jax.random.key(0), x)
    assert net.apply(v, x, train=False).shape == (2, 10)
  binary = models.build("darts_eval", genotype="PC_DARTS", C=4, num_cells=3, op_set="binary")
  shapes = jax.eval_shape(lambda: binary.init(jax.random.key(0), x))
  # sep_conv in the binary cell is the DARTS SepConv on XNOR convs (BinaryConv, xnor_sign).
  paths = {tuple(k.key for k in path) for path, _ in
           jax.tree_util.tree_flatten_with_path(shapes["params"]["cell_0"])[0]}
  assert ("DilConv_0", "BinaryConv_0", "kernel") in {p[-3:] for p in paths if "SepConv" in p[0]}
  assert not any("Conv_0" in p and "preprocess" not in p[0] for p in paths)  # no float conv op
  with pytest.raises(ConfigError, match="op_set"):
    models.build("darts_eval", layers="rbnn")
