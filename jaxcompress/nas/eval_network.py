"""The DARTS evaluation network (`NetworkCIFAR`) built from any genotype, float or binarized.

Follows `quark0/darts` `cnn/model.py` (DARTS, arXiv 1806.09055, Sec. 3.3 and App. A.2), which
PC-DARTS (arXiv 1907.05737) and BNAS (arXiv 1911.10862) retrain their cells with:

* stem: 3x3 conv to `stem_multiplier * C` channels + BN;
* `num_cells` cells; reduction cells (channels x2) at `num_cells // 3` and `2 * num_cells // 3`;
* cell: c_{k-2} preprocessed by `FactorizedReduce` when the previous cell reduced, else by
  ReLU-1x1 conv-BN; c_{k-1} by ReLU-1x1 conv-BN; node i = op_a(state_a) + op_b(state_b) with the
  two (op, input) edges of the genotype; in a reduction cell the edges reading the two cell inputs
  have stride 2; output = concat of the genotype's concat states;
* drop path (`drop_path`, DARTS `utils.drop_path`): in training, every op that is not the identity
  has its output zeroed per sample with probability p and scaled by 1 / (1 - p); p is a traced call
  argument (the method sets p = drop_path_prob * epoch / epochs, DARTS `train.py`);
* auxiliary head (`AuxiliaryHead`, DARTS `AuxiliaryHeadCIFAR`) on the output of cell
  `2 * num_cells // 3`, in training only; its loss weight (0.4) lives in the method;
* global average pool + linear classifier. All BNs are affine (momentum 0.1, epsilon 1e-5 in
  PyTorch's convention).

Binary evaluation networks (BNAS): `op_set="binary"` builds the cell ops with XNOR-binarized
sep/dil convs (pools, skip and none real-valued) and `op_set="pcnn"` with PCNN projection convs
(`binary_ops.ops_for(op_set, binary_activations)`). The
stem, the preprocessing 1x1 convs, the auxiliary head and the classifier stay float (CHOICE: the
usual BNN convention of a float first/last layer; the BNAS paper binarizes the cell ops).

Example:
  >>> import jax, jax.numpy as jnp
  >>> net = EvalNetwork(genotype=get_genotype("DARTS_V2"), C=8, num_cells=5)
  >>> x = jnp.zeros((2, 32, 32, 3))
  >>> v = net.init(jax.random.key(0), x, train=False)
  >>> logits = net.apply(v, x, train=False)
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError
from jaxcompress.nas import binary_ops, space
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.ops import conv as conv_ops

Genotype = genotype_lib.Genotype

# Published cells selectable by name (`config.model.kwargs.genotype = "PC_DARTS"`).
NAMED_GENOTYPES: dict[str, Genotype] = {
    "DARTS_V1": genotype_lib.DARTS_V1,
    "DARTS_V2": genotype_lib.DARTS_V2,
    "DARTS": genotype_lib.DARTS_V2,
    "PC_DARTS": genotype_lib.PC_DARTS,
    "PC_DARTS_cifar": genotype_lib.PC_DARTS_cifar,
    "PC_DARTS_image": genotype_lib.PC_DARTS_image,
    "PCDARTS": genotype_lib.PC_DARTS,
}


def _frozen(g: Genotype) -> Genotype:
  """A hashable copy (tuples throughout) so the genotype can be a linen module attribute."""
  return Genotype(tuple((str(op), int(j)) for op, j in g.normal),
                  tuple(int(c) for c in g.normal_concat),
                  tuple((str(op), int(j)) for op, j in g.reduce),
                  tuple(int(c) for c in g.reduce_concat))


def get_genotype(spec: Any) -> Genotype:
  """Resolves a genotype from a name, a `Genotype`, a dict, a JSON string or a file path.

  Args:
    spec: a `Genotype`; a published name (`NAMED_GENOTYPES`: "DARTS_V2", "PC_DARTS", ...); a
      dict with normal / normal_concat / reduce / reduce_concat (or a search's
      `final_report.json` content, whose "genotype" entry is used); a JSON string of either; or the
      path of a search's `genotype.json` / `final_report.json` (or of its workdir).

  Returns:
    The genotype with tuples throughout (hashable).

  Raises:
    ConfigError: unknown name or missing file, saying how to produce one.
  """
  if isinstance(spec, Genotype):
    return _frozen(spec)
  if hasattr(spec, "to_dict"):  # an ml_collections.ConfigDict from a config
    spec = spec.to_dict()
  if isinstance(spec, dict):
    d = dict(spec.get("genotype", spec))
    try:
      return _frozen(genotype_lib.from_json(json.dumps(d)))
    except KeyError as e:
      raise ConfigError(f"Genotype dict lacks the field {e}; it needs normal, normal_concat, "
                        "reduce and reduce_concat (the genotype.json a search writes).") from e
  if not isinstance(spec, str) or not spec:
    raise ConfigError(f"Cannot read a genotype from {spec!r}; pass a published name "
                      f"({', '.join(sorted(NAMED_GENOTYPES))}), a dict or a genotype.json path.")
  if spec in NAMED_GENOTYPES:
    return _frozen(NAMED_GENOTYPES[spec])
  if spec.lstrip().startswith("{"):
    return get_genotype(json.loads(spec))
  path = os.path.expanduser(spec)
  if os.path.isdir(path):
    path = os.path.join(path, "genotype.json")
  if not os.path.exists(path):
    raise ConfigError(
        f"Genotype file {path!r} does not exist. Run a search first, e.g. `python -m launch.main "
        "--config=configs/pc_darts/digits_search.py --workdir=/tmp/pcdarts_digits` (it writes "
        "genotype.json into its workdir), then pass that path as "
        "--config.model.kwargs.genotype=/tmp/pcdarts_digits/genotype.json, or use a published "
        f"name ({', '.join(sorted(NAMED_GENOTYPES))}).")
  with open(path, encoding="utf-8") as f:
    return get_genotype(json.load(f))


def reduction_cells(num_cells: int) -> tuple[int, int]:
  """Indices of the two reduction cells: num_cells // 3 and 2 * num_cells // 3 (DARTS)."""
  return (num_cells // 3, 2 * num_cells // 3)


def drop_path(x: jax.Array, drop_prob: jax.Array | float, rng: jax.Array) -> jax.Array:
  """DARTS `drop_path` (also ABanditNAS's `drop_path_`): x / keep * Bernoulli(keep) per sample,
  keep = 1 - drop_prob.

  Args:
    x: (N, ...) op output.
    drop_prob: probability of dropping the whole path of a sample (traced or Python number).
    rng: PRNG key.

  Returns:
    x with each sample's values zeroed with probability drop_prob, the others scaled by 1/keep.
  """
  keep = 1.0 - jnp.asarray(drop_prob, x.dtype)
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return x / keep * mask


class EvalCell(nn.Module):
  """A discrete DARTS cell (`model.Cell`).

  Attributes:
    edges: (op_name, input_index) pairs, two per node, node by node.
    concat: states concatenated into the output.
    features: C of the cell (every node has C channels).
    reduction: stride-2 edges on the two cell inputs.
    reduction_prev: the previous cell reduced (c_{k-2} is FactorizedReduce-d).
    op_set, binary_activations: the cell's op set (`binary_ops.ops_for`).
  """
  edges: Sequence[tuple[str, int]]
  concat: Sequence[int]
  features: int
  reduction: bool = False
  reduction_prev: bool = False
  op_set: str = "darts"
  binary_activations: bool = False

  @nn.compact
  def __call__(self, s0: jax.Array, s1: jax.Array, train: bool = False,
               drop_prob: jax.Array | float = 0.0) -> jax.Array:
    c = self.features
    if self.reduction_prev:
      s0 = space.FactorizedReduce(c, True, name="preprocess0")(s0, train)
    else:
      s0 = space.ReLUConvBN(c, 1, 1, 0, True, name="preprocess0")(s0, train)
    s1 = space.ReLUConvBN(c, 1, 1, 0, True, name="preprocess1")(s1, train)
    ops = binary_ops.ops_for(self.op_set, self.binary_activations)
    states = [s0, s1]
    for node in range(len(self.edges) // 2):
      h = 0.0
      for e in (2 * node, 2 * node + 1):
        name, j = self.edges[e]
        if name not in ops:
          raise ConfigError(f"Unknown op {name!r} in the genotype; known: {sorted(ops)}.")
        stride = 2 if self.reduction and j < 2 else 1
        op = ops[name](c, stride, True)
        y = op(states[j], train)
        # DARTS drops every path except the identity (`if not isinstance(op, Identity)`).
        if train and not isinstance(op, space.Identity):
          y = drop_path(y, drop_prob, self.make_rng("drop_path"))
        h = h + y
      states.append(h)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
  """DARTS `AuxiliaryHeadCIFAR`: ReLU, avgpool 5 stride 3, 1x1 conv 128, BN, ReLU, 2x2 conv 768,
  BN, ReLU, linear (also ABanditNAS's head, with its batch-norm epsilon 1e-3).

  Made for the 8x8 map of CIFAR after two reductions. On maps smaller than 5x5 (8x8 digits give
  2x2) the pool is skipped (CHOICE) and the 2x2 conv reads the map directly, and a 1x1 map (after
  the pool) gets a 1x1 conv, so the head works on any input size.

  Attributes:
    num_classes: classifier outputs.
    bn_epsilon: epsilon of both batch norms (PyTorch's 1e-5 in DARTS).
  """
  num_classes: int
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.relu(x)
    if x.shape[1] >= 5:
      x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")
    x = conv_ops.Conv(128, (1, 1), use_bias=False, kernel_init=space.torch_conv_init)(x)
    x = nn.relu(space.batch_norm(train, True, self.bn_epsilon)(x))
    k = min(2, x.shape[1])
    x = conv_ops.Conv(768, (k, k), padding="VALID", use_bias=False,
                      kernel_init=space.torch_conv_init)(x)
    x = nn.relu(space.batch_norm(train, True, self.bn_epsilon)(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class EvalNetwork(nn.Module):
  """`NetworkCIFAR` of a genotype.

  Attributes:
    genotype: the cells (use `get_genotype` to build one from a name, dict or file).
    C: initial channels (36 for DARTS / PC-DARTS CIFAR-10).
    num_cells: number of cells (20 for CIFAR-10).
    num_classes: classifier outputs.
    auxiliary: build the auxiliary head (its logits are returned when `with_aux` and `train`).
    stem_multiplier: stem channels = stem_multiplier * C.
    op_set: "darts" (float cells), "binary" (XNOR cells, BNAS) or "pcnn" (PCNN cells, BNAS).
    binary_activations: binary op sets: binarize activations too (1-bit).
  """
  genotype: Genotype = _frozen(genotype_lib.DARTS_V2)
  C: int = 36
  num_cells: int = 20
  num_classes: int = 10
  auxiliary: bool = True
  stem_multiplier: int = 3
  op_set: str = "darts"
  binary_activations: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, drop_prob: jax.Array | float = 0.0,
               with_aux: bool = False) -> Any:
    """Logits of NHWC images.

    Args:
      x: (N, H, W, C_in) normalised images.
      train: batch statistics, drop path (needs a "drop_path" rng) and the auxiliary head.
      drop_prob: drop-path probability (traced; only used in training).
      with_aux: return (logits, aux_logits) (aux_logits None outside training / without head).

    Returns:
      logits (N, num_classes), or (logits, aux_logits) with `with_aux`.
    """
    g = self.genotype
    c = self.C
    s = conv_ops.Conv(self.stem_multiplier * c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      kernel_init=space.torch_conv_init, name="stem_conv")(x)
    s0 = s1 = space.batch_norm(train, True, name="stem_bn")(s)
    reduction_prev = False
    logits_aux = None
    for i in range(self.num_cells):
      reduction = i in reduction_cells(self.num_cells)
      if reduction:
        c *= 2
      edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
      out = EvalCell(tuple(edges), tuple(concat), c, reduction, reduction_prev, self.op_set,
                     self.binary_activations, name=f"cell_{i}")(s0, s1, train, drop_prob)
      s0, s1 = s1, out
      reduction_prev = reduction
      if (i == 2 * self.num_cells // 3 and self.auxiliary
          and (train or self.is_initializing())):
        aux = AuxiliaryHead(self.num_classes, name="auxiliary_head")(s1, train)
        logits_aux = aux if train else None
    y = jnp.mean(s1, axis=(1, 2))
    logits = nn.Dense(self.num_classes, name="classifier")(y)
    return (logits, logits_aux) if with_aux else logits


def darts_eval(layers: Any = None, *, num_classes: int = 10, genotype: Any = "DARTS_V2",
               C: int = 36, num_cells: int = 20, auxiliary: bool = True,  # pylint: disable=invalid-name
               stem_multiplier: int = 3, op_set: str = "darts",
               binary_activations: bool = False) -> EvalNetwork:
  """Model-registry constructor ("darts_eval"): an `EvalNetwork` of a genotype.

  Args:
    layers: the registry's layer factory; only float is meaningful (cells choose their ops by
      `op_set`), anything else is rejected.
    num_classes: classifier outputs.
    genotype: a name, dict, JSON string, `Genotype`, or path of a search's genotype.json.
    C, num_cells, auxiliary, stem_multiplier, op_set, binary_activations: see `EvalNetwork`.

  Returns:
    The unbound module.

  Raises:
    ConfigError: unreadable genotype, or a non-float layer set.
  """
  from jaxcompress.models import factory  # pylint: disable=g-import-not-at-top
  if layers is not None and layers != factory.FLOAT:
    raise ConfigError("darts_eval builds its cells from op sets; leave config.model.layers = "
                      "'float' and set config.model.kwargs.op_set = 'binary' (XNOR) or 'pcnn' "
                      "for a binarized network.")
  return EvalNetwork(genotype=get_genotype(genotype), C=C, num_cells=num_cells,
                     num_classes=num_classes, auxiliary=auxiliary,
                     stem_multiplier=stem_multiplier, op_set=op_set,
                     binary_activations=binary_activations)
