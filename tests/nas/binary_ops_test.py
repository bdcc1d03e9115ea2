"""BNAS op sets: the DARTS op classes on XNOR / PCNN convolutions, values vs NumPy references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.errors import ConfigError
from jaxcompress.nas import binary_ops, pcnn, space

NHWC = ("NHWC", "HWIO", "NHWC")


def _np_xnor_weight(w):
  """XNOR-Net (arXiv 1603.05279) eq. 4-7: a * sign(W), a = mean |W| per output filter."""
  return np.mean(np.abs(w), axis=(0, 1, 2)) * np.where(w < 0, -1.0, 1.0)


def _np_sign(x):
  return np.where(x < 0, -1.0, 1.0)  # larq's sign(0) = +1


@pytest.mark.parametrize("one_bit", [False, True])
def test_xnor_conv_matches_reference_and_gradient_mask(one_bit):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, 6, 6, 3)) * 1.5
  conv = binary_ops.layers_for("binary", one_bit).conv(4, (3, 3), padding=1)
  v = conv.init(kw, x)
  w = np.asarray(v["params"]["kernel"])
  xb = _np_sign(np.asarray(x)) if one_bit else np.asarray(x)
  ref = jax.lax.conv_general_dilated(jnp.asarray(xb, jnp.float32),
                                     jnp.asarray(_np_xnor_weight(w), jnp.float32), (1, 1),
                                     ((1, 1), (1, 1)), dimension_numbers=NHWC)
  np.testing.assert_allclose(conv.apply(v, x), ref, rtol=1e-5, atol=1e-5)
  gx = np.asarray(jax.grad(lambda u: conv.apply(v, u).sum())(x))
  outside = np.abs(np.asarray(x)) > 1
  if one_bit:  # clipped STE on the signed input
    assert np.all(gx[outside] == 0) and np.any(gx[~outside] != 0)
  else:        # real activations: the gradient is the plain conv's
    assert np.any(gx[outside] != 0)


@pytest.mark.parametrize("op_set", ["binary", "pcnn"])
@pytest.mark.parametrize("one_bit", [False, True])
def test_binary_dil_conv_is_the_darts_op_on_binary_convs(op_set, one_bit):
  # DARTS DilConv (dil_conv_3x3: depthwise 3x3, dilation 2, padding 2, stride 2, then 1x1, BN)
  # with the op set's convs; ReLU before the convs unless the activations are binary.
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 4)) * 1.2
  op = binary_ops.ops_for(op_set, one_bit)["dil_conv_3x3"](6, 2, True)
  assert type(op) is space.DilConv  # pylint: disable=unidiomatic-typecheck
  v = op.init(jax.random.key(2), x, train=False)
  p = v["params"]
  conv_names = sorted(k for k in p if k != "BatchNorm_0")
  assert conv_names == (["BinaryConv_0", "BinaryConv_1"] if op_set == "binary" else
                        ["PCNNConv_0", "PCNNConv_1"])

  def weight(name):
    c = np.asarray(p[name]["kernel"])
    if op_set == "binary":
      return _np_xnor_weight(c)
    w = np.asarray(p[name]["projection"])
    return (np.mean(np.abs(c)) * np.sign(w * c[None])).mean(0)

  h = np.asarray(x) if one_bit else np.maximum(np.asarray(x), 0)
  h = _np_sign(h) if one_bit else h
  h = jax.lax.conv_general_dilated(jnp.asarray(h, jnp.float32), jnp.asarray(weight(conv_names[0])),
                                   (2, 2), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                   dimension_numbers=NHWC, feature_group_count=4)
  h = np.asarray(h)
  # +-a taps can cancel exactly, and the sign of such a sum depends on the summation order:
  # positions where the 1x1 conv reads one are left out of the 1-bit comparison.
  keep = np.all(np.abs(h) > 1e-4, axis=-1) if one_bit else np.ones(h.shape[:-1], bool)
  assert keep.mean() > 0.5
  h = _np_sign(h) if one_bit else h
  h = jax.lax.conv_general_dilated(jnp.asarray(h, jnp.float32), jnp.asarray(weight(conv_names[1])),
                                   (1, 1), "VALID", dimension_numbers=NHWC)
  want = np.asarray(h) / np.sqrt(1.0 + 1e-5)  # inference BN at its initial statistics
  got = np.asarray(op.apply(v, x, train=False))
  np.testing.assert_allclose(got[keep], want[keep], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op_set", binary_ops.OP_SETS)
@pytest.mark.parametrize("one_bit", [False, True])
def test_op_sets_share_the_darts_classes_and_shapes(op_set, one_bit):
  ops = binary_ops.ops_for(op_set, one_bit)
  assert set(ops) >= set(space.PRIMITIVES)
  x = jnp.ones((2, 8, 8, 4)).at[0, 0, 0, 0].set(-1.0)
  for name in ("sep_conv_3x3", "dil_conv_5x5", "skip_connect", "max_pool_3x3", "none"):
    for stride in (1, 2):
      op = ops[name](4, stride, False)
      assert type(op) is type(space.OPS[name](4, stride, False))  # pylint: disable=unidiomatic-typecheck
      v = op.init(jax.random.key(0), x, train=False)
      y = op.apply(v, x, train=False)
      assert y.shape == (2, 8 // stride, 8 // stride, 4), (name, stride)
  assert binary_ops.ops_for(op_set, one_bit) is ops  # built once per op set


def test_layers_for_each_op_set():
  assert binary_ops.ops_for("darts") is space.OPS
  x = jnp.linspace(-2.0, 2.0, 9)
  for op_set in ("binary", "pcnn"):
    real, one_bit = binary_ops.layers_for(op_set, False), binary_ops.layers_for(op_set, True)
    np.testing.assert_array_equal(real.act(x), np.maximum(np.asarray(x), 0))   # ReLU kept
    np.testing.assert_array_equal(one_bit.act(x), np.asarray(x))               # ReLU dropped
    assert real.conv(4).input_quantizer is None
    assert one_bit.conv(4).input_quantizer == "ste_sign"
  assert binary_ops.layers_for("binary").conv(4).kernel_quantizer == "xnor_sign"
  assert isinstance(binary_ops.layers_for("pcnn").conv(4), pcnn.PCNNConv)
  with pytest.raises(ConfigError, match="op_set"):
    binary_ops.layers_for("ternary")
  with pytest.raises(ConfigError, match="op_set"):
    binary_ops.ops_for("ternary")
