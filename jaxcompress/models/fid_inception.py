"""The Inception network of FID: pytorch-fid's `InceptionV3` with the FID weights, pool3 output.

FID (Heusel et al. 2017, arXiv 1706.08500) is defined with the pool3 features of the TensorFlow
Inception graph of 2015-12-05. GAN papers report it with pytorch-fid (mseitzer/pytorch-fid,
`src/pytorch_fid/inception.py`), whose `fid_inception_v3` ports that graph: torchvision's
Inception3 with 1008 classes, no auxiliary classifier, and patched blocks (FIDInceptionA/C/E_1:
average pools that leave the padding out of the mean; FIDInceptionE_2 in Mixed_7c: a max pool
in the pool branch). GAN-Compression (arXiv 2003.08936) and DMAD (arXiv 2011.08382) compute
their FIDs with it, `InceptionV3([3])`, i.e. resize_input=True and normalize_input=True:

  1. images in [0, 1] are resized to 299x299 (bilinear, align_corners=False, no antialiasing);
  2. scaled to [-1, 1] (2x - 1);
  3. the network runs up to the global average pool of Mixed_7c: 2048 features per image.

`FIDInceptionV3` is `inception_v3.Inception3(aux_logits=False, include_top=False,
fid_pooling=True)` with those two input steps, so its variables have torchvision's names and
the weight file converts with `torchvision_weights`' layout conversion. The weights are not
downloaded here: `load_pytorch_fid` reads the file pytorch-fid downloads,
`pt_inception-2015-12-05-6726825d.pth` (a state_dict of the patched Inception3, see
`FID_WEIGHTS_URL`).

Example:
  >>> from jaxcompress.models import fid_inception
  >>> variables = fid_inception.load_pytorch_fid("pt_inception-2015-12-05-6726825d.pth")
  >>> feats = fid_inception.pool3_features(variables, images_nhwc_in_0_1)  # (N, 2048)
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.errors import ConfigError
from jaxcompress.models import inception_v3
from jaxcompress.models import torchvision_weights as tvw

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# pytorch-fid's `FID_WEIGHTS_URL` (src/pytorch_fid/inception.py).
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   f"{FID_WEIGHTS_FILE}")
INPUT_SIZE = 299
FEATURE_DIM = 2048
_FID_CLASSES = 1008  # the TensorFlow graph's classifier, kept in the weight file

# pytorch-fid's `InceptionV3` wrapper keeps the same modules in `blocks`, a ModuleList of
# Sequentials; pooling layers hold no weights but keep their index.
_BLOCKS = {
    0: {0: "Conv2d_1a_3x3", 1: "Conv2d_2a_3x3", 2: "Conv2d_2b_3x3"},
    1: {0: "Conv2d_3b_1x1", 1: "Conv2d_4a_3x3"},
    2: dict(enumerate(["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                       "Mixed_6d", "Mixed_6e"])),
    3: {0: "Mixed_7a", 1: "Mixed_7b", 2: "Mixed_7c"},
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.*)$")


class FIDInceptionV3(inception_v3.Inception3):
  """pytorch-fid's `InceptionV3(output_blocks=[3])` on NHWC images: (N, H, W, 3) -> (N, 2048).

  Attributes (besides Inception3's, whose defaults here build the FID network):
    resize_input: resize to 299x299 bilinearly first (pytorch-fid's `resize_input`).
    normalize_input: map inputs from [0, 1] to [-1, 1] (pytorch-fid's `normalize_input`);
      without it the inputs must already be in [-1, 1].
  """
  aux_logits: bool = False
  include_top: bool = False
  fid_pooling: bool = True
  resize_input: bool = True
  normalize_input: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return super().__call__(preprocess(x, self.resize_input, self.normalize_input), train)


def preprocess(images: jax.Array, resize_input: bool = True,
               normalize_input: bool = True) -> jax.Array:
  """pytorch-fid's input steps: bilinear resize to 299x299, then [0, 1] -> [-1, 1].

  `F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)` samples at
  half-pixel centres with a two-tap kernel whatever the scale (no antialiasing when shrinking),
  which is `jax.image.resize(..., "bilinear", antialias=False)`.

  Args:
    images: (N, H, W, C) float images in [0, 1].
    resize_input: resize to 299x299.
    normalize_input: return 2 * x - 1.

  Returns:
    (N, 299, 299, C) (or (N, H, W, C) without resizing) network inputs.
  """
  if images.ndim != 4:
    raise ValueError(f"FID Inception expects (N, H, W, C) images, got shape {images.shape}.")
  x = images.astype(jnp.float32)
  if resize_input and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, x.shape[3]), "bilinear",
                         antialias=False)
  if normalize_input:
    x = 2 * x - 1
  return x


def fid_inception_v3(**kwargs: Any) -> FIDInceptionV3:
  """The FID Inception network (pytorch-fid's `InceptionV3()` defaults); kwargs override them."""
  return FIDInceptionV3(**kwargs)


def pool3_features(variables: Mapping[str, Any], images: jax.Array, *,
                   resize_input: bool = True, normalize_input: bool = True) -> jax.Array:
  """The 2048-d pool3 features of `images` (N, H, W, 3) in [0, 1] (jit-able, eval mode)."""
  model = FIDInceptionV3(resize_input=resize_input, normalize_input=normalize_input)
  return model.apply(variables, images, train=False)


def _rename_blocks(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Keys of pytorch-fid's `InceptionV3` wrapper ("blocks.2.0.branch1x1...") as Inception3's."""
  out = {}
  for key, value in state.items():
    m = _BLOCK_KEY.match(key)
    if m is not None:
      block, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
      if block not in _BLOCKS or index not in _BLOCKS[block]:
        raise ConfigError(f"The pytorch-fid state_dict has an unexpected key {key!r}; pass the "
                          f"state_dict of fid_inception_v3() (the file {FID_WEIGHTS_FILE}).")
      key = f"{_BLOCKS[block][index]}.{rest}"
    out[key] = value
  return out


def convert_pytorch_fid(state_dict: Mapping[str, Any], *,
                        dtype: Any = np.float32) -> dict[str, Any]:
  """Converts pytorch-fid's FID Inception state_dict into `FIDInceptionV3`'s variables.

  Every convolution and BatchNorm entry must be present and every entry used, as in
  `torchvision_weights.convert_torchvision`. The 1008-way classifier `fc.*` is dropped (FID
  reads the pool before it), and so are BatchNorm `num_batches_tracked` counters.

  Args:
    state_dict: parameter name -> torch tensor or NumPy array, with the names of
      `fid_inception_v3()` (Conv2d_1a_3x3.conv.weight, Mixed_7c.branch_pool.bn.running_var,
      fc.weight, ...), the content of `pt_inception-2015-12-05-6726825d.pth`. The names of
      pytorch-fid's `InceptionV3` wrapper (blocks.0.0.conv.weight, ...) are accepted too.
    dtype: dtype of the returned floating-point arrays.

  Returns:
    {"params": ..., "batch_stats": ...} for `FIDInceptionV3().apply(variables, x)`.

  Raises:
    ConfigError: a key missing, unexpected, or of the wrong shape (the message names it).
  """
  # The layout helpers of torchvision_weights (tensor -> NumPy, wrapped or DataParallel dicts).
  state = tvw._unwrap(state_dict, "The pytorch-fid state_dict")  # pylint: disable=protected-access
  state = tvw._to_numpy(state)  # pylint: disable=protected-access
  state = _rename_blocks(state)
  # torchvision's ImageNet Inception-v3 has the same layers but other weights (and pools): FID
  # values from it are not comparable, so its checkpoints are refused by what only they have.
  found = []
  if "fc.weight" in state and state["fc.weight"].shape[0] != _FID_CLASSES:
    found.append(f"a {state['fc.weight'].shape[0]}-way classifier")
  if any(k.startswith("AuxLogits.") for k in state):
    found.append("an auxiliary classifier (AuxLogits)")
  if found:
    raise ConfigError(
        f"The state_dict has {' and '.join(found)}: a torchvision Inception-v3 checkpoint, not "
        f"the FID Inception weights {FID_WEIGHTS_FILE} ({_FID_CLASSES} classes, no auxiliary "
        f"classifier). Download {FID_WEIGHTS_URL}.")
  state = {k: v for k, v in state.items() if not k.startswith("fc.")}
  try:
    return tvw.convert_torchvision("inception_v3", state, dtype=dtype, aux_logits=False,
                                   include_top=False, fid_pooling=True)
  except ConfigError as e:
    raise ConfigError(f"Not the pytorch-fid FID Inception weights ({FID_WEIGHTS_FILE}, "
                      f"{FID_WEIGHTS_URL}): {e}") from e


def load_pytorch_fid(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> dict[str, Any]:
  """Reads and converts the pytorch-fid weight file (see `convert_pytorch_fid`).

  Args:
    path: `pt_inception-2015-12-05-6726825d.pth`, or a directory holding it (pytorch-fid's
      download lands in torch hub's `checkpoints` directory).
    dtype: dtype of the returned floating-point arrays.

  Returns:
    The variables of `FIDInceptionV3`.

  Raises:
    ConfigError: the file is missing (the message says where to get it), unreadable, or not
      the FID Inception state_dict.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, FID_WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise ConfigError(
        f"The pytorch-fid Inception weights {path!r} do not exist. Download {FID_WEIGHTS_URL} "
        f"(e.g. `wget {FID_WEIGHTS_URL}`; pytorch-fid's own download, `python -c \"from "
        "pytorch_fid.inception import fid_inception_v3; fid_inception_v3()\"`, leaves it in "
        "$TORCH_HOME/hub/checkpoints) and pass the path of the .pth file.")
  return convert_pytorch_fid(tvw.load_state_dict(path), dtype=dtype)
