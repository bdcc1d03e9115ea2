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
# # PAMS: quantized super-resolution (ECCV 2020, arXiv 2011.04212)
#
# Train a small full-precision EDSR x2 teacher on scikit-image's real photographs (offline), then
# 8-bit and 4-bit PAMS students initialised from it (learned activation max scales alpha, L1 + SKT
# distillation), compare them on held-out photos, look at crops, and export the 8-bit student to
# real int8 weights. The same run is one command:
# `python -m launch.main --config=configs/pams/quick.py --workdir=...` (about 3-4 CPU
# minutes; `QUICKSTART_ARG=quick`, used by the tests, shrinks it to a few steps per stage).

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
import os
import tempfile

import jax
import numpy as np

from configs.pams import quick
from jaxcompress import quant
from jaxcompress.data import sources, transforms
from jaxcompress.data.imresize import imresize
from jaxcompress.methods import pams
from jaxcompress.models import edsr
from jaxcompress.train import checkpoint, loop

config = quick.get_config(os.environ.get("QUICKSTART_ARG") or None)
workdir = tempfile.mkdtemp(prefix="jaxcompress_pams_")
print(jax.devices())

# %% [markdown]
# ## Teacher, then one student per bit width, then the table
# The config has four stages: `fp` (float L1 training), `8bit` / `4bit` (PAMS students loading
# the `fp` checkpoint as teacher and initial weights) and `table`, which scores every model and
# MATLAB bicubic on the held-out photographs with the paper's protocol (MATLAB Y channel, border
# shave = scale, outputs on the uint8 grid).

# %%
for name in config.stage_order:
  config.stages[name].progress = "lines"
out = loop.run(config, workdir)
report = out["stages"]["table"]
print(open(os.path.join(workdir, "pams_table.md")).read())
params = {label: checkpoint.load_run_state(os.path.join(workdir, label))["params"]
          for label in ("fp", "8bit", "4bit")}

# %% [markdown]
# ## Side-by-side crops: HR / bicubic / FP / 8-bit / 4-bit

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

transforms.load_providers()
scale = int(config.stages.table.model.kwargs.scale)
example = sources.get("sr_offline", "test", scale=scale)[0]
lr, hr = example["lr"], example["hr"]
predictors = pams.stage_predictors(config.stages.table, params)
outputs = {"HR": hr.astype(np.float64), "bicubic": imresize(lr, float(scale)).astype(np.float64)}
outputs.update({label: fn(lr[None].astype(np.float32))[0] for label, fn in predictors.items()})
size = min(96, hr.shape[0] // 2, hr.shape[1] // 2)
top, left = hr.shape[0] // 2 - size // 2, hr.shape[1] // 2 - size // 2
fig, axes = plt.subplots(1, len(outputs), figsize=(3 * len(outputs), 3.2))
for ax, (label, img) in zip(axes, outputs.items()):
  crop = np.clip(img[top:top + size, left:left + size], 0, 255).astype(np.uint8)
  ax.imshow(crop)
  psnr = report.get(f"{label}/psnr")
  ax.set_title(label if psnr is None else f"{label} {psnr:.2f} dB")
  ax.axis("off")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "crops.png"))
print("crops saved to", os.path.join(workdir, "crops.png"))

# %% [markdown]
# ## Real int8 export of the 8-bit student
# Integer weight levels with per-tensor steps, integer activations from the learned alphas;
# serving convolves int8 operands with int32 accumulation (`quant.serve_int8`).

# %%
student = edsr.EDSR(**dict(config.stages.table.model.kwargs), layers=edsr.pams_layers(bits=8))
x = lr[None].astype(np.float32)
exported = quant.export_int8({"params": params["8bit"]}, student, x)
int8_out = np.asarray(jax.jit(quant.serve_int8)(exported, x))
fake_quant = np.asarray(student.apply({"params": params["8bit"]}, x))
print("max |int8 serving - fake-quant| =", float(np.max(np.abs(int8_out - fake_quant))), "(of 255)")
print({k: round(v, 3) for k, v in quant.int8_sizes(exported).items()})
