"""`prune.materialize` on the ImageNet bottleneck ResNet: the blocks' inner channels.

The reference is the unpruned network gated by `factory.ChannelGate` after bn1 and bn2 of every
block with binary masks; the cut network must compute the same logits with fewer parameters and
MACs, and its widths must be the kept counts.
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import prune
from jaxcompress.errors import ConfigError
from jaxcompress.models import resnet_bottleneck
from jaxcompress.summary import summary

sys.path.insert(0, os.path.dirname(__file__))
from materialize_helpers import (  # noqa: E402  (a sibling module of the tests)
  binary,
  gated,
  random_masks,
  random_variables,
  with_masks,
)


def _model(**kwargs):
  return resnet_bottleneck.BottleneckResNet(num_classes=7, stage_sizes=(1, 2, 1, 1), **kwargs)


def test_cut_bottlenecks_equal_the_binary_masked_network():
  model = _model()
  x = jax.random.normal(jax.random.key(0), (2, 64, 48, 3))
  variables = random_variables(gated(model), x, seed=1)
  masks = random_masks(np.random.default_rng(2), variables)
  assert set(masks) == {f"{b}/gate{i}" for b in ("stage1_block0", "stage2_block0",
                                                 "stage2_block1", "stage3_block0",
                                                 "stage4_block0") for i in (1, 2)}
  masks["stage2_block1/gate2"][:] = -1.0  # nothing kept: one zero channel stays
  small, small_vars = prune.materialize(model, variables, masks, example_input=x)
  want = {f"{g.split('/')[0]}/conv{g[-1]}": max(int((m > 0).sum()), 1) for g, m in masks.items()}
  assert small.layer_widths() == want
  ref = gated(model).apply(with_masks(variables, binary(masks)), x, train=False)
  out = small.apply(small_vars, x, train=False)
  assert float(jnp.abs(ref).max()) > 0.1
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  full, cut = (summary(m, x[:1], train=False) for m in (model, small))
  assert cut.total_params == sum(np.size(v) for v in jax.tree.leaves(small_vars["params"]))
  assert cut.total_macs < full.total_macs and cut.total_params < full.total_params
  # The residual streams keep their widths: conv3 writes 4 * planes channels.
  assert small_vars["params"]["stage1_block0"]["conv3"]["kernel"].shape[-1] == 256


def test_widths_and_grouped_bottlenecks():
  model = _model(widths={"stage1_block0/conv1": 5})
  assert model.layer_widths()["stage1_block0/conv1"] == 5
  assert model.layer_widths()["stage1_block0/conv2"] == 64
  with pytest.raises(ConfigError, match="unknown layer role"):
    _model(widths={"stage9_block0/conv1": 5}).layer_widths()
  with pytest.raises(ConfigError, match="ResNeXt"):
    _model(groups=32, width_per_group=4).prune_spec()
