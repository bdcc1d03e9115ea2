"""PCNN projection convolutions: BNAS's second binarisation of the DARTS conv ops.

Gu et al., "Projection Convolutional Neural Networks for 1-bit CNNs via Discrete Back
Propagation" (arXiv 1811.12755, AAAI 2019); PCNN-BNAS in BNAS (arXiv 1911.10862). Each real
kernel C (HWIO) has J learned projection matrices W_j of its shape and is projected onto
Omega = {a, -a}, a = mean |C| over the layer:
  C_hat_j = P_Omega(W_j, C) = argmin_{a_i in Omega} |W_j o C - a_i| = a * sign(W_j o C)
(o the Hadamard product); the convolution uses mean_j C_hat_j (= C_hat_1 for J = 1; CHOICE for
J > 1: averaging keeps the layer's width, the paper's J kernels per real kernel are summed up to
the 1/J factor). Backward (DBPP): dL_S/dC = a * W * 1[|W o C| <= 1] * dL_S/dC_hat (clipped STE);
W learns only from the projection loss
  L_P = (lambda / 2) sum_{l, j} || C_hat_j - W_j o (C + eta * delta_j) ||^2,
  delta_j = dL_S / dC_hat_j (same step, a constant),
(`pcnn_projection_loss`; C_hat is a constant there too). `PCNNConv` exposes C_hat as a flax
perturbation ("chat"), so a training step gets delta from `jax.grad` w.r.t. the "perturbations"
collection, and `projection_loss_tree` sums L_P over every PCNN layer of a parameter tree.
Defaults (CHOICE, the papers give none): W_j initialised to 1 (C_hat = a sign(C) at the start),
lambda = 1e-4, eta = 1.

`PCNNConv` is a `quant.BinaryConv` whose kernel is binarised by the projections, so it fills the
`conv` slot of a `models.factory.Layers` and the DARTS ops of `nas.space` run on it unchanged
(`nas.binary_ops.layers_for("pcnn")`).

Example:
  >>> conv = PCNNConv(8, (3, 3), padding=1, num_projections=2)
  >>> v = conv.init(jax.random.key(0), jnp.ones((2, 8, 8, 4)))   # params, perturbations
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.quant import layers as quant_layers


@jax.custom_vjp
def _pcnn_sign(w: jax.Array, c: jax.Array, a: jax.Array) -> jax.Array:
  return a * jnp.sign(w * c)


def _pcnn_sign_fwd(w, c, a):
  return _pcnn_sign(w, c, a), (w, c, a)


def _pcnn_sign_bwd(res, g):
  w, c, a = res
  # DBPP: the kernel gradient passes straight through the projection (clipped where
  # |W o C| > 1); W and a learn nothing from L_S (W from L_P only, a is a statistic of C).
  gc = jnp.sum(g * a * w * (jnp.abs(w * c) <= 1.0), axis=0, keepdims=True)
  return jnp.zeros_like(w), gc, jnp.zeros_like(a)


_pcnn_sign.defvjp(_pcnn_sign_fwd, _pcnn_sign_bwd)


def pcnn_project(c: jax.Array, w: jax.Array) -> jax.Array:
  """PCNN projections C_hat_j = a * sign(W_j o C), a = mean |C| (the layer's scale).

  Args:
    c: real kernel C, any shape (HWIO).
    w: (J, *c.shape) projection matrices W_j.

  Returns:
    (J, *c.shape) binarized kernels with values in {-a, 0, a} (0 only where W_j o C = 0).
    Gradient w.r.t. c: sum_j a * W_j * 1[|W_j o C| <= 1] * g_j; none to w (see module doc).
  """
  a = jax.lax.stop_gradient(jnp.mean(jnp.abs(c)))
  return _pcnn_sign(w, c[None], a)


def pcnn_projection_loss(c: jax.Array, w: jax.Array, c_hat: jax.Array, delta: jax.Array,
                         lam: float, eta: float) -> jax.Array:
  """PCNN projection loss of one layer: (lam / 2) sum_j || C_hat_j - W_j o (C + eta delta_j) ||^2.

  Args:
    c: real kernel C.
    w: (J, *c.shape) projection matrices.
    c_hat: (J, *c.shape) projected kernels (treated as constants).
    delta: (J, *c.shape) dL_S / dC_hat_j of the same step (constants).
    lam: loss weight lambda.
    eta: step eta of the projected target.

  Returns:
    Scalar loss; its gradients are dL_P/dC = -lam sum_j W_j o r_j and dL_P/dW_j =
    -lam (C + eta delta_j) o r_j with r_j = C_hat_j - W_j o (C + eta delta_j).
  """
  c_hat = jax.lax.stop_gradient(c_hat)
  delta = jax.lax.stop_gradient(delta)
  r = c_hat - w * (c[None] + eta * delta)
  return 0.5 * lam * jnp.sum(r * r)


class PCNNConv(quant_layers.BinaryConv):
  """A PCNN projection convolution: params "kernel" (C) and "projection" (J, *C).

  Called like `nn.Conv` (fields of `quant.BinaryConv`); the input is quantised by
  `input_quantizer` ("ste_sign": 1-bit activations, None: real ones) and zero-padded after it.
  The kernel is mean_j C_hat_j, C_hat passed through `self.perturb("chat", ...)`: the gradient
  w.r.t. the "perturbations" collection is delta = dL_S/dC_hat (needed by
  `pcnn_projection_loss`); without that collection in `apply` it is a no-op. `kernel_quantizer`
  must stay None (the projections binarise the kernel), which also keeps `quant.export` from
  packing the latent kernel.

  Attributes:
    num_projections: J, the projection matrices per kernel.
  """
  kernel_quantizer: quant_layers.Quantizer = None
  num_projections: int = 1

  @property
  def weight_bits(self) -> int:
    return 1

  def binary_kernel(self, kernel: jax.Array) -> jax.Array:
    if self.kernel_quantizer is not None:
      raise ValueError(f"PCNNConv binarises its kernel with its projections; leave "
                       f"kernel_quantizer None (got {self.kernel_quantizer!r}).")
    proj = self.param("projection", nn.initializers.ones, (self.num_projections, *kernel.shape),
                      self.param_dtype)
    c_hat = self.perturb("chat", pcnn_project(kernel, proj))
    return jnp.mean(c_hat, axis=0)


def projection_loss_tree(params: Any, deltas: Any, lam: float, eta: float) -> jax.Array:
  """Sum of `pcnn_projection_loss` over every PCNN layer of a parameter tree.

  Args:
    params: the model's "params" (PCNN layers hold "kernel" and "projection").
    deltas: the gradient of the task loss w.r.t. the "perturbations" collection (same module
      paths, leaf "chat").
    lam, eta: projection-loss weight and step.

  Returns:
    Scalar L_P (0 when the tree has no PCNN layer).
  """
  total = jnp.zeros((), jnp.float32)
  if not isinstance(params, dict):
    return total
  if "projection" in params and "kernel" in params:
    c, w = params["kernel"], params["projection"]
    c_hat = pcnn_project(c, w)
    total = total + pcnn_projection_loss(c, w, c_hat, deltas["chat"], lam, eta)
  for key, sub in params.items():
    if isinstance(sub, dict) and isinstance(deltas, dict) and key in deltas:
      total = total + projection_loss_tree(sub, deltas[key], lam, eta)
  return total
