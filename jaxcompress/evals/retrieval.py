"""Retrieval: mAP and CMC of query features against gallery features (person re-identification).

Features come from `method.predict(state, batch)["features"]` on two splits (query, gallery),
gathered with their identity and camera labels; `jaxcompress.reid.evaluate` ranks the gallery per
query, removes gallery entries of the query's identity AND camera (the Market-1501 protocol,
Zheng et al. ICCV 2015), and scores mAP and the first-match CMC.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress import evals


class Retrieval(evals.Evaluator):
  """mAP and rank-k accuracy; config `splits=(query, gallery)`, `ranks` (default (1, 5, 10)),
  `distance` ("euclidean" or "sq_euclidean"), `protocol` ("standard" or "ddan"), `normalize`
  (L2-normalise features first, default True), `id_key`/`camera_key` ("label", "camera")."""

  combine = {"features": evals.GATHER, "ids": evals.GATHER, "cams": evals.GATHER}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    features = self.method.predict(state, batch)["features"].astype(jnp.float32)
    return {"features": features, "ids": batch[self.cfg.get("id_key", "label")],
            "cams": batch[self.cfg.get("camera_key", "camera")]}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    from jaxcompress import reid  # pylint: disable=g-import-not-at-top
    query, gallery = (outputs[s] for s in self.splits[:2])
    qf, gf = (np.asarray(o["features"], np.float64) for o in (query, gallery))
    if self.cfg.get("normalize", True):
      qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
      gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
    dist = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None] - 2.0 * qf @ gf.T
    if self.cfg.get("distance", "euclidean") == "euclidean":
      dist = np.sqrt(np.maximum(dist, 1e-12))
    ranks = tuple(self.cfg.get("ranks", (1, 5, 10)))
    mean_ap, cmc = reid.evaluate(dist, query["ids"], gallery["ids"], query["cams"],
                                 gallery["cams"], topk=max(max(ranks), 1),
                                 protocol=self.cfg.get("protocol", "standard"))
    return {"mAP": float(mean_ap), **{f"rank{r}": float(cmc[r - 1]) for r in ranks}}
