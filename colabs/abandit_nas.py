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
# # ABanditNAS: anti-bandit search for robust architectures
#
# Chen et al., "Anti-Bandit Neural Architecture Search for Model Defense" (ECCV 2020,
# [arXiv 2008.00698](https://arxiv.org/abs/2008.00698)). Every edge of every cell is a bandit
# over candidate ops (here: pooling, identity, Gabor filters, denoising blocks). Each sampled
# network is trained adversarially for one epoch; ops are sampled with p(k) proportional to
# exp(-LCB_k) (weak or rarely tried ops more often) and after K * T samples the op with the
# lowest UCB is abandoned on every edge.
#
# This notebook runs, on scikit-learn's digits (8x8, offline, CPU):
# 1. the search (`configs/abandit_nas/digits_search.py`) -> `genotype.json`;
# 2. PGD-7 adversarial training of the found network (`configs/abandit_nas/digits_eval.py`);
# 3. the robust accuracy table (clean, FGSM, MI-FGSM, PGD-7, PGD-20), against the same
#    network trained on clean images;
# 4. adversarial examples: clean digit, perturbation, adversarial digit with predictions.
#
# The same runs from a shell (S, E: two output directories):
# ```
# python -m launch.main --config=configs/abandit_nas/digits_search.py --workdir=S
# python -m launch.main --config=configs/abandit_nas/digits_eval.py \
#     --config.model.kwargs.genotype=S/genotype.json --workdir=E
# ```
# The full (non-quick) notebook takes about 5 minutes on a 2-core CPU.

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
import numpy as np

from configs.abandit_nas import digits_eval, digits_search
from jaxcompress.data import sources
from jaxcompress.methods import abandit_nas
from jaxcompress.nas import abandit_network
from jaxcompress.robust import attacks
from jaxcompress.train import loop

# `QUICKSTART_ARG=quick` (used by the tests) shrinks every run to a few steps.
QUICK = os.environ.get("QUICKSTART_ARG") == "quick"
arg = "quick" if QUICK else None
workdir = tempfile.mkdtemp(prefix="jaxcompress_abandit_")   # the search's workdir
print(jax.devices())

# %% [markdown]
# ## 1. The anti-bandit search
# 2 distinct cells, 10 edges each, K = 4 ops (2 in quick mode), T = 1: T * sum_{k=2..K} k
# sampled networks, one epoch of PGD-3 training each. The search writes `final_report.json`
# (bandit statistics) and `genotype.json`.

# %%
search_config = digits_search.get_config(arg)
search_config.progress = "none"
loop.run(search_config, workdir)
report = json.load(open(os.path.join(workdir, "final_report.json")))
genotype_path = os.path.join(workdir, "genotype.json")
genotype = abandit_network.get_genotype(genotype_path)
print("search complete:", report["search_complete"], "| samples:", report["samples"],
      "| removals:", report["removals"])
print("primitives:", report["primitives"])
for name, cell in zip("ab", genotype.cells):
  print(f"cell {name}:", "  ".join(f"B{j} = {op}(B{i})" for j, (op, i) in enumerate(cell, 1)))

# %% [markdown]
# Arm performance m (EMA of validation accuracy) and pull counts n of cell a, edge by edge;
# the surviving op of each edge is marked with `*`.

# %%
mean, count, alive = (np.asarray(report[k]) for k in ("mean", "count", "alive"))
edges = abandit_network.edge_list()
print("edge    " + "".join(f"{p:>16}" for p in report["primitives"]))
for e, (i, j) in enumerate(edges):
  cells = [f"{m:.3f}/{n}{'*' if a else ' '}" for m, n, a in zip(mean[0, e], count[0, e],
                                                                 alive[0, e])]
  print(f"({i},{j})   " + "".join(f"{c:>16}" for c in cells))

# %% [markdown]
# ## 2. Adversarial training of the found network, and the same network trained clean
# PGD-7 (eps 0.1, step 0.025, random start) in [0, 1] pixel space; the normalisation is inside
# the model. At the end both runs evaluate clean, FGSM, MI-FGSM, PGD-7 and PGD-20 accuracy
# on the 360 test digits (BN in eval mode) and write `robust_eval.md`.

# %%
tables, states, configs = {}, {}, {}
# Quick mode (the unit tests) trains only the adversarial network, to stay well under a minute.
for variant in ("adversarial",) if QUICK else ("adversarial", "clean"):
  parts = [p for p in (arg, "clean" if variant == "clean" else None) if p]
  config = digits_eval.get_config(",".join(parts) or None)
  config.model.kwargs.genotype = genotype_path
  config.progress = "none"
  run_dir = os.path.join(workdir, variant)
  result = loop.run(config, run_dir)
  states[variant], configs[variant] = result["state"], config
  tables[variant] = json.load(open(os.path.join(run_dir, "robust_eval.json")))["accuracy"]

# %% [markdown]
# ## 3. Robust accuracy (%)

# %%
names = abandit_nas.ROBUST_TABLE
print(f"eps = {configs['adversarial'].adv.epsilon}, step = {configs['adversarial'].adv.step_size}")
print("| training | " + " | ".join(names) + " |")
print("|---" * (len(names) + 1) + "|")
for variant, table in tables.items():
  print(f"| {variant} | " + " | ".join(f"{100 * table[n]:.2f}" for n in names) + " |")

# %% [markdown]
# ## 4. Adversarial examples
# PGD-20 against the adversarially trained network: clean digit, perturbation (scaled to the
# colour range), adversarial digit, with the network's predictions.

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

config, state = configs["adversarial"], states["adversarial"]
method = abandit_nas.AdversarialTraining(config)
predict = lambda v: method.forward(state.params, state.model_state, v, train=False)[0]  # noqa: E731
test = sources.get("digits", "test")
x = jnp.asarray(test.images[:6], jnp.float32) / 255.0
y = jnp.asarray(test.labels[:6])
pgd20 = jax.jit(lambda v, labels: attacks.pgd(predict, v, labels, config.adv.epsilon,
                                              config.adv.step_size, 20, rng=jax.random.key(0)))
x_adv = pgd20(x, y)
pred_clean = np.asarray(jnp.argmax(predict(x), -1))
pred_adv = np.asarray(jnp.argmax(predict(x_adv), -1))
print("max |delta| =", float(jnp.abs(x_adv - x).max()), "<= eps =", config.adv.epsilon)

fig, axes = plt.subplots(3, len(y), figsize=(1.6 * len(y), 5))
for k in range(len(y)):
  delta = np.asarray(x_adv[k] - x[k])[..., 0]
  axes[0, k].imshow(np.asarray(x[k])[..., 0], cmap="gray", vmin=0, vmax=1)
  axes[0, k].set_title(f"y={int(y[k])} pred={pred_clean[k]}", fontsize=8)
  axes[1, k].imshow(delta, cmap="seismic", vmin=-config.adv.epsilon, vmax=config.adv.epsilon)
  axes[1, k].set_title("perturbation", fontsize=8)
  axes[2, k].imshow(np.asarray(x_adv[k])[..., 0], cmap="gray", vmin=0, vmax=1)
  axes[2, k].set_title(f"adv pred={pred_adv[k]}", fontsize=8)
for ax in axes.ravel():
  ax.axis("off")
fig.tight_layout()
figure_path = os.path.join(workdir, "adversarial_examples.png")
fig.savefig(figure_path, dpi=100)
print("figure saved to", figure_path)
