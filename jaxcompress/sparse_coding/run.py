"""One CSC experiment from a plain config dict: data, FFCSC with a CoGD hook, metrics.

The experiment of the CoGD sparse-coding table (Zhuo et al., CVPR 2020, arXiv 2006.09142;
github.com/bczhangbczhang/CoGD, `CSC/learn_kernels_2D.m` for reconstruction,
`CSC/learn_kernels_2D_sparse.m` for inpainting), for configs and colabs to call:

  >>> out = run_csc({"task": "inpainting", "correction": "matlab_heuristic"})
  >>> out["psnr"], out["ssim"]

Keys (defaults = the released setting):
  task ["reconstruction"]: or "inpainting" (each pixel kept with probability `keep` [0.75]).
  images ["skimage"]: "skimage" (offline photographs) or a folder of 100x100 images.
  num_images [10], image_size [100] (skimage only), edge_taper [False].
  correction ["matlab_heuristic"]: "none" | "matlab_heuristic" | "paper" (raises).
  saturate [True], released_decoding [True]: sub-flags of the heuristic.
  rollback ["released"]: or "monotone" / "off".
  num_filters [100], filter_size [11], lambda_residual [1.0], lambda_prior [1.0].
  num_iters [20], num_iters_d [10], num_iters_z [10].
  seed [0]: initialisation; mask_seed [0]: inpainting mask.
  dtype ["float64"]: or "float32".

Returns a dict of Python floats and lists: `psnr`, `ssim` (means over images, as the released
drivers print), `psnr_per_image`, `ssim_per_image`, `objective` (per outer iteration), `psnr_history`,
`rolled_back`, `filter_change`, `code_change`, `wall_time_s`, and `filters` (K, s, s) and
`reconstruction` (N, h, w) as NumPy arrays.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.sparse_coding import data, ffcsc, metrics

DEFAULTS: dict[str, Any] = dict(
    task="reconstruction", images="skimage", num_images=10, image_size=100, edge_taper=False,
    correction="matlab_heuristic", saturate=True, released_decoding=True, rollback="released",
    num_filters=100, filter_size=11, lambda_residual=1.0, lambda_prior=1.0, num_iters=20,
    num_iters_d=10, num_iters_z=10, keep=0.75, seed=0, mask_seed=0, dtype="float64")


def load_images(cfg: dict) -> np.ndarray:
  """The prepared (N, h, w) images of `cfg["images"]`."""
  taper = cfg["filter_size"] if cfg["edge_taper"] else None
  if cfg["images"] == "skimage":
    return data.skimage_photos(cfg["num_images"], cfg["image_size"],
                               edge_taper_filter_size=taper)
  return data.load_image_folder(cfg["images"], cfg["num_images"], edge_taper_filter_size=taper)


def run_csc(config: dict) -> dict:
  """Runs one reconstruction or inpainting experiment (see module docstring for the keys)."""
  unknown = set(config) - set(DEFAULTS)
  if unknown:
    raise ValueError(f"unknown run_csc keys {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
  cfg = {**DEFAULTS, **config}
  if cfg["task"] not in ("reconstruction", "inpainting"):
    raise ValueError(f"task must be 'reconstruction' or 'inpainting', got {cfg['task']!r}.")
  if cfg["dtype"] not in ("float32", "float64"):
    raise ValueError(f"dtype must be 'float32' or 'float64', got {cfg['dtype']!r}.")
  clean = load_images(cfg)
  mask = None
  if cfg["task"] == "inpainting":
    mask = data.inpainting_mask(clean.shape, cfg["keep"], cfg["mask_seed"])
  start = time.time()
  with jax.enable_x64(cfg["dtype"] == "float64"):
    dtype = jnp.dtype(cfg["dtype"])
    b = jnp.asarray(clean if mask is None else clean * mask, dtype)
    res = ffcsc.learn_filters(
        b, jax.random.PRNGKey(cfg["seed"]), mask=None if mask is None else jnp.asarray(mask, dtype),
        clean=jnp.asarray(clean, dtype), num_filters=cfg["num_filters"],
        filter_size=cfg["filter_size"], lambda_residual=cfg["lambda_residual"],
        lambda_prior=cfg["lambda_prior"], num_iters=cfg["num_iters"],
        num_iters_d=cfg["num_iters_d"], num_iters_z=cfg["num_iters_z"],
        correction=cfg["correction"], saturate=cfg["saturate"],
        released_decoding=cfg["released_decoding"], rollback=cfg["rollback"])
    psnr = np.asarray(metrics.psnr_bt(jnp.asarray(clean, dtype), res.reconstruction))
    ssim = np.asarray(metrics.ssim_bt(jnp.asarray(clean, dtype), res.reconstruction))
    hist = jax.tree_util.tree_map(np.asarray, res.history)
  r = cfg["filter_size"] // 2
  return dict(
      psnr=float(psnr.mean()), ssim=float(ssim.mean()), psnr_per_image=psnr.tolist(),
      ssim_per_image=ssim.tolist(), objective=hist.objective.tolist(),
      psnr_history=hist.psnr.tolist(), rolled_back=hist.rolled_back.astype(bool).tolist(),
      filter_change=hist.filter_change.tolist(), code_change=hist.code_change.tolist(),
      wall_time_s=time.time() - start, filters=np.asarray(res.filters),
      reconstruction=np.asarray(res.reconstruction)[:, r:-r, r:-r], config=cfg)
