"""Inception-v3 (Szegedy et al. 2016, arXiv 1512.00567) built through the layer factory.

The torchvision layout (`torchvision/models/inception.py`, `Inception3`): a stem of five
BasicConv2d (conv without bias, BatchNorm with eps 0.001, ReLU) and two 3x3 stride-2 max pools;
Mixed_5b-5d (InceptionA), Mixed_6a (InceptionB, grid reduction), Mixed_6b-6e (InceptionC,
factorised 7x7), Mixed_7a (InceptionD, grid reduction), Mixed_7b-7c (InceptionE, expanded
filter banks); global average pool, dropout and the classifier `fc`. The auxiliary classifier
`AuxLogits` reads Mixed_6e. 27.16 M parameters with the auxiliary head (23.83 M without) and
5.71 G MACs at 299x299.

Module names are torchvision's (Conv2d_1a_3x3/{conv, bn}, Mixed_5b/branch1x1/{conv, bn}, ...,
AuxLogits, fc), so its state_dict keys are the module paths joined by dots.

`fid_pooling=True` gives the pool branches of the TensorFlow 2015 Inception graph that FID is
defined with (pytorch-fid, `src/pytorch_fid/inception.py`, FIDInceptionA/C/E_1/E_2): average
pools that leave the zero padding out of the mean, and a max pool in Mixed_7c.
`include_top=False` returns the 2048-d global average pool ("pool3") instead of the logits;
`jaxcompress.models.fid_inception` builds the FID network from both.

The auxiliary logits are not a second output (every jaxcompress trainer expects one array): in
training they are sown as `intermediates/aux_logits`, read with
`model.apply(..., train=True, mutable=["batch_stats", "intermediates"])`.

Example:
  >>> from jaxcompress.models import inception_v3
  >>> model = inception_v3.inception_v3(num_classes=1000, transform_input=True)
  >>> variables = model.init(rng, jnp.zeros((1, 299, 299, 3)), train=False)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory

_Pad = Sequence[tuple[int, int]]


class BasicConv2d(nn.Module):
  """Conv (no bias), BatchNorm (eps 0.001, as torchvision's Inception3), activation.

  Attributes:
    features: output channels.
    kernel: kernel size (kh, kw).
    strides: stride.
    padding: symmetric padding (ph, pw), PyTorch style.
    layers: layer factory.
    first: build the conv with `layers.first_conv` (the stem's first layer).
  """
  features: int
  kernel: tuple[int, int]
  layers: factory.Layers
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  first: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    conv = ly.first_conv if self.first else ly.conv
    ph, pw = self.padding
    x = conv(self.features, self.kernel, strides=(self.strides, self.strides),
             padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    return ly.act(ly.batch_norm(train, epsilon=1e-3, name="bn")(x))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # F.avg_pool2d(x, 3, stride=1, padding=1) counts the zero padding (count_include_pad=True).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _avg_pool_3x3_no_pad(x: jax.Array) -> jax.Array:
  # TensorFlow's SAME average pool divides by the number of real inputs under the window
  # (F.avg_pool2d(..., count_include_pad=False) in pytorch-fid's FIDInception blocks).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array) -> jax.Array:
  # F.max_pool2d(x, 3, stride=1, padding=1) pads with -inf: only real inputs can be the maximum.
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


# The pool of the branch_pool branch of InceptionA/C/E: "avg" (torchvision), "avg_no_pad" and
# "max" (the FID Inception graph).
POOLS = {"avg": _avg_pool_3x3, "avg_no_pad": _avg_pool_3x3_no_pad, "max": _max_pool_3x3}


def _pool_branch(pool: str, x: jax.Array) -> jax.Array:
  if pool not in POOLS:
    raise ValueError(f"Unknown Inception pool branch {pool!r}; use one of {sorted(POOLS)}.")
  return POOLS[pool](x)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (Fig. 5 of the paper), 35x35 grid.

  `pool` (here and in InceptionC/E) names the pool of the pool branch, a key of `POOLS`.
  """
  pool_features: int
  layers: factory.Layers
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def c(f, k, name, pad=(0, 0)):
      return BasicConv2d(f, k, self.layers, padding=pad, name=name)
    b1 = c(64, (1, 1), "branch1x1")(x, train)
    b5 = c(48, (1, 1), "branch5x5_1")(x, train)
    b5 = c(64, (5, 5), "branch5x5_2", (2, 2))(b5, train)
    b3 = c(64, (1, 1), "branch3x3dbl_1")(x, train)
    b3 = c(96, (3, 3), "branch3x3dbl_2", (1, 1))(b3, train)
    b3 = c(96, (3, 3), "branch3x3dbl_3", (1, 1))(b3, train)
    bp = c(self.pool_features, (1, 1), "branch_pool")(_pool_branch(self.pool, x), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (Fig. 10)."""
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    b3 = BasicConv2d(384, (3, 3), ly, strides=2, name="branch3x3")(x, train)
    bd = BasicConv2d(64, (1, 1), ly, name="branch3x3dbl_1")(x, train)
    bd = BasicConv2d(96, (3, 3), ly, padding=(1, 1), name="branch3x3dbl_2")(bd, train)
    bd = BasicConv2d(96, (3, 3), ly, strides=2, name="branch3x3dbl_3")(bd, train)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Factorised 7x7 (1x7 and 7x1) branches on the 17x17 grid (Fig. 6)."""
  channels_7x7: int
  layers: factory.Layers
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly, c7 = self.layers, self.channels_7x7
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of 1x7 and 7x1
    b1 = BasicConv2d(192, (1, 1), ly, name="branch1x1")(x, train)
    b7 = BasicConv2d(c7, (1, 1), ly, name="branch7x7_1")(x, train)
    b7 = BasicConv2d(c7, row[0], ly, padding=row[1], name="branch7x7_2")(b7, train)
    b7 = BasicConv2d(192, col[0], ly, padding=col[1], name="branch7x7_3")(b7, train)
    bd = BasicConv2d(c7, (1, 1), ly, name="branch7x7dbl_1")(x, train)
    for i, (f, (k, p)) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)]):
      bd = BasicConv2d(f, k, ly, padding=p, name=f"branch7x7dbl_{i + 2}")(bd, train)
    bp = BasicConv2d(192, (1, 1), ly, name="branch_pool")(_pool_branch(self.pool, x), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    b3 = BasicConv2d(192, (1, 1), ly, name="branch3x3_1")(x, train)
    b3 = BasicConv2d(320, (3, 3), ly, strides=2, name="branch3x3_2")(b3, train)
    b7 = BasicConv2d(192, (1, 1), ly, name="branch7x7x3_1")(x, train)
    b7 = BasicConv2d(192, (1, 7), ly, padding=(0, 3), name="branch7x7x3_2")(b7, train)
    b7 = BasicConv2d(192, (7, 1), ly, padding=(3, 0), name="branch7x7x3_3")(b7, train)
    b7 = BasicConv2d(192, (3, 3), ly, strides=2, name="branch7x7x3_4")(b7, train)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Expanded filter bank outputs (1x3 and 3x1 side by side) on the 8x8 grid (Fig. 7)."""
  layers: factory.Layers
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    b1 = BasicConv2d(320, (1, 1), ly, name="branch1x1")(x, train)
    b3 = BasicConv2d(384, (1, 1), ly, name="branch3x3_1")(x, train)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), ly, padding=(0, 1), name="branch3x3_2a")(b3, train),
        BasicConv2d(384, (3, 1), ly, padding=(1, 0), name="branch3x3_2b")(b3, train)], axis=-1)
    bd = BasicConv2d(448, (1, 1), ly, name="branch3x3dbl_1")(x, train)
    bd = BasicConv2d(384, (3, 3), ly, padding=(1, 1), name="branch3x3dbl_2")(bd, train)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), ly, padding=(0, 1), name="branch3x3dbl_3a")(bd, train),
        BasicConv2d(384, (3, 1), ly, padding=(1, 0), name="branch3x3dbl_3b")(bd, train)], axis=-1)
    bp = BasicConv2d(192, (1, 1), ly, name="branch_pool")(_pool_branch(self.pool, x), train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier on the 17x17 grid: avgpool 5/3, 1x1 (128), 5x5 (768), pool, fc."""
  num_classes: int
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")
    x = BasicConv2d(128, (1, 1), self.layers, name="conv0")(x, train)
    x = BasicConv2d(768, (5, 5), self.layers, name="conv1")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return self.layers.last_dense(self.num_classes, name="fc")(x)


class Inception3(nn.Module):
  """Inception-v3 with torchvision's architecture (inputs of at least 75x75; 299x299 nominal).

  Attributes:
    num_classes: classifier outputs.
    aux_logits: build the auxiliary classifier (torchvision's default and its checkpoints);
      its logits are sown as `intermediates/aux_logits` in training.
    transform_input: re-normalise inputs from ImageNet mean/std to the [-1, 1] scaling of the
      original Inception weights; torchvision sets it for its pretrained `inception_v3`.
    dropout: dropout rate before `fc`; torchvision trains with 0.5, which needs a "dropout"
      rng in `apply` when training.
    layers: layer factory; `first_conv` builds Conv2d_1a_3x3, `last_dense` the classifiers.
    fid_pooling: the pool branches of the FID Inception graph (pytorch-fid's FIDInceptionA/C
      average pools without the padding in Mixed_5b-6e and Mixed_7b, FIDInceptionE_2's max
      pool in Mixed_7c) instead of torchvision's padded average pools. No variable changes.
    include_top: end with dropout and `fc` (the logits); False returns the global average
      pool (2048 features, FID's "pool3") and builds no `fc`.
  """
  num_classes: int = 1000
  aux_logits: bool = True
  transform_input: bool = False
  dropout: float = 0.0
  layers: factory.Layers = factory.FLOAT
  fid_pooling: bool = False
  include_top: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    if self.transform_input:
      # torchvision Inception3._transform_input: x * std / 0.5 + (mean - 0.5) / 0.5.
      std = jnp.asarray([0.229, 0.224, 0.225], x.dtype)
      mean = jnp.asarray([0.485, 0.456, 0.406], x.dtype)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    x = BasicConv2d(32, (3, 3), ly, strides=2, first=True, name="Conv2d_1a_3x3")(x, train)
    x = BasicConv2d(32, (3, 3), ly, name="Conv2d_2a_3x3")(x, train)
    x = BasicConv2d(64, (3, 3), ly, padding=(1, 1), name="Conv2d_2b_3x3")(x, train)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, (1, 1), ly, name="Conv2d_3b_1x1")(x, train)
    x = BasicConv2d(192, (3, 3), ly, name="Conv2d_4a_3x3")(x, train)
    x = _max_pool_3x3_s2(x)
    avg = "avg_no_pad" if self.fid_pooling else "avg"
    x = InceptionA(32, ly, avg, name="Mixed_5b")(x, train)
    x = InceptionA(64, ly, avg, name="Mixed_5c")(x, train)
    x = InceptionA(64, ly, avg, name="Mixed_5d")(x, train)
    x = InceptionB(ly, name="Mixed_6a")(x, train)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, ly, avg, name=name)(x, train)
    # Run in training (torchvision computes it only then) and at init, so the parameters exist
    # whatever mode `init` is called in.
    if self.aux_logits and (train or self.is_initializing()):
      aux = InceptionAux(self.num_classes, ly, name="AuxLogits")(x, train)
      if train:
        self.sow("intermediates", "aux_logits", aux)
    x = InceptionD(ly, name="Mixed_7a")(x, train)
    x = InceptionE(ly, avg, name="Mixed_7b")(x, train)
    x = InceptionE(ly, "max" if self.fid_pooling else "avg", name="Mixed_7c")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if not self.include_top:
      return x
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return ly.last_dense(self.num_classes, name="fc")(x)


def inception_v3(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                 **kwargs: Any) -> Inception3:
  """Inception-v3 (27.16 M parameters with the auxiliary classifier, 1000 classes)."""
  return Inception3(num_classes=num_classes, layers=layers, **kwargs)
