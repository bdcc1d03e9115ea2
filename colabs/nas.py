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
# # Architecture search: BNAS on digits, the found cell, and retraining it
#
# BNAS (Chen et al., arXiv 1911.10862) searches a DARTS cell with PC-DARTS (partial channels,
# edge normalisation) over XNOR-binarized ops and abandons one op per edge after every reduction
# phase, judged by the accuracy of sampled sub-networks. Here: a quick BNAS search on
# scikit-learn's digits, the derived cell as a picture, then the evaluation network built from
# `genotype.json` retrained from scratch (auxiliary head, drop path, cutout). The same pipeline
# from the command line:
#
# ```
# python -m launch.main --config=configs/bnas/digits_search.py --workdir=/tmp/bnas_digits
# python -m launch.main --config=configs/bnas/digits_eval.py \
#     --config.model.kwargs.genotype=/tmp/bnas_digits/genotype.json --workdir=/tmp/bnas_eval
# ```

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
import os
import tempfile

import jax

from configs.bnas import digits_eval, digits_search
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.train import loop

# `QUICKSTART_ARG=quick` (used by the tests) shrinks both runs to seconds of training.
QUICK = (os.environ.get("QUICKSTART_ARG") or "") == "quick"
root = tempfile.mkdtemp(prefix="jaxcompress_nas_")
print(jax.devices())

# %% [markdown]
# ## 1. BNAS search
# All 8 DARTS ops (7 reduction steps: 8 -> 1 per edge); quick mode: 2 ops, 1-node cells, 1 step.

# %%
search_config = digits_search.get_config("quick" if QUICK else None)
search_config.progress = "lines"
search_config.num_devices = 1
if QUICK:  # seconds: 1-node cells, 2 ops (1 removal), 2 epochs of 2 steps
  search_config.nas.steps = 1
  search_config.nas.multiplier = 1
  search_config.nas.primitives = ("max_pool_3x3", "sep_conv_3x3")
  search_config.nas.num_reductions = 1
  search_config.num_epochs = 2
  search_config.data.batch_size = 256
  search_config.nas.write_png = False
search_dir = os.path.join(root, "search")
search = loop.run(search_config, search_dir)
report = json.load(open(os.path.join(search_dir, "final_report.json")))
print("removals:", report["removals"], "| alive ops per normal edge:", report["alive_normal"])

# %% [markdown]
# ## 2. The found cells

# %%
genotype_path = os.path.join(search_dir, "genotype.json")
genotype = genotype_lib.from_json(open(genotype_path).read())
print(genotype)
for cell in ("normal", "reduce"):
  png = os.path.join(root, f"{cell}.png")
  if genotype_lib.plot_cell(getattr(genotype, cell), png, getattr(genotype, f"{cell}_concat"),
                            title=f"{cell} cell"):
    print("cell picture:", png)
    if not QUICK:
      from IPython.display import Image, display  # noqa: E402
      display(Image(png))

# %% [markdown]
# ## 3. Retrain the found cell as an XNOR evaluation network

# %%
config = digits_eval.get_config(("quick," if QUICK else "") + f"genotype={genotype_path}")
config.progress = "lines"
config.num_devices = 1
if QUICK:
  config.data.batch_size = 256
  config.num_epochs = 1
  config.model.kwargs.auxiliary = False
workdir = os.path.join(root, "eval")
result = loop.run(config, workdir)
print("retrained eval accuracy:", result["eval"]["accuracy"])
