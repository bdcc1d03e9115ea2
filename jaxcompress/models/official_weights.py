"""Converters from official PyTorch checkpoints of the reimplemented papers into jaxcompress models.

Nothing is downloaded: each converter reads a checkpoint the user already has (a path, read with
`torch.load(..., weights_only=True)`, or an in-memory mapping of tensors / arrays) and returns the
variables of the matching jaxcompress model, whose eval outputs equal the official network's.

* EDSR and RDN of EDSR-PyTorch (github.com/sanghyun-son/EDSR-PyTorch, `src/model/edsr.py`,
  `src/model/rdn.py`, `src/model/common.py`), the `.pt` teachers PAMS (arXiv 2011.04212;
  github.com/colorjam/PAMS) distils from: `convert_edsr`, `edsr_from_torch`, `convert_rdn`,
  `rdn_from_torch`, and `convert_sr_teacher` (either, told apart by its keys), which
  `config.pams.teacher_path=model.pt` uses.
* The released ABanditNAS CIFAR models (arXiv 2008.00698; github.com/bczhangbczhang/ABanditNAS,
  `weights/ABANDIT_CIFAR_{1,2}.pth.tar`, network in `models/darts_cnn_bandit_all.py`,
  `models/darts_cell_all.py`, `models/darts_ops_1.py`, `models/filter.py`):
  `convert_abandit_network`, `abandit_network_from_torch`.

Layouts: conv kernels OIHW (out, in / groups, kh, kw) become HWIO; linear weights (out, in) become
dense kernels (in, out); BatchNorm weight / bias / running_mean / running_var become scale / bias /
mean / var (`num_batches_tracked` is dropped). `nn.PixelShuffle` and `edsr.pixel_shuffle` read
the channels in the same order (c * r * r + i * r + j), so upsampler convs need no permutation.
EDSR's `MeanShift` 1x1 convs (identity weight, bias -+ rgb_range * rgb_mean) are constants of
the jaxcompress EDSR (`rgb_mean * rgb_range`); the converter checks they agree.

Every variable of the model is read from the checkpoint and every checkpoint entry must be used,
so a checkpoint of another architecture, width or genotype fails with a `ConfigError` that names
the keys and the expected (PyTorch-layout) shapes instead of loading partially.

Example:
  >>> from jaxcompress.models import official_weights as ow
  >>> model, variables = ow.edsr_from_torch("edsr_baseline_x4-6b446fab.pt")
  >>> sr = model.apply(variables, lr_nhwc_0_255)
  >>> net, variables = ow.abandit_network_from_torch("ABANDIT_CIFAR_1.pth.tar", "ABANDIT_CIFAR_1")
  >>> logits, _ = net.apply(variables, images_nhwc_0_1)
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.errors import ConfigError
from jaxcompress.models import edsr as edsr_lib
from jaxcompress.models import rdn as rdn_lib
from jaxcompress.models.torchvision_weights import (  # the shared layout conversions
  _describe,
  _flat,
  _from_torch,
  _nest,
  _torch_shape,
)

Path = tuple[str, ...]
StateOrPath = str | os.PathLike[str] | Mapping[str, Any]

# flax leaf name -> PyTorch parameter / buffer name (`lambd` is the Gabor filter's `Lambda`).
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var", "lambd": "Lambda", "theta": "theta", "psi": "psi",
                  "sigma": "sigma", "gamma": "gamma"}
_IGNORED_SUFFIXES = (".num_batches_tracked",)


# ---- reading checkpoints -------------------------------------------------------------------------

def load_torch_checkpoint(path: str | os.PathLike[str], *,
                          allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint's state_dict into NumPy arrays (torch imported here, lazily).

  Args:
    path: a `.pt` / `.pth` / `.pth.tar` file holding a state_dict, or a dict that holds it under
      "state_dict" or "model" (ABanditNAS saves `{"model": state_dict, ...}`).
    allow_pickle: read with `weights_only=False` (arbitrary pickled objects: only for files you
      trust); needed when a training script saved other Python objects next to the weights.

  Returns:
    Parameter name -> array; DataParallel's "module." prefix removed.

  Raises:
    ConfigError: torch is not installed, the file is missing or holds no state_dict.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError("Reading PyTorch checkpoints needs torch: pip install torch (the CPU "
                      "build is enough), or pass a dict of NumPy arrays instead of a path.") from e
  where = os.fspath(path)
  if not os.path.isfile(where):
    raise ConfigError(f"Checkpoint file {where!r} does not exist; pass the path of the official "
                      "PyTorch checkpoint.")
  try:
    obj = torch.load(where, map_location="cpu", weights_only=not allow_pickle)
  except Exception as e:  # pickle and zip errors have many types; all mean "not loadable"
    hint = ("" if allow_pickle else " If the file also pickles other Python objects and you "
            "trust it, pass allow_pickle=True.")
    raise ConfigError(f"Cannot read {where!r} as a PyTorch checkpoint ({e}).{hint}") from e
  return to_numpy_state(obj, where)


def to_numpy_state(obj: Any, where: str = "The state_dict argument") -> dict[str, np.ndarray]:
  """A state_dict (possibly wrapped in {"state_dict"|"model": ...}) as name -> NumPy array.

  Raises:
    ConfigError: `obj` is not a mapping (e.g. a pickled module instead of its state_dict).
  """
  if not isinstance(obj, Mapping):
    raise ConfigError(f"{where} holds a {type(obj).__name__}, not a state_dict; save "
                      "model.state_dict(), not the model.")
  for wrapper in ("state_dict", "model"):
    if isinstance(obj.get(wrapper), Mapping):
      obj = obj[wrapper]
      break
  out = {}
  for k, v in obj.items():
    if hasattr(v, "detach"):  # a torch.Tensor; bfloat16 has no NumPy dtype, so widen floats
      v = v.detach().cpu()
      v = (v.float() if v.is_floating_point() else v).numpy()
    out[str(k)] = np.asarray(v)
  if out and all(k.startswith("module.") for k in out):  # nn.DataParallel checkpoints
    out = {k[len("module."):]: v for k, v in out.items()}
  return out


def _state(state_or_path: StateOrPath, allow_pickle: bool) -> dict[str, np.ndarray]:
  if isinstance(state_or_path, (str, os.PathLike)):
    return load_torch_checkpoint(state_or_path, allow_pickle=allow_pickle)
  return to_numpy_state(state_or_path)


# ---- the shared conversion core --------------------------------------------------------------


def _convert(what: str, state: Mapping[str, np.ndarray], abstract: Mapping[str, Any],
             module_key: Callable[[Path], str], hint: str, dtype: Any,
             accepted: Callable[[str], bool] = lambda k: False) -> dict[str, Any]:
  """Fills every variable of `abstract` from `state`; strict about missing, extra and shapes.

  Args:
    what: the checkpoint's name in messages ("EDSR", "ABanditNAS", ...).
    state: PyTorch name -> array.
    abstract: `jax.eval_shape` of the model's init (collections -> trees of shapes).
    module_key: flax module path (collection and leaf excluded) -> PyTorch module prefix.
    hint: the fix appended to error messages (which model arguments to check).
    dtype: dtype of floating-point outputs.
    accepted: checkpoint keys used elsewhere or legitimately unused (not reported as extra).
  """
  leaves = {(col,) + p: v for col in abstract for p, v in _flat(abstract[col]).items()}
  keys: dict[Path, str] = {}
  for path in leaves:
    leaf = path[-1]
    if leaf not in _LEAF_TO_TORCH:
      raise ConfigError(f"The model has a variable {'/'.join(path)} with no {what} counterpart; "
                        "convert into the float model and transform it afterwards.")
    try:
      prefix = module_key(path[1:-1])
    except KeyError:
      raise ConfigError(f"The model has a module {'/'.join(path[1:-1])} that {what} checkpoints "
                        "do not have; convert into the float model (no `layers=` argument) and "
                        "transform it afterwards.") from None
    keys[path] = f"{prefix}.{_LEAF_TO_TORCH[leaf]}" if prefix else _LEAF_TO_TORCH[leaf]
  expected = {keys[p]: _torch_shape(p[-1], v.shape) for p, v in leaves.items()}
  if len(expected) != len(leaves):
    raise AssertionError("two flax variables map to one PyTorch key")

  missing = sorted(k for k in expected if k not in state)
  if missing:
    raise ConfigError(f"The {what} checkpoint lacks {len(missing)} key(s) the model needs: "
                      f"{_describe(missing, expected)}. {hint}")
  extra = sorted(k for k in state if k not in expected and not k.endswith(_IGNORED_SUFFIXES)
                 and not accepted(k))
  if extra:
    raise ConfigError(f"The {what} checkpoint has {len(extra)} key(s) the jaxcompress model does "
                      f"not use: {_describe(extra, {})}. {hint}")
  wrong = sorted(k for k in expected if tuple(state[k].shape) != expected[k])
  if wrong:
    shown = "; ".join(f"{k!r} has shape {tuple(state[k].shape)}, the model expects "
                      f"{expected[k]}" for k in wrong[:5])
    more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
    raise ConfigError(f"The {what} checkpoint has {len(wrong)} tensor(s) of the wrong shape: "
                      f"{shown}{more} (PyTorch layout). {hint}")
  flat = {}
  for path in leaves:
    value = _from_torch(path[-1], state[keys[path]])
    flat[path] = jnp.asarray(value, dtype if np.issubdtype(value.dtype, np.floating) else None)
  return _nest(flat)


def _require(state: Mapping[str, np.ndarray], key: str, what: str, hint: str) -> np.ndarray:
  if key not in state:
    raise ConfigError(f"The {what} checkpoint has no {key!r}: {hint}")
  return state[key]


def _count(state: Mapping[str, Any], pattern: str) -> int:
  """1 + the largest integer captured by `pattern` over the keys (0 when none match)."""
  found = [int(m.group(1)) for k in state for m in [re.fullmatch(pattern, k)] if m]
  return max(found) + 1 if found else 0


# ---- EDSR-PyTorch: EDSR ------------------------------------------------------------------------

_EDSR_HINT = ("Pass a checkpoint of EDSR-PyTorch's EDSR (src/model/edsr.py) and build the model "
              "with its n_resblocks, n_feats and scale.")


def edsr_hparams(state_or_path: StateOrPath, *, allow_pickle: bool = False) -> dict[str, Any]:
  """The EDSR architecture a checkpoint holds, read from its tensor shapes.

  Args:
    state_or_path: an EDSR-PyTorch EDSR state_dict or the path of its `.pt` file.
    allow_pickle: see `load_torch_checkpoint`.

  Returns:
    {"scale", "n_resblocks", "n_feats", "n_colors", "rgb_shift"}; rgb_shift is the per-channel
    constant the MeanShift layers subtract and add back (rgb_range * rgb_mean in EDSR-PyTorch).
    res_scale is not stored in checkpoints (0.1 for the full EDSR, 1 for the baseline).

  Raises:
    ConfigError: not an EDSR checkpoint, or MeanShift layers with a non-unit std.
  """
  state = _state(state_or_path, allow_pickle)
  head = _require(state, "head.0.weight", "EDSR", _EDSR_HINT)
  n_feats, n_colors = int(head.shape[0]), int(head.shape[1])
  n_body = _count(state, r"body\.(\d+)\.weight")   # body.{n} is the conv after the blocks
  n_resblocks = _count(state, r"body\.(\d+)\.body\.0\.weight")
  if n_body != n_resblocks + 1:
    raise ConfigError(f"The EDSR checkpoint has {n_resblocks} residual blocks but no "
                      f"'body.{n_resblocks}.weight' (the conv after them). {_EDSR_HINT}")
  ups = [_require(state, f"tail.0.{2 * i}.weight", "EDSR", _EDSR_HINT)
         for i in range(_count(state, r"tail\.0\.(\d+)\.weight") // 2 + 1)]
  if len(ups) == 1 and ups[0].shape[0] == 9 * n_feats:
    scale = 3
  elif all(u.shape[0] == 4 * n_feats for u in ups):
    scale = 2 ** len(ups)
  else:
    raise ConfigError(f"The EDSR checkpoint's upsampler 'tail.0.*' has output widths "
                      f"{[int(u.shape[0]) for u in ups]}; EDSR-PyTorch builds 4 * n_feats "
                      f"(= {4 * n_feats}) per x2 step or 9 * n_feats for x3. {_EDSR_HINT}")
  return {"scale": scale, "n_resblocks": n_resblocks, "n_feats": n_feats, "n_colors": n_colors,
          "rgb_shift": _mean_shift(state, n_colors)}


def _mean_shift(state: Mapping[str, np.ndarray], n_colors: int) -> tuple[float, ...]:
  """The constant of EDSR-PyTorch's `common.MeanShift` pair (sub_mean, add_mean).

  MeanShift is a frozen 1x1 conv with weight eye / std and bias sign * rgb_range * mean / std;
  the jaxcompress EDSR has no std, so the weights must be the identity.
  """
  shifts = []
  for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
    w = _require(state, f"{name}.weight", "EDSR", _EDSR_HINT)
    b = _require(state, f"{name}.bias", "EDSR", _EDSR_HINT)
    eye = np.eye(n_colors, dtype=np.float64).reshape(n_colors, n_colors, 1, 1)
    if w.shape != eye.shape or not np.allclose(w, eye, atol=1e-6):
      raise ConfigError(f"The EDSR checkpoint's {name}.weight is not the identity (MeanShift "
                        "with rgb_std != 1); the jaxcompress EDSR only subtracts a mean. Fold "
                        "the std into the input scaling or retrain with rgb_std = (1, 1, 1).")
    shifts.append(sign * np.asarray(b, np.float64))
  if not np.allclose(shifts[0], shifts[1], rtol=1e-5, atol=1e-5):
    raise ConfigError(f"The EDSR checkpoint's sub_mean.bias ({-shifts[0]}) and add_mean.bias "
                      f"({shifts[1]}) are not opposite; EDSR-PyTorch builds both from one "
                      "rgb_range * rgb_mean.")
  return tuple(float(s) for s in shifts[0])


def _edsr_key_fn(n_resblocks: int) -> Callable[[Path], str]:
  """jaxcompress EDSR module path -> EDSR-PyTorch module name (`src/model/edsr.py`)."""
  in_block = {"conv1": 0, "conv2": 2}   # ResBlock.body = [conv, ReLU, conv]

  def key(path: Path) -> str:
    top = path[0]
    if top == "head":
      return "head.0"
    m = re.fullmatch(r"body_(\d+)", top)
    if m:
      return f"body.{m.group(1)}.body.{in_block[path[1]]}"
    if top == "body_end":   # the conv appended to `body` after the residual blocks
      return f"body.{n_resblocks}"
    if top == "upsampler":  # Upsampler = [conv, PixelShuffle] per x2 step (one pair for x3)
      return f"tail.0.{2 * int(path[1].split('_')[1])}"
    if top == "tail":
      return "tail.1"
    raise KeyError(path)

  return key


def convert_edsr(state_or_path: StateOrPath, model: edsr_lib.EDSR | None = None, *,
                 allow_pickle: bool = False, dtype: Any = np.float32) -> dict[str, Any]:
  """Converts an EDSR-PyTorch EDSR checkpoint into `{"params": ...}` of `edsr.EDSR`.

  Args:
    state_or_path: state_dict or `.pt` path (e.g. EDSR-PyTorch's `edsr_baseline_x4-6b446fab.pt`
      or a PAMS teacher).
    model: the float `edsr.EDSR` to convert into; None builds one from the checkpoint's shapes
      (rgb_range 255 and the mean the checkpoint holds). Its `rgb_mean * rgb_range` must equal
      the checkpoint's MeanShift constant.
    allow_pickle: see `load_torch_checkpoint`.
    dtype: dtype of the returned arrays.

  Returns:
    {"params": ...} for `model.apply(variables, lr)` (inputs in [0, rgb_range]).

  Raises:
    ConfigError: a key missing or unused, a shape mismatch (naming the key and the expected
      PyTorch shape), or a MeanShift that differs from the model's mean.
  """
  state = _state(state_or_path, allow_pickle)
  hp = edsr_hparams(state)
  if model is None:
    model, _ = _edsr_model(hp, 1.0, 255.0)
  want = np.asarray(model.rgb_mean, np.float64) * model.rgb_range
  if want.shape != (hp["n_colors"],) or not np.allclose(want, hp["rgb_shift"], rtol=1e-4,
                                                        atol=1e-3):
    raise ConfigError(f"The EDSR checkpoint's MeanShift subtracts {hp['rgb_shift']}, the model "
                      f"subtracts rgb_mean * rgb_range = {tuple(want)}: build the model with the "
                      "checkpoint's rgb_range (EDSR-PyTorch --rgb_range, 255 for PAMS) and "
                      "rgb_mean.")
  x = jax.ShapeDtypeStruct((1, 8, 8, model.n_colors), jnp.float32)
  abstract = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), x)
  key = _edsr_key_fn(model.n_resblocks)
  # The MeanShift pair was checked against the model's mean above.
  return _convert("EDSR", state, abstract, key, _EDSR_HINT, dtype,
                  accepted=lambda k: k.split(".")[0] in ("sub_mean", "add_mean"))


def _edsr_model(hp: Mapping[str, Any], res_scale: float, rgb_range: float,
                **kwargs: Any) -> tuple[edsr_lib.EDSR, dict[str, Any]]:
  mean = tuple(s / rgb_range for s in hp["rgb_shift"])
  args = dict(scale=hp["scale"], n_resblocks=hp["n_resblocks"], n_feats=hp["n_feats"],
              n_colors=hp["n_colors"], res_scale=res_scale, rgb_range=rgb_range, rgb_mean=mean)
  args.update(kwargs)
  return edsr_lib.EDSR(**args), args


def edsr_from_torch(state_or_path: StateOrPath, *, res_scale: float | None = None,
                    rgb_range: float = 255.0, allow_pickle: bool = False,
                    **model_kwargs: Any) -> tuple[edsr_lib.EDSR, dict[str, Any]]:
  """The `edsr.EDSR` a checkpoint describes, and its converted variables.

  Args:
    state_or_path: EDSR-PyTorch EDSR state_dict or `.pt` path.
    res_scale: residual scaling (not stored in checkpoints); None: 0.1 when n_feats == 256 (the
      full EDSR), else 1 (the baseline), as EDSR-PyTorch's templates.
    rgb_range: the pixel range the model was trained on (255 for PAMS and EDSR-PyTorch's
      released models); rgb_mean is the checkpoint's MeanShift constant / rgb_range.
    allow_pickle: see `load_torch_checkpoint`.
    **model_kwargs: further `edsr.EDSR` fields (`layers=` must keep the float variables).

  Returns:
    (model, {"params": ...}).
  """
  state = _state(state_or_path, allow_pickle)
  hp = edsr_hparams(state)
  if res_scale is None:
    res_scale = 0.1 if hp["n_feats"] == 256 else 1.0
  model, _ = _edsr_model(hp, res_scale, rgb_range, **model_kwargs)
  return model, convert_edsr(state, model)


# ---- EDSR-PyTorch: RDN -------------------------------------------------------------------------

_RDN_HINT = ("Pass a checkpoint of EDSR-PyTorch's RDN (src/model/rdn.py) and build the model "
             "with its G0, D, C, G and scale.")


def rdn_hparams(state_or_path: StateOrPath, *, allow_pickle: bool = False) -> dict[str, Any]:
  """{"scale", "g0", "d", "c", "g", "n_colors"} of an EDSR-PyTorch RDN checkpoint.

  Raises:
    ConfigError: not an RDN checkpoint.
  """
  state = _state(state_or_path, allow_pickle)
  sfe1 = _require(state, "SFENet1.weight", "RDN", _RDN_HINT)
  g0, n_colors = int(sfe1.shape[0]), int(sfe1.shape[1])
  d = _count(state, r"RDBs\.(\d+)\.LFF\.weight")
  c = _count(state, r"RDBs\.0\.convs\.(\d+)\.conv\.0\.weight")
  g = int(_require(state, "RDBs.0.convs.0.conv.0.weight", "RDN", _RDN_HINT).shape[0])
  up0 = _require(state, "UPNet.0.weight", "RDN", _RDN_HINT)
  if "UPNet.4.weight" in state:
    scale = 4
  else:
    r2 = int(up0.shape[0]) // g
    scale = {4: 2, 9: 3}.get(r2, 0)
    if not scale or int(up0.shape[0]) != r2 * g:
      raise ConfigError(f"The RDN checkpoint's 'UPNet.0.weight' has {int(up0.shape[0])} outputs; "
                        f"EDSR-PyTorch builds G * r * r (G = {g}, r = 2 or 3). {_RDN_HINT}")
  return {"scale": scale, "g0": g0, "d": d, "c": c, "g": g, "n_colors": n_colors}


def _rdn_key(path: Path) -> str:
  """jaxcompress RDN module path -> EDSR-PyTorch RDN module name."""
  top = path[0]
  fixed = {"sfe1": "SFENet1", "sfe2": "SFENet2", "gff_0": "GFF.0", "gff_1": "GFF.1",
           "up_0": "UPNet.0", "up_1": "UPNet.2"}
  if top in fixed:
    return fixed[top]
  if top == "up_out":  # UPNet = [conv, PS, conv] (x2, x3) or [conv, PS, conv, PS, conv] (x4)
    return "UPNet.{}"  # filled in by convert_rdn, which knows the scale
  m = re.fullmatch(r"rdb_(\d+)", top)
  if m:
    if path[1] == "lff":
      return f"RDBs.{m.group(1)}.LFF"
    return f"RDBs.{m.group(1)}.convs.{path[1].split('_')[1]}.conv.0"  # RDB_Conv = [conv, ReLU]
  raise KeyError(path)


def convert_rdn(state_or_path: StateOrPath, model: rdn_lib.RDN | None = None, *,
                allow_pickle: bool = False, dtype: Any = np.float32) -> dict[str, Any]:
  """Converts an EDSR-PyTorch RDN checkpoint into `{"params": ...}` of `rdn.RDN`.

  Args:
    state_or_path: state_dict or `.pt` path.
    model: the float `rdn.RDN`; None builds one from the checkpoint's shapes.
    allow_pickle: see `load_torch_checkpoint`.
    dtype: dtype of the returned arrays.

  Returns:
    {"params": ...} for `model.apply(variables, lr)`.

  Raises:
    ConfigError: a key missing or unused, or a shape mismatch (naming the key and the expected
      PyTorch shape).
  """
  state = _state(state_or_path, allow_pickle)
  if model is None:
    model = rdn_lib.RDN(**rdn_hparams(state))
  out_index = 4 if model.scale == 4 else 2

  def key(path: Path) -> str:
    return _rdn_key(path).format(out_index)

  x = jax.ShapeDtypeStruct((1, 8, 8, model.n_colors), jnp.float32)
  abstract = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), x)
  return _convert("RDN", state, abstract, key, _RDN_HINT, dtype)


def rdn_from_torch(state_or_path: StateOrPath, *, allow_pickle: bool = False,
                   **model_kwargs: Any) -> tuple[rdn_lib.RDN, dict[str, Any]]:
  """(`rdn.RDN` described by the checkpoint, its converted variables); kwargs override fields."""
  state = _state(state_or_path, allow_pickle)
  model = rdn_lib.RDN(**{**rdn_hparams(state), **model_kwargs})
  return model, convert_rdn(state, model)


def convert_sr_teacher(state_or_path: StateOrPath, *, allow_pickle: bool = False,
                       rgb_range: float = 255.0,
                       rgb_mean: Sequence[float] = edsr_lib.DIV2K_RGB_MEAN) -> dict[str, Any]:
  """The params of an EDSR-PyTorch EDSR or RDN checkpoint (told apart by its keys).

  What `config.pams.teacher_path=teacher.pt` loads (`jaxcompress.methods.pams.load_params`);
  the method then checks every shape against `config.model`. For EDSR the MeanShift constant
  must equal `rgb_mean * rgb_range` (the PAMS configs' DIV2K mean and range 255).

  Args:
    state_or_path: state_dict or `.pt` / `.pth` path.
    allow_pickle: see `load_torch_checkpoint`.
    rgb_range, rgb_mean: the EDSR mean shift the jaxcompress model applies.

  Returns:
    The params tree (no "params" wrapper).

  Raises:
    ConfigError: neither an EDSR nor an RDN checkpoint, or any error of `convert_edsr` /
      `convert_rdn`.
  """
  state = _state(state_or_path, allow_pickle)
  if "head.0.weight" in state:
    hp = edsr_hparams(state)
    model = edsr_lib.EDSR(scale=hp["scale"], n_resblocks=hp["n_resblocks"],
                          n_feats=hp["n_feats"], n_colors=hp["n_colors"], rgb_range=rgb_range,
                          rgb_mean=tuple(rgb_mean))
    return convert_edsr(state, model)["params"]
  if "SFENet1.weight" in state:
    return convert_rdn(state)["params"]
  raise ConfigError(f"The checkpoint is neither an EDSR-PyTorch EDSR ('head.0.weight') nor an RDN "
                    f"('SFENet1.weight'); its first keys are {sorted(state)[:5]}. Pass a teacher "
                    "saved by EDSR-PyTorch or PAMS.")


# ---- ABanditNAS ----------------------------------------------------------------------------------

_ABANDIT_HINT = ("Pass the checkpoint's genotype (ABANDIT_CIFAR_1 or ABANDIT_CIFAR_2 for the "
                 "released weights) and its C, layers, auxiliary and manual_denoising.")

# (flax parent class, flax child name) -> PyTorch child name, inside the released ops
# (`models/darts_ops_1.py`). ReLUConvBN.op and Conv.net are [ReLU, conv, BN]; SepConv.net is
# [Conv(depthwise), Conv]; DilConv.net is [ReLU, depthwise, 1x1, BN]; SepConv_M.net is
# [DilConv, DilConv]; DenoisingBlock.filterblock is [filter, BN] (the filter's parameters also
# appear under `filter.` since the same module is registered twice).
_ABANDIT_CHILD = {
    ("ReLUConvBN", "Conv_0"): "op.1", ("ReLUConvBN", "BatchNorm_0"): "op.2",
    ("AbanditConv", "Conv_0"): "net.1", ("AbanditConv", "BatchNorm_0"): "net.2",
    ("AbanditSepConv", "AbanditConv_0"): "net.0", ("AbanditSepConv", "AbanditConv_1"): "net.1",
    ("Pool", "BatchNorm_0"): "bn",
    ("FactorizedReduce", "Conv_0"): "conv1", ("FactorizedReduce", "Conv_1"): "conv2",
    ("FactorizedReduce", "BatchNorm_0"): "bn",
    ("DenoisingBlock", "GaborConv_0"): "filterblock.0",
    ("DenoisingBlock", "BatchNorm_0"): "filterblock.1",
    ("DilConv", "Conv_0"): "net.1", ("DilConv", "Conv_1"): "net.2",
    ("DilConv", "BatchNorm_0"): "net.3",
    ("SepConv", "DilConv_0"): "net.0", ("SepConv", "DilConv_1"): "net.1",
    # `NetworkCIFAR.stem` = [conv, BN]; `AuxiliaryHeadCIFAR.features` = [ReLU, AvgPool, conv, BN,
    # ReLU, conv, BN, ReLU] and its `classifier`.
    ("_Stem", "Conv_0"): "0", ("_Stem", "BatchNorm_0"): "1",
    ("AuxiliaryHead", "Conv_0"): "features.2", ("AuxiliaryHead", "BatchNorm_0"): "features.3",
    ("AuxiliaryHead", "Conv_1"): "features.5", ("AuxiliaryHead", "BatchNorm_1"): "features.6",
    ("AuxiliaryHead", "Dense_0"): "classifier",
}
_GABOR_ALIAS = re.compile(r"^(.*)\.filter\.(Lambda|theta|psi|sigma|gamma)$")


def _class_of(name: str) -> str:
  return re.sub(r"_\d+$", "", name)


def _cell_op_names(model: Any, layer: int) -> dict[str, str]:
  """flax name of each op module of cell `layer` -> its PyTorch name (`_ops.j`, `denoseblock`).

  `EvalCell` builds ReLUConvBN, then one op per node, then the optional denoising block, and
  flax names each `<Class>_<count>`; replaying the construction gives the same names.
  """
  from jaxcompress.nas import abandit_network as an  # pylint: disable=g-import-not-at-top
  from jaxcompress.nas import robust_ops  # pylint: disable=g-import-not-at-top
  reduction = layer in an.reduction_layers(model.layers)
  k = an.cell_index(layer, model.layers, model.genotype.num_cells)
  counts: dict[str, int] = {"ReLUConvBN": 1}
  names = {"ReLUConvBN_0": "preprocess1"}
  for j, (op_name, idx) in enumerate(model.genotype.cells[k]):
    stride = 2 if reduction and idx < 1 else 1
    cls = type(robust_ops.ABANDIT_OPS[op_name](1, stride, True)).__name__
    names[f"{cls}_{counts.get(cls, 0)}"] = f"_ops.{j}"
    counts[cls] = counts.get(cls, 0) + 1
  names[f"DenoisingBlock_{counts.get('DenoisingBlock', 0)}"] = "denoseblock"
  return names


def _abandit_key_fn(model: Any) -> Callable[[Path], str]:
  cells: dict[int, dict[str, str]] = {}

  def key(path: Path) -> str:
    top = path[0]
    m = re.fullmatch(r"cell_(\d+)", top)
    if m:
      i = int(m.group(1))
      if i not in cells:
        cells[i] = _cell_op_names(model, i)
      parts, parent, rest = [f"cells.{i}", cells[i][path[1]]], _class_of(path[1]), path[2:]
    elif top == "classifier":
      return "classifier"
    elif top in ("_Stem_0", "auxiliary_head"):
      parts = ["stem" if top == "_Stem_0" else "auxiliary_head"]
      parent, rest = ("_Stem" if top == "_Stem_0" else "AuxiliaryHead"), path[1:]
    else:
      raise KeyError(path)
    for name in rest:
      parts.append(_ABANDIT_CHILD[(parent, name)])
      parent = _class_of(name)
    return ".".join(parts)

  return key


def convert_abandit_network(state_or_path: StateOrPath, model: Any, *,
                            allow_pickle: bool = False, input_size: int = 32,
                            dtype: Any = np.float32) -> dict[str, Any]:
  """Converts a released ABanditNAS `NetworkCIFAR` checkpoint into `AbanditNetwork` variables.

  Args:
    state_or_path: the `.pth.tar` (`{"model": state_dict}` of a DataParallel model, as
      `defenses/defense_all.py` loads it) or a state_dict.
    model: the `jaxcompress.nas.abandit_network.AbanditNetwork` with the checkpoint's genotype,
      C, layers, num_classes, auxiliary and manual_denoising (the official `mannul`).
    allow_pickle: see `load_torch_checkpoint`.
    input_size: square input side used to trace the model (32 for CIFAR).
    dtype: dtype of the returned floating-point arrays.

  Returns:
    {"params": ..., "batch_stats": ...} for `model.apply(variables, x, train=False)` (inputs in
    [0, 1]; the model normalises them, as the official `Normalize` layer).

  Raises:
    ConfigError: a key missing or unused (e.g. another genotype or `mannul` setting), or a
      shape mismatch, naming the key and the expected PyTorch shape.
  """
  state = _state(state_or_path, allow_pickle)
  in_channels = len(model.mean)
  x = jax.ShapeDtypeStruct((1, input_size, input_size, in_channels), jnp.float32)
  abstract = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), x)

  def accepted(k: str) -> bool:  # the Gabor filter's parameters, registered a second time
    m = _GABOR_ALIAS.match(k)
    return bool(m) and f"{m.group(1)}.filterblock.0.{m.group(2)}" in state

  return _convert("ABanditNAS", state, abstract, _abandit_key_fn(model), _ABANDIT_HINT, dtype,
                  accepted)


def abandit_network_from_torch(state_or_path: StateOrPath, genotype: Any, *,
                               allow_pickle: bool = False, input_size: int = 32,
                               **model_kwargs: Any) -> tuple[Any, dict[str, Any]]:
  """The `AbanditNetwork` a released checkpoint describes, and its converted variables.

  C (stem width / 3), layers, num_classes, auxiliary (an `auxiliary_head.*` entry) and
  manual_denoising (a `denoseblock` entry) are read from the checkpoint; the genotype is not
  recoverable from weights (pools have none) and must be given.

  Args:
    state_or_path: `.pth.tar` path or state_dict.
    genotype: a released name ("ABANDIT_CIFAR_1", "ABANDIT_CIFAR_2"), JSON, dict or
      `AbanditGenotype` (`abandit_network.get_genotype`).
    allow_pickle: see `load_torch_checkpoint`.
    input_size: square input side (32 for CIFAR).
    **model_kwargs: override or add `AbanditNetwork` fields (mean, std, drop_path_prob, ...).

  Returns:
    (model, {"params": ..., "batch_stats": ...}).

  Raises:
    ConfigError: the checkpoint is not an ABanditNAS network, or any `convert_abandit_network`
      error.
  """
  from jaxcompress.nas import abandit_network as an  # pylint: disable=g-import-not-at-top
  state = _state(state_or_path, allow_pickle)
  stem = _require(state, "stem.0.weight", "ABanditNAS", _ABANDIT_HINT)
  fc = _require(state, "classifier.weight", "ABanditNAS", _ABANDIT_HINT)
  try:
    geno = an.get_genotype(genotype)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  kwargs = dict(genotype=geno, C=int(stem.shape[0]) // 3,
                layers=_count(state, r"cells\.(\d+)\..*"), num_classes=int(fc.shape[0]),
                auxiliary=any(k.startswith("auxiliary_head.") for k in state),
                manual_denoising=any(".denoseblock." in k for k in state))
  if int(stem.shape[1]) != 3 and "mean" not in model_kwargs:
    raise ConfigError(f"The ABanditNAS checkpoint's stem reads {int(stem.shape[1])} channels; "
                      "pass mean= and std= of that many channels (e.g. abandit_network."
                      "MNIST_MEAN / MNIST_STD).")
  kwargs.update(model_kwargs)
  model = an.AbanditNetwork(**kwargs)
  return model, convert_abandit_network(state, model, input_size=input_size)
