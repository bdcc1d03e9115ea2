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
# # CoGD: cogradient descent for bilinear problems (arXiv 2006.09142)
#
# Convolutional sparse coding is a bilinear problem: images = sum_k filters_k * codes_k, the codes
# sparse. FFCSC (Fourier-domain ADMM) alternates between the two factors; CoGD corrects the
# filters after each update using the codes (the released rule: `matlab_heuristic`). This colab
# learns 100 filters of 11 x 11 on 10 of scikit-image's photographs for reconstruction and
# inpainting (75 % of the pixels kept) with and without the correction, shows the filters and the
# results, and plots the asynchrony diagnostic of the paper's Fig. 1 (gradient norms of the two
# factors) on the synthetic bilinear problem. The same run is one command:
# `python -m launch.main --config=configs/cogd/csc_quick.py --workdir=...`; `QUICKSTART_ARG=quick`,
# used by the tests, shrinks it to seconds (8 filters of 5 x 5 on two 32 x 32 crops, too short to
# learn anything). Channel pruning with CoGD is `configs/cogd/prune_quick.py`.

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

from configs.cogd import csc_quick  # noqa: E402
from jaxcompress.optim import cogd  # noqa: E402
from jaxcompress.train import loop  # noqa: E402

config = csc_quick.get_config(os.environ.get("QUICKSTART_ARG") or None)
workdir = tempfile.mkdtemp(prefix="jaxcompress_cogd_")
print(jax.devices())

# %% [markdown]
# ## Learn the filters, both tasks, three hooks
# Two report stages in `workdir` (`reconstruction`, `inpainting`), each running FFCSC without a
# correction (`none`), with the rule as released (`matlab_heuristic`, whose uint8 loop counter
# saturates) and with that rule without the saturation. `cogd_table.json` is the paper's table.

# %%
loop.run(config, workdir)
with open(os.path.join(workdir, "cogd_table.json")) as f:
  table = json.load(f)
print(f"{'task':15s} {'hook':30s} {'PSNR_bt':>8s} {'SSIM_bt':>8s}")
for task, rows in table.items():
  for hook, row in rows.items():
    print(f"{task:15s} {hook:30s} {row['psnr']:8.3f} {row['ssim']:8.4f}")

# %% [markdown]
# ## Learned filters
# The first 48 filters of each hook, reconstruction task.

# %%
hooks = list(table["reconstruction"])
fig, axes = plt.subplots(1, len(hooks), figsize=(4 * len(hooks), 3.4))
for ax, hook in zip(axes, hooks):
  filters = np.load(os.path.join(workdir, "reconstruction", f"{hook}_result.npz"))["filters"][:48]
  cols = 8
  rows_n = -(-len(filters) // cols)
  s = filters.shape[-1]
  grid = np.full((rows_n * (s + 1), cols * (s + 1)), np.nan)
  for i, f in enumerate(filters):
    r, c = divmod(i, cols)
    grid[r * (s + 1):r * (s + 1) + s, c * (s + 1):c * (s + 1) + s] = f / (np.abs(f).max() + 1e-12)
  ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
  ax.set_title(hook)
  ax.axis("off")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "filters.png"))

# %% [markdown]
# ## Reconstruction and inpainting
# The first image of each task: the result of FFCSC and of the released rule.

# %%
fig, axes = plt.subplots(2, 2, figsize=(6, 6))
for i, task in enumerate(("reconstruction", "inpainting")):
  for j, hook in enumerate(("none", "matlab_heuristic")):
    image = np.load(os.path.join(workdir, task, f"{hook}_result.npz"))["reconstruction"][0]
    axes[i, j].imshow(image, cmap="gray")
    axes[i, j].set_title(f"{task}, {hook}\nPSNR {table[task][hook]['psnr']:.2f}", fontsize=9)
    axes[i, j].axis("off")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "results.png"))

# %% [markdown]
# ## The asynchrony diagnostic
# On the synthetic bilinear problem b = A* x* + noise (`cogd.synthetic_bilinear_problem`),
# alternating proximal gradient with and without the released correction of A
# (`cogd.run_bilinear`): the gradient norm of each factor per iteration, and the objective.

# %%
b, a_star, x_star = cogd.synthetic_bilinear_problem(jax.random.PRNGKey(0))
a0 = jax.random.normal(jax.random.PRNGKey(100), a_star.shape) / 8  # the test suite's start
x0 = np.zeros(x_star.shape, np.float32)
steps = 20 if os.environ.get("QUICKSTART_ARG") else 200
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
for variant in ("none", "matlab_heuristic"):
  _, _, trace = cogd.run_bilinear(a0, x0, b, lam=0.1, mu=0.01, num_steps=steps, variant=variant)
  axes[0].semilogy(np.asarray(trace.grad_norm_a), label=variant)
  axes[1].semilogy(np.asarray(trace.grad_norm_x), label=variant)
  axes[2].semilogy(np.asarray(trace.objective), label=variant)
  print(f"{variant:18s} final objective {float(trace.objective[-1]):.4f}")
for ax, title in zip(axes, ("gradient norm of A", "gradient norm of x", "objective")):
  ax.set(xlabel="iteration", title=title)
  ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "asynchrony.png"))
