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
# # DMAD: differentiable masks and co-attention distillation for GANs (arXiv 2011.08382)
#
# Compress a CycleGAN generator the DMAD way, on scikit-image's photographs (offline): train the
# full model (the teacher), search channel masks whose bound anneals to 0 until the generator the
# masks imply fits a MACs target, cut the generator down to a really smaller network, fine-tune
# it with co-attention distillation from the teacher's generator *and* discriminator (and, for
# an honest comparison, without), then compare sizes and quality. The same run is one command:
# `python -m launch.main --config=configs/dmad/quick_cyclegan.py --workdir=...` (about ten
# minutes on a 2-core CPU; `QUICKSTART_ARG=quick`, used by the tests, shrinks it to a few steps
# per stage, too few for the masks to move). The paper's
# rows are `configs/dmad/{horse2zebra,zebra2horse,summer2winter,winter2summer,...}.py`.

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
import numpy as np

from configs.dmad import quick_cyclegan
from jaxcompress import methods, prune
from jaxcompress.data import sources, transforms
from jaxcompress.train import checkpoint, loop, stages

config = quick_cyclegan.get_config(os.environ.get("QUICKSTART_ARG") or None)
workdir = tempfile.mkdtemp(prefix="jaxcompress_dmad_")
print(jax.devices())

# %% [markdown]
# ## Teacher -> search -> materialize -> fine-tune (distilled, undistilled) -> report
# Six stages, each in its own folder of `workdir`: `teacher` (plain CycleGAN), `search` (masks
# after every instance norm, sparsity penalties, the bound updated after each epoch, early stop
# at the MACs target), `materialize` (the pruned generators as smaller networks:
# `student.json` holds their widths), `distilled` / `undistilled` (fine-tuning the pruned
# students with and without distillation) and `report` (`dmad_report.json`).

# %%
for name in config.stage_order:
  config.stages[name].progress = "lines"
  # One device, a notebook's CPU or GPU (the batch of 8 also splits over 8 devices).
  config.stages[name].num_devices = 1
out = loop.run(config, workdir)
workdirs = {name: os.path.join(workdir, name) for name in config.stage_order}
with open(os.path.join(workdir, "dmad_report.json")) as f:
  report = json.load(f)
print(json.dumps(report, indent=2))

# %% [markdown]
# ## The search: bound and implied MACs over time
# At each bound update the search logs (split "dmad" of `search/metrics.jsonl`) the bound b of
# each generator and the MACs of the generator its masks imply (channels with m > -b). Once
# those MACs reach the target, that generator's masks are binarised and its bound pinned at 0.

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

with open(os.path.join(workdirs["search"], "metrics.jsonl")) as f:
  rows = [json.loads(line) for line in f]
updates = [r for r in rows if r["split"] == "dmad"]
train = [r for r in rows if r["split"] == "train"]   # the bound in force at each logged step
target = config.stages.search.dmad.macs_target
fig, (ax_bound, ax_macs) = plt.subplots(1, 2, figsize=(10, 3.2))
for g in ("G_A", "G_B"):
  ax_bound.plot([r["step"] for r in train], [r[f"bound_{g}"] for r in train], label=g)
  counted = [r for r in updates if f"implied_macs_{g}" in r]  # logged until the early stop
  ax_macs.plot([r["step"] for r in counted], [r[f"implied_macs_{g}"] / 1e9 for r in counted],
               "o-", label=g)
ax_macs.axhline(target / 1e9, color="gray", linestyle="--", label="target")
ax_bound.set(xlabel="step", ylabel="bound b", title="mask bound")
ax_macs.set(xlabel="step", ylabel="GMACs (1x3x256x256)", title="MACs the masks imply")
ax_bound.legend()
ax_macs.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "search.png"))
for r in updates:
  print(r)

# %% [markdown]
# Mask sparsity at the end of the search, per gate of G_A: the fraction of channels whose mask
# is off (m <= 0: pruned by `materialize`). The residual stream's gates (after "down2" and each
# block's second conv) share one width, kept where any of them keeps a channel.

