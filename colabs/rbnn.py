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
# # RBNN: train a 1-bit ResNet-20, export real packed bits, serve them
#
# Rotated Binary Neural Network (Lin et al., NeurIPS 2020, arXiv 2009.13055) on scikit-learn's
# digits (real 8x8 handwritten digits, shipped offline): train the 1w1a ResNet-20 of
# `configs/rbnn/digits_resnet20.py`, plot accuracy and the per-epoch weight flip ratio, then
# `quant.export` the trained model to `uint32`-packed sign bits plus per-channel float scales
# and compare it with the float model: same predictions, size and latency. The same training run is
# `python -m launch.main --config=configs/rbnn/digits_resnet20.py --workdir=...`.

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
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcompress
from configs.rbnn import digits_resnet20
from jaxcompress import models, quant
from jaxcompress.data import augment, sources
from jaxcompress.train import loop

# `QUICKSTART_ARG=quick` (used by the tests) shrinks the run to 2 short epochs.
arg = os.environ.get("QUICKSTART_ARG") or None
config = digits_resnet20.get_config(arg)
if arg == "quick":
  config.data.batch_size = 128   # 11 steps per epoch: a smoke run of the whole notebook
  config.log_every = 11
config.progress = "lines"
workdir = tempfile.mkdtemp(prefix="jaxcompress_rbnn_")
print(jax.devices())

# %% [markdown]
# ## The model: RBNN convolutions inside, float stem and classifier

# %%
model = models.build(config.model.name, layers=config.model.layers,
                     num_classes=config.model.num_classes, **config.model.kwargs)
table = jaxcompress.summary(model, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), train=False)
print(table)

# %% [markdown]
# ## Train
# At the start of every epoch the method re-solves each layer's bi-rotation (R1, R2) and sets the
# sign surrogate's (t, k); `flip_ratio` is the fraction of binary weights whose sign changed since
# the previous epoch's start.

# %%
result = loop.run(config, workdir)
state = result["state"]
print("final eval:", result["eval"])

# %% [markdown]
# ## Accuracy and flip ratio per epoch (from metrics.jsonl)

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
train_rows = [r for r in rows if r["split"] == "train"]
eval_rows = [r for r in rows if r["split"] == "eval"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
for split, split_rows in (("train", train_rows), ("eval", eval_rows)):
  ax1.plot([r["step"] for r in split_rows], [r["accuracy"] for r in split_rows], marker="o",
           label=split)
ax1.set_xlabel("step")
ax1.set_ylabel("accuracy")
ax1.legend()
ax2.plot([r["step"] for r in train_rows], [r["flip_ratio"] for r in train_rows], marker="o",
         label="flip ratio (epoch to epoch)")
ax2.plot([r["step"] for r in train_rows], [r["rotation_flip_ratio"] for r in train_rows],
         marker="o", label="rotated vs unrotated sign")
ax2.set_xlabel("step")
ax2.set_ylabel("fraction of weight bits")
ax2.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "curves.png"))
print("curves saved to", os.path.join(workdir, "curves.png"))

# %% [markdown]
# ## Export: packed sign bits + per-channel scales (BatchNorms folded)

# %%
variables = {"params": state.params, **state.model_state}
test = sources.digits("test")
images = jnp.asarray(augment.normalize(test.images, config.data.mean, config.data.std))
labels = np.asarray(test.labels)
exported = quant.export(variables, model, images[:1], train=False)
sizes = quant.export_sizes(exported)
print(f"{len(exported.layers)} RBNN convs exported, {len(exported.folded)} BatchNorms folded")
print(f"binary kernels: {sizes['binary_kernel_bytes']:,} bytes packed vs "
      f"{sizes['binary_float_bytes']:,} bytes float32 ({sizes['binary_ratio']:.1f}x)")
float_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(variables))
print(f"whole model: {sizes['total_bytes']:,} bytes exported vs {float_bytes:,} bytes of "
      f"training variables ({float_bytes / sizes['total_bytes']:.1f}x)")

# %% [markdown]
# ## Same logits as the training-time forward, and latency
# The fair baseline is float serving of the same binary network (`quant.float_serving`: the
# exported model with every packed kernel unpacked to a float +-1 kernel, same folded
# BatchNorms); the training-time forward, which also recomputes the rotated weights each call,
# is shown too, labelled. `benchmarks/binary_serving.py` times both on 32x32 inputs.

# %%
train_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
packed_fn = quant.serve_fn(exported)
float_fn = quant.serve_fn(quant.float_serving(exported))
chunks = [images[i:i + 120] for i in range(0, len(images), 120)]   # 360 test digits
want = jnp.concatenate([train_fn(variables, c) for c in chunks])
got = jnp.concatenate([packed_fn(c) for c in chunks])
print(f"max |training forward - packed| logits: {float(jnp.max(jnp.abs(want - got))):.2e}")
print(f"test accuracy: training forward {np.mean(np.argmax(want, -1) == labels):.4f}, "
      f"packed {np.mean(np.argmax(got, -1) == labels):.4f}")


def best_time(fn, *args, reps=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


for batch in (1, 120):
  x = images[:batch]
  tp, tf = best_time(packed_fn, x), best_time(float_fn, x)
  tt = best_time(train_fn, variables, x)
  print(f"batch {batch:3d}: packed {tp * 1e3:.2f} ms vs float serving of the same network "
        f"{tf * 1e3:.2f} ms ({tf / tp:.2f}x); training-time forward {tt * 1e3:.2f} ms "
        f"({tt / tp:.2f}x)")
