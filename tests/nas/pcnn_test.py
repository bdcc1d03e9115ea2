"""PCNN projection convolution (BNAS's second binarization): values and gradients vs NumPy."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.nas import eval_network, pcnn


def _np_project(c, w):
  a = np.mean(np.abs(c))
  return a * np.sign(w * c[None])


def _data(seed=0, j=2, shape=(3, 3, 2, 4)):
  rng = np.random.default_rng(seed)
  c = rng.normal(scale=0.8, size=shape).astype(np.float32)
  w = rng.uniform(0.2, 2.0, size=(j, *shape)).astype(np.float32)
  w[0, 0, 0, 0, 0] = -1.0  # a negative projection entry flips the sign
  return c, w


def test_projection_values():
  c, w = _data()
  got = np.asarray(pcnn.pcnn_project(jnp.asarray(c), jnp.asarray(w)))
  np.testing.assert_allclose(got, _np_project(c, w), rtol=1e-6)
  # the projection is argmin_{a_i in {a, -a}} |W o C - a_i| (PCNN's P_Omega)
  a = np.mean(np.abs(c))
  cand = np.array([a, -a], np.float32).reshape(2, 1, 1, 1, 1, 1)
  argmin = cand[np.argmin(np.abs(w * c[None] - cand), axis=0), 0, 0, 0, 0, 0]
  np.testing.assert_allclose(got, argmin, rtol=1e-6)


def test_projection_gradient_is_clipped_ste():
  c, w = _data(1)
  g = np.random.default_rng(2).normal(size=w.shape).astype(np.float32)
  gc, gw = jax.grad(lambda c_, w_: jnp.sum(pcnn.pcnn_project(c_, w_) * g),
                    argnums=(0, 1))(jnp.asarray(c), jnp.asarray(w))
  a = np.mean(np.abs(c))
  want = np.sum(g * a * w * (np.abs(w * c[None]) <= 1.0), axis=0)
  np.testing.assert_allclose(np.asarray(gc), want, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(gw), 0.0)


def test_projection_loss_value_and_gradients():
  c, w = _data(3)
  c_hat = _np_project(c, w)
  delta = np.random.default_rng(4).normal(size=w.shape).astype(np.float32)
  lam, eta = 0.3, 0.5
  loss, (gc, gw) = jax.value_and_grad(
      lambda c_, w_: pcnn.pcnn_projection_loss(c_, w_, c_hat, delta, lam, eta),
      argnums=(0, 1))(jnp.asarray(c), jnp.asarray(w))
  r = c_hat - w * (c[None] + eta * delta)
  np.testing.assert_allclose(float(loss), 0.5 * lam * np.sum(r ** 2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gc), -lam * np.sum(w * r, axis=0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gw), -lam * (c[None] + eta * delta) * r, rtol=1e-4,
                             atol=1e-6)


def test_pcnn_conv_forward_and_delta():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 2))
  conv = pcnn.PCNNConv(4, (3, 3), padding=1, input_quantizer="ste_sign", num_projections=2)
  v = conv.init(jax.random.key(1), x)
  assert set(v) == {"params", "perturbations"}
  c = np.asarray(v["params"]["kernel"])
  w = np.asarray(v["params"]["projection"])
  kernel = _np_project(c, w).mean(0)
  want = jax.lax.conv_general_dilated(jnp.sign(x), jnp.asarray(kernel), (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(conv.apply({"params": v["params"]}, x)),
                             np.asarray(want), rtol=1e-5, atol=1e-5)
  # delta = dL/dC_hat_j: with the kernel mean_j C_hat_j, it is dL/dkernel / J.
  t = jax.random.normal(jax.random.key(2), want.shape)
  delta = jax.grad(lambda p: jnp.sum(conv.apply({"params": v["params"], "perturbations": p}, x)
                                     * t))(v["perturbations"])["chat"]
  gk = jax.grad(lambda k: jnp.sum(jax.lax.conv_general_dilated(
      jnp.sign(x), k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
                                  * t))(jnp.asarray(kernel))
  np.testing.assert_allclose(np.asarray(delta), np.broadcast_to(np.asarray(gk) / 2, w.shape),
                             rtol=1e-5, atol=1e-6)


def test_projection_loss_tree_sums_every_pcnn_layer():
  net = eval_network.EvalNetwork(eval_network.get_genotype("DARTS_V2"), C=4, num_cells=3,
                                 op_set="pcnn", auxiliary=False)
  x = jnp.ones((2, 8, 8, 1))
  v = net.init(jax.random.key(0), x)
  deltas = jax.tree.map(jnp.ones_like, v["perturbations"])
  got = float(pcnn.projection_loss_tree(v["params"], deltas, 0.1, 1.0))
  want, n_layers = 0.0, 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(v["params"])[0]:
    keys = [k.key for k in path]
    if keys[-1] != "projection":
      continue
    n_layers += 1
    parent = v["params"]
    for k in keys[:-1]:
      parent = parent[k]
    c, w = np.asarray(parent["kernel"]), np.asarray(leaf)
    r = _np_project(c, w) - w * (c[None] + 1.0)
    want += 0.05 * np.sum(r ** 2)
  assert n_layers > 0
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_pcnn_conv_depthwise_dilated_strided_matches_reference():
  # The DARTS dil_conv geometry: depthwise, dilation 2, stride 2, padding 2, real activations.
  x = jax.random.normal(jax.random.key(4), (2, 9, 9, 3))
  conv = pcnn.PCNNConv(3, (3, 3), strides=2, padding=2, kernel_dilation=2, feature_group_count=3,
                       input_quantizer=None)
  v = conv.init(jax.random.key(5), x)
  c, w = np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["projection"])
  assert c.shape == (3, 3, 1, 3)
  want = jax.lax.conv_general_dilated(x, jnp.asarray(_np_project(c, w).mean(0)), (2, 2),
                                      ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=3)
  np.testing.assert_allclose(np.asarray(conv.apply({"params": v["params"]}, x)),
                             np.asarray(want), rtol=1e-5, atol=1e-5)


def test_pcnn_conv_rejects_a_kernel_quantizer():
  with pytest.raises(ValueError, match="projections"):
    pcnn.PCNNConv(4, kernel_quantizer="ste_sign").init(jax.random.key(0), jnp.ones((1, 4, 4, 2)))


def test_summary_counts_xnor_and_pcnn_convs_as_binary():
  import jaxcompress  # pylint: disable=g-import-not-at-top
  from jaxcompress import quant  # pylint: disable=g-import-not-at-top
  x = jnp.zeros((1, 8, 8, 4))
  xnor = functools.partial(quant.BinaryConv, 8, (3, 3), padding=1, kernel_quantizer="xnor_sign")
  for conv, input_bits in ((xnor(input_quantizer="ste_sign"), 1),
                           (xnor(input_quantizer=None), 32),
                           (pcnn.PCNNConv(8, (3, 3), padding=1), 1),
                           (pcnn.PCNNConv(8, (3, 3), padding=1, input_quantizer=None), 32)):
    s = jaxcompress.summary(conv, x)
    (row,) = [l for l in s.layers if l.macs]
    assert (row.weight_bits, row.input_bits) == (1, input_bits)
    assert s.total_params >= 288 and row.macs == 8 * 8 * 3 * 3 * 4 * 8
    if input_bits == 1:
      assert row.binary_macs == row.macs
    else:
      assert row.binary_macs == 0 and row.float_macs == row.macs
