"""Fréchet distance between two sets of features, collected over a split, computed at the end.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", arXiv:1706.08500, Eq. 6: ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
The method supplies `predict(state, batch)` with the two feature sets under the names given by
`real_key` and `fake_key` (default "real_features" and "fake_features"), e.g. the activations of
a feature network on the real target images and on the generator's outputs.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from jaxcompress import evals


class FrechetDistance(evals.Evaluator):
  """"fid" of the gathered fake features against the gathered real features of one split."""

  combine = {"real": evals.GATHER, "fake": evals.GATHER}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = self.method.predict(state, batch)
    return {"real": out[self.cfg.get("real_key", "real_features")],
            "fake": out[self.cfg.get("fake_key", "fake_features")]}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    from jaxcompress.metrics import fid  # pylint: disable=g-import-not-at-top
    split = outputs[self.splits[0]]
    real = np.asarray(split["real"], np.float64).reshape(len(split["real"]), -1)
    fake = np.asarray(split["fake"], np.float64).reshape(len(split["fake"]), -1)
    return {"fid": float(fid.frechet_distance(*fid.feature_statistics(real),
                                              *fid.feature_statistics(fake)))}
