"""Binarized DARTS operations for BNAS (XNOR-Net style), NHWC / HWIO.

BNAS (Chen et al., arXiv 1911.10862 / 2009.04247) searches cells whose convolutions are binarized
and trains them with XNOR-Net (Rastegari et al., arXiv 1603.05279):

* weights: W_b = a * sign(W), a = mean |W| per output filter (over kh, kw, in), recomputed from
  the real latent weights at every step; sign by `quant.ste_sign` (clipped STE, gradient where
  |W| <= 1). `a` is differentiated too, which gives XNOR-Net's d/dW = g (1/n + a 1[|W| <= 1]).
* activations (1-bit search only, `binarize_input=True`): A_b = sign(A) with the clipped STE
  (gradient where |A| <= 1). XNOR-Net's optional spatial scale K is not used (choice: most
  binary NAS code drops it). Zero padding is applied after
  binarisation (the padded border stays 0).

Op set (same names and order as `space.PRIMITIVES`, so alphas / genotypes are unchanged):

| name          | binarized version                                                         |
|---------------|---------------------------------------------------------------------------|
| sep_conv_kxk  | two `BinaryDilConv(dilation=1)` blocks, only the first strided             |
| dil_conv_kxk  | [ReLU] -> XNOR depthwise kxk (dilation 2) -> XNOR 1x1 -> BN                 |
| none, pools   | real-valued (unchanged)                                                   |
| skip_connect  | identity; at stride 2 the real-valued `FactorizedReduce`                   |

Choices where the paper is silent (documented in methods/bnas.py too): pooling, skip and none stay
real-valued (reading the paper as binarizing convolutions only); with weights-only binarization
(`binary_activations=False`, XNOR-BNAS search as the conference version) the ReLU is kept; with
binarized activations (1-bit BNAS) the ReLU is dropped (sign(ReLU(x)) would be constant +1) and
each binary conv binarizes its own input, as XNOR-Net's BN -> sign -> conv block (the BN of the
previous op / preprocessing precedes it).

PCNN variant (`pcnn_ops`; Gu et al., "Projection Convolutional Neural Networks for 1-bit CNNs
via Discrete Back Propagation", arXiv 1811.12755, AAAI 2019; PCNN-BNAS in arXiv 1911.10862):
each real kernel C (HWIO) has J learned projection matrices W_j of its shape and is
projected onto Omega = {a, -a}, a = mean |C| over the layer:
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

Example:
  >>> import jax, jax.numpy as jnp
  >>> ops = binary_ops(binary_activations=True)
  >>> op = ops["sep_conv_3x3"](8, 1, False)
  >>> v = op.init(jax.random.key(0), jnp.ones((2, 8, 8, 8)), train=False)
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.nas import space
from jaxcompress.ops import conv as conv_ops
from jaxcompress.quant.estimators import ste_sign


def xnor_weight(w: jax.Array, clip_value: float = 1.0) -> jax.Array:
  """a * sign(w) with a = mean |w| per output filter (last axis of an HWIO kernel)."""
  a = jnp.mean(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True)
  return a * ste_sign(w, clip_value)


def xnor_conv2d(x: jax.Array, w: jax.Array, stride: int = 1, padding: int = 0,
                dilation: int = 1, groups: int = 1, binarize_input: bool = True) -> jax.Array:
  """XNOR convolution: conv(sign(x) [or x], a * sign(w)), NHWC input, HWIO kernel.

  Args:
    x: (N, H, W, C) activations.
    w: (kh, kw, C // groups, O) real latent kernel.
    stride, padding, dilation, groups: as a PyTorch Conv2d (symmetric zero padding).
    binarize_input: sign the activations (clipped STE); False keeps real activations
      (weight-only binarization).
  """
  xb = ste_sign(x, 1.0) if binarize_input else x
  wb = xnor_weight(w).astype(xb.dtype)
  return conv_ops.conv_general_dilated(
      xb, wb, (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


class _BinaryKernelBits:
  """Precision read by `jaxcompress.summary`: 1-bit kernel, 1-bit input when it is binarised."""
  weight_bits = 1

  @property
  def input_bits(self) -> int:
    return 1 if self.binarize_input else 32  # pytype: disable=attribute-error


class XNORConv(_BinaryKernelBits, nn.Module):
  """A bias-free XNOR-binarized convolution with a real latent kernel."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  binarize_input: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", space.torch_conv_init,
                        (k, k, x.shape[-1] // self.groups, self.features))
    return xnor_conv2d(x, kernel.astype(x.dtype), self.stride, self.padding, self.dilation,
                       self.groups, self.binarize_input)


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


def pcnn_conv2d(x: jax.Array, c_hat: jax.Array, stride: int = 1, padding: int = 0,
                dilation: int = 1, groups: int = 1, binarize_input: bool = True) -> jax.Array:
  """conv(sign(x) [or x], mean_j C_hat_j), NHWC input, HWIO kernels (J leading)."""
  xb = ste_sign(x, 1.0) if binarize_input else x
  k = jnp.mean(c_hat, axis=0).astype(xb.dtype)
  return conv_ops.conv_general_dilated(
      xb, k, (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


class PCNNConv(_BinaryKernelBits, nn.Module):
  """A bias-free PCNN projection convolution: params "kernel" (C) and "projection" (J, *C).

  C_hat is passed through `self.perturb("chat", ...)`: the gradient w.r.t. the "perturbations"
  collection is delta = dL_S/dC_hat (needed by `pcnn_projection_loss`); without that collection
  in `apply` it is a no-op.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  binarize_input: bool = True
  num_projections: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    shape = (k, k, x.shape[-1] // self.groups, self.features)
    kernel = self.param("kernel", space.torch_conv_init, shape)
    proj = self.param("projection", nn.initializers.ones, (self.num_projections, *shape))
    c_hat = self.perturb("chat", pcnn_project(kernel, proj))
    return pcnn_conv2d(x, c_hat.astype(x.dtype), self.stride, self.padding, self.dilation,
                       self.groups, self.binarize_input)


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


class BinaryDilConv(nn.Module):
  """[ReLU] -> XNOR depthwise k x k (dilation d, stride s) -> XNOR 1x1 -> BN."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int = 1
  affine: bool = True
  binary_activations: bool = False
  bn_epsilon: float = 1e-5
  conv: str = "xnor"  # "xnor" (XNORConv) or "pcnn" (PCNNConv)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    b = self.binary_activations
    conv = {"xnor": XNORConv, "pcnn": PCNNConv}[self.conv]
    y = x if b else nn.relu(x)
    y = conv(c_in, self.kernel_size, self.stride, self.padding, self.dilation, c_in, b)(y)
    y = conv(self.features, 1, binarize_input=b)(y)
    return space.batch_norm(train, self.affine, self.bn_epsilon)(y)


class BinarySepConv(nn.Module):
  """Two `BinaryDilConv(dilation=1)` blocks; only the first is strided."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  binary_activations: bool = False
  conv: str = "xnor"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    b = self.binary_activations
    y = BinaryDilConv(c_in, self.kernel_size, self.stride, self.padding, 1, self.affine, b,
                      conv=self.conv)(x, train)
    return BinaryDilConv(self.features, self.kernel_size, 1, self.padding, 1, self.affine, b,
                         conv=self.conv)(y, train)


OpFactory = Callable[[int, int, bool], nn.Module]


@functools.lru_cache(maxsize=None)
def binary_ops(binary_activations: bool = False) -> dict[str, OpFactory]:
  """The BNAS op registry: `space.OPS` with the sep/dil convs XNOR-binarized.

  Args:
    binary_activations: also binarize activations (1-bit BNAS); False = binary weights only.

  Returns:
    {name: factory(C, stride, affine) -> module called as op(x, train)}.
  """
  b = bool(binary_activations)
  ops: dict[str, Any] = dict(space.OPS)
  ops.update({
      "sep_conv_3x3": lambda C, stride, affine: BinarySepConv(C, 3, stride, 1, affine, b),
      "sep_conv_5x5": lambda C, stride, affine: BinarySepConv(C, 5, stride, 2, affine, b),
      "sep_conv_7x7": lambda C, stride, affine: BinarySepConv(C, 7, stride, 3, affine, b),
      "dil_conv_3x3": lambda C, stride, affine: BinaryDilConv(C, 3, stride, 2, 2, affine, b),
      "dil_conv_5x5": lambda C, stride, affine: BinaryDilConv(C, 5, stride, 4, 2, affine, b),
  })
  return ops


@functools.lru_cache(maxsize=None)
def pcnn_ops(binary_activations: bool = False) -> dict[str, OpFactory]:
  """The BNAS PCNN op registry: `space.OPS` with the sep/dil convs as PCNN projection convs."""
  b = bool(binary_activations)
  ops: dict[str, Any] = dict(space.OPS)
  ops.update({
      "sep_conv_3x3": lambda C, stride, affine: BinarySepConv(C, 3, stride, 1, affine, b, "pcnn"),
      "sep_conv_5x5": lambda C, stride, affine: BinarySepConv(C, 5, stride, 2, affine, b, "pcnn"),
      "sep_conv_7x7": lambda C, stride, affine: BinarySepConv(C, 7, stride, 3, affine, b, "pcnn"),
      "dil_conv_3x3": lambda C, stride, affine: BinaryDilConv(C, 3, stride, 2, 2, affine, b,
                                                              conv="pcnn"),
      "dil_conv_5x5": lambda C, stride, affine: BinaryDilConv(C, 5, stride, 4, 2, affine, b,
                                                              conv="pcnn"),
  })
  return ops


BINARY_OPS = binary_ops(False)       # XNOR weights, real activations
BINARY_OPS_1BIT = binary_ops(True)   # XNOR weights and sign activations
