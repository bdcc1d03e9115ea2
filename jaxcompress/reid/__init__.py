"""Person re-identification: feature distances and the mAP / CMC evaluation."""
# ruff: noqa: F401  (re-exports)
from jaxcompress.reid.distance import euclidean_dist, pairwise_sq_dist
from jaxcompress.reid.evaluate import evaluate
