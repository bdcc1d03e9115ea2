"""Tests for jaxcompress.nas.supernet: channel shuffle, mixed ops, PC-DARTS partial channels."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.nas import supernet


def _torch_style_shuffle(x_nhwc, groups):
  """PC-DARTS channel_shuffle transcribed on NCHW: view (N, g, C/g, H, W), transpose(1, 2)."""
  x = np.transpose(x_nhwc, (0, 3, 1, 2))
  n, c, h, w = x.shape
  x = x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
  return np.transpose(x, (0, 2, 3, 1))


# NumPy references for the DARTS ops (quark0/darts cnn/operations.py), NHWC, float64.
_BN_EPS = 1e-5  # nn.BatchNorm2d default


def _np_batch_norm(y, train):
  """Affine-free BN: batch statistics in training, initial running stats (0, 1) otherwise."""
  if not train:
    return y / np.sqrt(1.0 + _BN_EPS)
  mean = y.mean(axis=(0, 1, 2))
  var = y.var(axis=(0, 1, 2))
  return (y - mean) / np.sqrt(var + _BN_EPS)


def _np_conv(x, k, stride=1, pad=0, dil=1, depthwise=False):
  """Cross-correlation with zero padding; k is (kh, kw, c_in or 1, c_out) as in Flax."""
  n, h, w, _ = x.shape
  kh, kw = k.shape[:2]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
  wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
  out = np.zeros((n, ho, wo, k.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                 j * dil: j * dil + stride * (wo - 1) + 1: stride]
      out += patch * k[i, j, 0] if depthwise else patch @ k[i, j]
  return out


def _np_pool(x, kind, stride):
  """3x3 pooling, padding 1; max pads with -inf, avg excludes padded cells."""
  n, h, w, c = x.shape
  fill = -np.inf if kind == "max" else 0.0
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
  ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  out = np.zeros((n, ho, wo, c))
  for a in range(ho):
    for b in range(wo):
      win = xp[:, a * stride: a * stride + 3, b * stride: b * stride + 3]
      if kind == "max":
        out[:, a, b] = win.max(axis=(1, 2))
      else:
        cnt = ones[:, a * stride: a * stride + 3, b * stride: b * stride + 3].sum()
        out[:, a, b] = win.sum(axis=(1, 2)) / cnt
  return out


def _np_dil_conv(x, p, k, stride, pad, dil, train):
  """DilConv: ReLU -> depthwise k x k (dilation, stride) -> 1x1 conv -> BN."""
  y = _np_conv(np.maximum(x, 0), p["Conv_0"]["kernel"], stride, pad, dil, depthwise=True)
  return _np_batch_norm(_np_conv(y, p["Conv_1"]["kernel"]), train)


def _np_sep_conv(x, p, k, stride, pad, train):
  """SepConv: DilConv(stride) then DilConv(1), both with dilation 1."""
  y = _np_dil_conv(x, p["DilConv_0"], k, stride, pad, 1, train)
  return _np_dil_conv(y, p["DilConv_1"], k, 1, pad, 1, train)


def _np_factorized_reduce(x, p, train):
  """skip_connect at stride 2: BN(concat[conv1(relu x), conv2(relu x shifted by one pixel)])."""
  r = np.maximum(x, 0)
  a = _np_conv(r, p["Conv_0"]["kernel"], 2)
  b = _np_conv(r[:, 1:, 1:], p["Conv_1"]["kernel"], 2)
  return _np_batch_norm(np.concatenate([a, b], axis=-1), train)


class ChannelShuffleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((4, 16), (2, 6), (3, 12), (1, 5))
  def test_matches_torch_view_transpose(self, groups, c):
    x = np.random.default_rng(0).normal(size=(2, 3, 2, c)).astype(np.float32)
    fn = self.variant(lambda v: supernet.channel_shuffle(v, groups))
    np.testing.assert_array_equal(fn(jnp.asarray(x)), _torch_style_shuffle(x, groups))

  def test_permutation_formula(self):
    x = jnp.arange(12.0).reshape(1, 1, 1, 12)
    # out[j * g + i] = in[i * (C // g) + j] with g = 4, C // g = 3.
    np.testing.assert_array_equal(supernet.channel_shuffle(x, 4)[0, 0, 0],
                                  [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])

  def test_gradient_is_inverse_permutation(self):
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)
    w = np.arange(8.0).reshape(1, 1, 1, 8) + 1
    g = jax.grad(lambda v: (supernet.channel_shuffle(v, 2) * w).sum())(x)
    # The inverse of a g-group shuffle is the (C / g)-group shuffle.
    np.testing.assert_array_equal(g, _torch_style_shuffle(w, 4))

  def test_bad_groups(self):
    with self.assertRaises(ValueError):
      supernet.channel_shuffle(jnp.zeros((1, 1, 1, 6)), 4)


class EdgeNormalizationTest(absltest.TestCase):

  def test_node_groups_sum_to_one(self):
    b = jax.random.normal(jax.random.key(0), (14,))
    w = supernet.edge_normalization(b)
    start = 0
    for n in (2, 3, 4, 5):
      np.testing.assert_allclose(w[start:start + n].sum(), 1.0, rtol=1e-6)
      np.testing.assert_allclose(w[start:start + n], jax.nn.softmax(b[start:start + n]),
                                 rtol=1e-6)
      start += n


class MixedOpTest(parameterized.TestCase):

  @parameterized.parameters(1, 2)
  def test_pc_mixed_op_shapes_and_bypass(self, stride):
    c, k = 8, 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    # A cheap subset of the ops keeps the test fast; the full list is covered in space_test.
    op = supernet.PCMixedOp(c, stride, k=k, primitives=("none", "max_pool_3x3", "skip_connect"))
    w = jnp.array([1.0, 0.0, 0.0])  # only `none`: the op branch is zero
    variables = op.init(jax.random.key(1), x, w, train=True)
    y, _ = op.apply(variables, x, w, train=True, mutable=["batch_stats"])
    self.assertEqual(y.shape, (2, 4 // stride, 4 // stride, c))
    # Undo the shuffle: the first C/k channels are the (zero) op output, the rest the bypass.
    unshuffled = supernet.channel_shuffle(y, c // k)
    np.testing.assert_array_equal(unshuffled[..., : c // k], 0.0)
    bypass = x[..., c // k:]
    if stride == 2:
      bypass = bypass.reshape(2, 2, 2, 2, 2, c - c // k).max(axis=(2, 4))
    np.testing.assert_allclose(unshuffled[..., c // k:], bypass, rtol=1e-6)

  def test_mixed_op_with_only_parameter_free_ops_selected(self):
    c = 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    op = supernet.MixedOp(c, 1, primitives=("none", "avg_pool_3x3", "skip_connect",
                                            "dil_conv_3x3"))
    w = jnp.array([0.5, 0.0, 0.25, 0.0])
    variables = op.init(jax.random.key(1), x, w)
    y = op.apply(variables, x, w)
    np.testing.assert_allclose(y, 0.25 * x, rtol=1e-6)
    # Search-net ops are affine-free: only the dilated conv has parameters.
    self.assertEqual(set(variables["params"]), {"DilConv_0"})

  @parameterized.parameters((1, False), (2, True))
  def test_mixed_op_is_weighted_sum_of_ops_with_parameters(self, stride, train):
    """sum_k w_k op_k(x) (DARTS arXiv 1806.09055 Eq. 1) with every weight non-zero.

    Each op_k is recomputed in NumPy from the mixed op's own parameters (model_search.MixedOp in
    quark0/darts: pools are followed by an affine-free BN in the search network).
    """
    c = 4
    prims = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "dil_conv_3x3")
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, c))
    # Distinct non-zero weights (a softmax over random logits, as in the search).
    w = jax.nn.softmax(jax.random.normal(jax.random.key(2), (len(prims),)))
    op = supernet.MixedOp(c, stride, primitives=prims)
    variables = op.init(jax.random.key(1), x, w, train=train)
    if train:
      y, _ = op.apply(variables, x, w, train=True, mutable=["batch_stats"])
    else:
      y = op.apply(variables, x, w, train=False)
    p = jax.tree.map(np.asarray, variables["params"])
    xn = np.asarray(x, np.float64)
    s = stride
    bn = lambda v: _np_batch_norm(v, train)
    refs = {
        "none": np.zeros_like(xn[:, ::s, ::s]),
        "max_pool_3x3": bn(_np_pool(xn, "max", s)),
        "avg_pool_3x3": bn(_np_pool(xn, "avg", s)),
        "skip_connect": xn if s == 1 else _np_factorized_reduce(xn, p["FactorizedReduce_0"],
                                                                train),
        "sep_conv_3x3": _np_sep_conv(xn, p["SepConv_0"], 3, s, 1, train),
        "dil_conv_3x3": _np_dil_conv(xn, p["DilConv_0"], 3, s, 2, 2, train),
    }
    # Every op with parameters contributes: its output is not ~0 and its weight is not 0.
    expected_params = {"SepConv_0", "DilConv_0"}
    if s == 2:
      expected_params.add("FactorizedReduce_0")
    self.assertEqual(set(p), expected_params)
    for name in ("sep_conv_3x3", "dil_conv_3x3") + (("skip_connect",) if s == 2 else ()):
      self.assertGreater(np.abs(refs[name]).max(), 1e-2, name)
    self.assertGreater(float(jnp.min(w)), 0.03)
    expected = sum(float(w[k]) * refs[name] for k, name in enumerate(prims))
    self.assertEqual(y.shape, expected.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # The weights matter: moving weight between two parameterised ops changes the output.
    w2 = w.at[4].add(0.1).at[5].add(-0.1)
    y2 = op.apply(variables, x, w2, train=train, mutable=["batch_stats"] if train else False)
    y2 = y2[0] if train else y2
    np.testing.assert_allclose(
        y2, expected + 0.1 * (refs["sep_conv_3x3"] - refs["dil_conv_3x3"]), rtol=1e-4, atol=1e-5)

  def test_sampled_op_runs_selected_branch_without_recompiling(self):
    c = 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    prims = ("max_pool_3x3", "skip_connect", "dil_conv_3x3")
    op = supernet.SampledOp(c, 1, primitives=prims)
    variables = op.init(jax.random.key(1), x, 0)
    self.assertIn("ops_2", variables["params"])  # every branch owns its weights
    traces = {"n": 0}

    @jax.jit
    def run(v, idx):
      traces["n"] += 1
      return op.apply(v, x, idx, train=True, mutable=["batch_stats"])[0]

    np.testing.assert_allclose(run(variables, 1), x, rtol=1e-6)
    pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(run(variables, 0), pooled, rtol=1e-6)
    self.assertEqual(run(variables, 2).shape, x.shape)
    self.assertEqual(traces["n"], 1)


if __name__ == "__main__":
  absltest.main()
