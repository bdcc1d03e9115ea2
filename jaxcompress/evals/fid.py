"""Fréchet distance between two sets of features, collected over a split, computed at the end.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", arXiv:1706.08500, Eq. 6: ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).

Two modes, chosen by the config entry (`config.evals.<name>`, `type="fid"`):

* Features (no `inception_weights`): the method's `predict(state, batch)` returns the two
  feature sets under `real_key` and `fake_key` (default "real_features" and
  "fake_features"), e.g. the activations of a feature network of its own.
* Images (`inception_weights=<path>`): the honest FID of GAN papers. `predict` returns NHWC
  RGB images under `real_key` and `fake_key` (default "real_images" and "fake_images"), with
  values in `image_range` (default (-1, 1), a tanh generator's range). The evaluator's jitted
  per-batch function maps them to [0, 1], rounds them down to 8 bits as GAN-Compression's
  `util.tensor2im` does before saving or scoring an image (`quantize`, default True; clipped
  to the range first, and a 1e-3 tolerance so that images decoded from 8-bit files and
  normalised in float32 get their exact bytes back), tiles one-channel images to RGB, and
  computes the 2048-d pool3 features of pytorch-fid's Inception
  (`jaxcompress.models.fid_inception`: bilinear resize to 299, [-1, 1] input, FID weights
  `pt_inception-2015-12-05-6726825d.pth`) on device, at full float32 precision. The weights are
  read once, when the evaluator is built; they are constants of the compiled function.
  GAN-Compression (arXiv 2003.08936, `metric/__init__.py`, `get_fid`) and DMAD (arXiv
  2011.08382) score their generators this way.

In both modes `real_stats=<path.npz>` replaces the real features by precomputed statistics
(keys "mu" and "sigma", as pytorch-fid's `--save-stats` and `metrics.fid.save_statistics`
write them; GAN-Compression ships them per dataset), and `predict` need not return the real
key at all. `save_real_stats=<path.npz>` writes the statistics of the gathered real features
(process 0), to be passed as `real_stats` later. Example:

    config.evals.fid = dict(type="fid", split="test",
                            inception_weights="pt_inception-2015-12-05-6726825d.pth",
                            real_stats="horse2zebra_B.npz")

The metric is "fid", computed by `metrics.fid.frechet_distance` in float64 on the host
(every example of the split, padding dropped, whatever the number of devices); its 2048x2048
`sqrtm` takes from seconds to a minute or two of host CPU per evaluation, so choose `every`
accordingly.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import evals
from jaxcompress.errors import ConfigError

# Values within this much below an 8-bit level round up to it (float32 error of x / 127.5 - 1
# and back is ~1e-5 of a level), so an image decoded from uint8 keeps its bytes.
_QUANTIZE_TOL = 1e-3


class FrechetDistance(evals.Evaluator):
  """"fid" of the gathered fake features (or images) against the real ones of one split."""

  def __init__(self, name: str, method: Any, cfg: ml_collections.ConfigDict, every: int):
    super().__init__(name, method, cfg, every)
    from jaxcompress.metrics import fid  # pylint: disable=g-import-not-at-top
    weights = cfg.get("inception_weights", None)
    kind = "images" if weights else "features"
    self.real_key = cfg.get("real_key", f"real_{kind}")
    self.fake_key = cfg.get("fake_key", f"fake_{kind}")
    lo, hi = (float(v) for v in cfg.get("image_range", (-1.0, 1.0)))
    if not hi > lo:
      raise ConfigError(f"config.evals.{name}.image_range must be (low, high) with low < high, "
                        f"got {(lo, hi)}; use (-1, 1) for tanh outputs or (0, 1).")
    self.image_range = (lo, hi)
    self.quantize = bool(cfg.get("quantize", True))
    stats = cfg.get("real_stats", None)
    try:
      self.real_stats = fid.load_statistics(stats) if stats else None
    except ValueError as e:
      raise ConfigError(f"config.evals.{name}.real_stats: {e}") from e
    if weights and self.real_stats is not None and self.real_stats[0].shape != (2048,):
      raise ConfigError(
          f"config.evals.{name}.real_stats {stats!r} has {self.real_stats[0].shape[0]}-d "
          "statistics; Inception pool3 statistics are 2048-d (pytorch-fid --dims 2048).")
    self.combine = ({"fake": evals.GATHER} if self.real_stats is not None
                    else {"real": evals.GATHER, "fake": evals.GATHER})
    # Read last, after the cheap checks: converting the 95 MB file takes seconds.
    self._variables = None
    if weights:
      from jaxcompress.models import fid_inception  # pylint: disable=g-import-not-at-top
      self._variables = fid_inception.load_pytorch_fid(weights)

  def _features(self, images: jax.Array) -> jax.Array:
    """pool3 features of images in `image_range` (see the module docstring)."""
    from jaxcompress.models import fid_inception  # pylint: disable=g-import-not-at-top
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ConfigError(
          f"config.evals.{self.name}: predict's {self.fake_key!r}/{self.real_key!r} must be "
          f"NHWC images with 1 or 3 channels, got shape {images.shape}.")
    lo, hi = self.image_range
    x = (images.astype(jnp.float32) - lo) / (hi - lo)
    if self.quantize:
      x = jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0 + _QUANTIZE_TOL) / 255.0
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    # FID compares with statistics computed in float32; TF32/bf16 passes would shift it.
    with jax.default_matmul_precision("highest"):
      return fid_inception.pool3_features(self._variables, x)

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = self.method.predict(state, batch)
    keys = {"fake": self.fake_key}
    if self.real_stats is None:
      keys["real"] = self.real_key
    missing = [k for k in keys.values() if k not in out]
    if missing:
      raise ConfigError(
          f"config.evals.{self.name} reads {missing} from the method's predict, which returns "
          f"{sorted(out)}; set real_key/fake_key (or real_stats to skip the real key).")
    if self._variables is None:
      return {name: out[key] for name, key in keys.items()}
    images = {name: out[key] for name, key in keys.items()}
    if len(images) == 2 and images["fake"].shape == images["real"].shape:
      # One Inception pass over both sets.
      n = images["fake"].shape[0]
      feats = self._features(jnp.concatenate([images["fake"], images["real"]], axis=0))
      return {"fake": feats[:n], "real": feats[n:]}
    return {name: self._features(x) for name, x in images.items()}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    from jaxcompress.metrics import fid  # pylint: disable=g-import-not-at-top
    split = outputs[self.splits[0]]
    fake = np.asarray(split["fake"], np.float64).reshape(len(split["fake"]), -1)
    if self.real_stats is not None:
      mu_real, sigma_real = self.real_stats
    else:
      real = np.asarray(split["real"], np.float64).reshape(len(split["real"]), -1)
      mu_real, sigma_real = fid.feature_statistics(real)
      path = self.cfg.get("save_real_stats", None)
      if path and jax.process_index() == 0:
        fid.save_statistics(path, mu_real, sigma_real)
    return {"fid": float(fid.frechet_distance(mu_real, sigma_real,
                                              *fid.feature_statistics(fake)))}
