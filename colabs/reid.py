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
# # MEB-Net: mutual mean-teaching of three experts for unsupervised re-ID adaptation (arXiv 2007.01546)
#
# Three heterogeneous experts (a re-ID ResNet, a DenseNet and a MobileNetV2) are pretrained on a
# labelled source domain, then adapt to an unlabelled target domain: each epoch starts by
# clustering the experts' averaged target features into pseudo identities, and the experts teach
# each other through their mean-teacher copies, weighted by their authority (the inverse of
# their feature scatter). The data are offline synthetic persons (`synthetic_reid`: procedural
# patterns seen by 6 cameras) in two domain styles. The same run is one command:
# `python -m launch.main --config=configs/mebnet/quick.py --workdir=...`; `QUICKSTART_ARG=quick`,
# used by the tests, shrinks it to a few steps per stage with narrow experts, too few to adapt
# anything. The paper's rows are `configs/mebnet/duke2market.py` and `configs/mebnet/market2duke.py`.

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

from configs.mebnet import quick  # noqa: E402
from jaxcompress import reid  # noqa: E402
from jaxcompress.data import sources, transforms  # noqa: E402
from jaxcompress.train import checkpoint as checkpoint_lib  # noqa: E402
from jaxcompress.train import evaluation, loop  # noqa: E402
from jaxcompress.train import stages as stages_lib  # noqa: E402

config = quick.get_config(os.environ.get("QUICKSTART_ARG") or None)
workdir = tempfile.mkdtemp(prefix="jaxcompress_mebnet_")
print(jax.devices())

# %% [markdown]
# ## The two domains
# Persons of the labelled source domain (top) and of the unlabelled target domain (bottom; other
# persons, as in a real cross-dataset pair), three views each by different cameras: the target
# style changes colour cast, brightness, contrast, blur, noise and background.

# %%
transforms.load_providers()  # registers the offline re-ID sources
kwargs = dict(config.stages["source_resnet"].data.source_kwargs)
source_kwargs = {k: v for k, v in kwargs.items() if k != "domain"}
domains = {d: sources.get("synthetic_reid", "train", domain=d, **source_kwargs)
           for d in ("source", "target")}
fig, axes = plt.subplots(2, 8, figsize=(10, 3.2))
for row, (domain, src) in enumerate(domains.items()):
  for col in range(8):
    ex = src[col * 3]
    axes[row, col].imshow(ex["image"])
    axes[row, col].set_title(f"{domain[0]} id {ex['label']} cam {ex['camera']}", fontsize=7)
    axes[row, col].axis("off")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "domains.png"))

# %% [markdown]
# ## Pretrain the experts, adapt, report
# Stages in `workdir`: `source_resnet`, `source_densenet`, `source_mobilenet` (labelled source,
# evaluated on the target: the source-only mAP), `adapt` (clustering + mutual mean teaching) and
# `report` (`reid_report.json`).

# %%
for name in config.stage_order:
  if "report" not in config.stages[name]:
    config.stages[name].progress = "lines"
out = loop.run(config, workdir)
with open(os.path.join(workdir, "reid_report.json")) as f:
  report = json.load(f)
print(json.dumps(report, indent=2))

# %% [markdown]
# ## Pseudo-label quality and every expert's mAP per epoch
# NMI between the epoch's clusters and the true (hidden) target identities, from the clustering
# hook's log; each EMA expert's target mAP after the epoch, from `experts.jsonl`.

# %%
adapt_dir = os.path.join(workdir, "adapt")
with open(os.path.join(adapt_dir, "metrics.jsonl")) as f:
  clusters = [r for r in map(json.loads, f) if r["split"] == "cluster"]
with open(os.path.join(adapt_dir, "experts.jsonl")) as f:
  experts = [json.loads(line) for line in f]
labels = list(config.stages["adapt"].mebnet.experts)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(range(len(clusters)), [r["nmi"] for r in clusters], "o-")
ax1.set(xlabel="epoch", ylabel="NMI", title="pseudo labels vs true identities")
for i, expert in enumerate(labels):
  ax2.plot([r["epoch"] for r in experts], [r[f"expert{i}"]["mAP"] for r in experts], "o-",
           label=expert["name"])
ax2.set(xlabel="epoch", ylabel="target mAP", title="EMA experts")
ax2.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "adaptation.png"))
print("NMI per epoch", [round(r["nmi"], 3) for r in clusters])

# %% [markdown]
# ## A ranked gallery
# The adapted evaluated expert's features of the target query and gallery splits (its final
# checkpoint, restored), Euclidean distances of L2-normalised features, and the standard
# protocol: gallery images of the query's identity seen by the query's camera are skipped.
# Green: same identity; red: another one. Then the same ranking after k-reciprocal re-ranking.

# %%
stage_dirs = {s: os.path.join(workdir, s) for s in stages_lib.stage_order(config)}
adapt_config = stages_lib.stage_config(config, "adapt", stage_dirs)
setup = loop.build(adapt_config, adapt_dir)
checkpointer = checkpoint_lib.Checkpointer(adapt_dir, async_save=False)
state = loop.initial_state(setup, checkpointer)
checkpointer.close()
evaluator_set = evaluation.Evaluation(adapt_config, setup.method, setup.mesh, 1, setup.options,
                                      setup.step_options)
retrieval = evaluator_set.evaluators[0]
query, gallery = (evaluator_set.outputs(retrieval, state, s) for s in ("query", "gallery"))


def normalized(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


qf, gf = normalized(query["features"]), normalized(gallery["features"])
dist = np.asarray(reid.euclidean_dist(qf, gf))
reranked = reid.re_ranking(dist, np.asarray(reid.euclidean_dist(qf, qf)),
                           np.asarray(reid.euclidean_dist(gf, gf)), k1=6, k2=3)
qid, gid, qcam, gcam = (np.asarray(x) for x in (query["ids"], gallery["ids"], query["cams"],
                                                  gallery["cams"]))
for name, d in (("euclidean", dist), ("re-ranked", reranked)):
  m_ap, cmc = reid.evaluate(d, qid, gid, qcam, gcam, topk=10)
  print(f"{name:10s} mAP {m_ap:.3f} rank-1 {cmc[0]:.3f} rank-5 {cmc[4]:.3f}")

query_images = sources.get("synthetic_reid", "query", domain="target", **source_kwargs)
gallery_images = sources.get("synthetic_reid", "gallery", domain="target", **source_kwargs)
shown, top = (0, 7, 15), 6
fig, axes = plt.subplots(2 * len(shown), top + 1, figsize=(9, 2.4 * 2 * len(shown)))
for block, (name, d) in enumerate((("euclidean", dist), ("re-ranked", reranked))):
  for r, q in enumerate(shown):
    row = axes[block * len(shown) + r]
    row[0].imshow(query_images[q]["image"])
    row[0].set_title(f"{name}\nquery id {qid[q]}", fontsize=7)
    valid = ~((gid == qid[q]) & (gcam == qcam[q]))
    order = [g for g in np.argsort(d[q]) if valid[g]][:top]
    for c, g in enumerate(order, start=1):
      row[c].imshow(gallery_images[int(g)]["image"])
      color = "green" if gid[g] == qid[q] else "red"
      row[c].set_title(f"{c}: id {gid[g]} cam {gcam[g]}", fontsize=7, color=color)
      for spine in row[c].spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
    for ax in row:
      ax.set_xticks([])
      ax.set_yticks([])
fig.tight_layout()
fig.savefig(os.path.join(workdir, "ranked_gallery.png"))
