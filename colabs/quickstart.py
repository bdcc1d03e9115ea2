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
# # jaxcompress quickstart
#
# Train a ResNet-20 on scikit-learn's digits (real 8x8 handwritten digits, shipped offline), print the
# model summary and plot the training curve. Everything here calls the library; the same run is
# `python -m launch.main --config=configs/baseline/digits_resnet20.py --workdir=...`.

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
import jax.numpy as jnp

import jaxcompress
from configs.baseline import digits_resnet20
from jaxcompress import models
from jaxcompress.train import loop

# `QUICKSTART_ARG=quick` (used by the tests) shrinks the run to a few epochs.
config = digits_resnet20.get_config(os.environ.get("QUICKSTART_ARG") or None)
config.progress = "lines"
workdir = tempfile.mkdtemp(prefix="jaxcompress_quickstart_")
print(jax.devices())

# %% [markdown]
# ## The model: parameters, bits, memory and MACs per layer

# %%
model = models.build(config.model.name, num_classes=config.model.num_classes)
table = jaxcompress.summary(model, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), train=False)
print(table)

# %% [markdown]
# ## Train (the engine writes config.json, metrics.jsonl, summary.txt, checkpoints/ to the workdir)

# %%
result = loop.run(config, workdir)
print("final eval:", result["eval"])

# %% [markdown]
# ## Training curve

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
for split in ("train", "eval"):
  points = [(r["step"], r["accuracy"]) for r in rows if r["split"] == split]
  plt.plot(*zip(*points), marker="o", label=split)
plt.xlabel("step")
plt.ylabel("accuracy")
plt.legend()
plt.savefig(os.path.join(workdir, "curve.png"))
print("curve saved to", os.path.join(workdir, "curve.png"))
