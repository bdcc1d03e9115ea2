# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # DSM: decoupling the scene and the motion in video self-supervision (arXiv 2009.05757)
#
# Pretrain a 3-D network on unlabelled videos two ways with the same budget, DSM (MoCo's queue
# plus a positive whose local appearance is warped and a negative from the same video at another
# time) and plain MoCo, then ask each frozen backbone, with a linear classifier, for the motion
# class of videos whose scene no longer agrees with it. The data are offline scene-biased videos
# (`moving_squares`): a square moving in one of four directions over one of four scenes, the
# scene agreeing with the direction in 90 % of the training videos and independent of it in the
# test videos. The same run is one command:
# `python -m launch.main --config=configs/dsm/quick.py --workdir=...`; `QUICKSTART_ARG=quick`,
# used by the tests, shrinks it to a few steps per stage, too few to learn anything. The paper's
# rows are `configs/dsm/i3d_ucf101.py` (`:dsm`, `:moco`, `:triplet`, `:random`) and `configs/dsm/c3d_ucf101_retrieval.py`.

# %%
# Makes `jaxcompress` importable: from an installed wheel (`pip install jaxcompress-*.whl`), or
# from a checkout of the repository when the notebook runs inside it (the folder holding
# `setup.py` goes on `sys.path`, so its `configs/` import too).
import os
import sys

try:
  import jaxcompress
except ImportError:
  _root = os.path.abspath(os.getcwd())
  while not os.path.exists(os.path.join(_root, "setup.py")) and os.path.dirname(_root) != _root:
    _root = os.path.dirname(_root)
  if not os.path.exists(os.path.join(_root, "setup.py")):
    print("jaxcompress is not installed and this notebook is not inside a checkout of the repository: "
          "run `pip install -e .` in the checkout (or `pip install jaxcompress-*.whl`), then rerun.")
    raise
  sys.path.insert(0, _root)
  import jaxcompress
print("jaxcompress", jaxcompress.__version__, "imported from", os.path.dirname(jaxcompress.__file__))

# %%
import json
import tempfile

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from skimage import data as skdata  # noqa: E402
from skimage.transform import resize  # noqa: E402

from configs.dsm import quick  # noqa: E402
from jaxcompress import selfsup  # noqa: E402
from jaxcompress.data import sources, transforms  # noqa: E402
from jaxcompress.train import loop  # noqa: E402

config = quick.get_config(os.environ.get("QUICKSTART_ARG") or None)
workdir = tempfile.mkdtemp(prefix="jaxcompress_dsm_")
print(jax.devices())

# %% [markdown]
# ## The spatial local disturbance
# `selfsup.dsm_warp` moves the pixels around 1 to 3 random centres (official `GenPositive`,
# drawn by `selfsup.sample_warp_points` at the official 224 x 224 ranges): the clip keeps its
# motion, its local appearance changes. Shown on a photograph, then on the toy videos' frames.

# %%
photo = (resize(skdata.astronaut(), (224, 224)) * 255).astype(np.uint8)
points = selfsup.sample_warp_points(np.random.default_rng(3), 224, 224)
warped = np.asarray(selfsup.dsm_warp(photo[None, None], points))[0, 0]
transforms.load_providers()
videos = sources.get("moving_squares", "train", num_videos=8)
video = videos[0]["video"]
fig, axes = plt.subplots(2, 4, figsize=(10, 5))
axes[0, 0].imshow(photo)
axes[0, 0].set_title("photograph")
axes[0, 1].imshow(warped)
axes[0, 1].set_title(f"warped, {len(points)} centres")
axes[0, 2].imshow(np.abs(warped.astype(int) - photo.astype(int)).sum(-1) > 0, cmap="gray")
axes[0, 2].set_title("pixels that moved")
axes[0, 3].axis("off")
for t in range(4):
  axes[1, t].imshow(video[4 * t])
  axes[1, t].set_title(f"toy video, frame {4 * t}")
for ax in axes.ravel():
  ax.set_xticks([])
  ax.set_yticks([])
fig.tight_layout()
fig.savefig(os.path.join(workdir, "warp.png"))
print("class", videos[0]["label"], "scene", videos[0]["scene"], "points", points)

# %% [markdown]
# ## Pretrain DSM and MoCo, probe both and a random backbone
# Six stages in `workdir`: `pretrain_dsm`, `pretrain_moco`, a linear probe on each frozen
# backbone and on a randomly initialised one (trained on the scene-biased labels, tested on the
# decorrelated videos, 3 clips per video), and `report` (`dsm_report.json`).

# %%
for name in config.stage_order:
  config.stages[name].progress = "lines"
out = loop.run(config, workdir)
with open(os.path.join(workdir, "dsm_report.json")) as f:
  report = json.load(f)
print(json.dumps(report, indent=2))

# %% [markdown]
# ## InfoNCE during pretraining
# DSM's logits have one more column than MoCo's (the intra-video negative), so its loss starts
# higher: ln(K + 2) against ln(K + 1) when every similarity is equal.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for stage in ("pretrain_dsm", "pretrain_moco"):
  with open(os.path.join(workdir, stage, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train = [r for r in rows if r["split"] == "train"]
  ax.plot([r["step"] for r in train], [r["loss"] for r in train], label=stage)
ax.set(xlabel="step", ylabel="InfoNCE", title="pretraining loss")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "infonce.png"))

# %% [markdown]
# ## The comparison
# Video accuracy of the linear probes on the decorrelated test videos (chance: 0.25).

# %%
labels = ["dsm", "moco", "random_init"]
values = [report[f"{k}_accuracy"] for k in labels]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.bar(labels, values)
ax.axhline(0.25, color="gray", linestyle="--", label="chance")
ax.set(ylabel="video accuracy", ylim=(0, 1), title="linear probe, decorrelated test")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "comparison.png"))
for k, v in zip(labels, values):
  print(f"{k:12s} {v:.3f}")