# %%
def network_order(gate):
  """stem, down1, down2, the blocks in turn, up1, up2."""
  name = gate.split("/")[0].removesuffix("_gate")
  if name.startswith("block"):
    return (3, int(name[len("block"):]), gate)
  return ({"stem": 0, "down1": 1, "down2": 2, "up1": 4, "up2": 5}[name], 0, gate)


search_run = checkpoint.load_run_state(workdirs["search"])
masks = prune.mask_params(search_run["params"]["G_A"])
sparsity = {gate: float(np.mean(np.asarray(masks[gate]) <= 0))
            for gate in sorted(masks, key=network_order)}
for gate, value in sparsity.items():
  print(f"{gate:16s} {len(masks[gate]):4d} channels, {100 * value:5.1f}% off")
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(sparsity)), list(sparsity.values()))
ax.set_xticks(range(len(sparsity)), list(sparsity), rotation=60, ha="right")
ax.set(ylabel="fraction off", ylim=(0, 1), title="G_A mask sparsity after the search")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "sparsity.png"))

# %% [markdown]
# ## MACs per stage
# GAN convention (thop's count) on one 1x3x256x256 input: the teacher, the generator the search
# ended with (`search/dmad_search.json`), and the materialized student that both fine-tunings
# train (`materialize/student.json`).

# %%
with open(os.path.join(workdirs["search"], "dmad_search.json")) as f:
  searched = json.load(f)
with open(os.path.join(workdirs["materialize"], "student.json")) as f:
  student = json.load(f)
macs = {"teacher": report["teacher_macs"], "search (implied)": searched["G_A"]["macs"],
        "materialized student": student["G_A/macs"]}
for label, value in macs.items():
  print(f"{label:22s} {value / 1e9:7.3f} GMACs")
print(f"parameters: teacher {report['teacher_params']}, student {report['student_params']}; "
      f"MACs reduction {report['macs_reduction']:.2f}x")
metric = report["metric"]
for label in ("teacher", "distilled", "undistilled"):
  print(f"{label:12s} {metric} = {report.get(f'{label}/{metric}')}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(list(macs), [v / 1e9 for v in macs.values()])
ax.axhline(target / 1e9, color="gray", linestyle="--")
ax.set(ylabel="GMACs", title="G_A")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "macs.png"))

# %% [markdown]
# ## Side by side: input, teacher, pruned students
# The generators come back from the stages' checkpoints (`checkpoint.load_run_state`) into the
# methods' own networks: the teacher's full G_A, and the fine-tuning method's G_A built with the
# widths of `student.json`. The offline set knows the ideal translation of each held-out photo
# (its fixed colour map), shown last.

# %%
transforms.load_providers()
data = config.stages.teacher.data
source = sources.get_configured(data.name, "test", None, data.source_kwargs)
example_fn = transforms.get(data.transform, train=False, **dict(data.transform_kwargs))
examples = [example_fn(source[i], None) for i in range(4)]
x = np.stack([e["A"] for e in examples]).astype(np.float32)
columns = {"input": x}
for label in ("teacher", "distilled", "undistilled"):
  cfg = stages.stage_config(config, label, workdirs)
  method = methods.get(cfg.method)(cfg)
  run = checkpoint.load_run_state(workdirs[label])
  y, _ = method.net("G_A", run["params"], run.get("model_state", {}), x, train=False)
  columns[label] = np.asarray(y)
columns["ideal"] = np.stack([e["B_ref"] for e in examples])
fig, axes = plt.subplots(len(x), len(columns), figsize=(2.2 * len(columns), 2.2 * len(x)),
                         squeeze=False)
for j, (label, images) in enumerate(columns.items()):
  for i in range(len(x)):
    axes[i, j].imshow(np.clip((images[i] + 1) / 2, 0, 1))
    axes[i, j].axis("off")
  axes[0, j].set_title(label)
fig.tight_layout()
fig.savefig(os.path.join(workdir, "translations.png"))
print("figures saved in", workdir)
