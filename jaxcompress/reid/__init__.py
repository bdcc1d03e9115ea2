"""Person re-identification: feature distances and the mAP / CMC evaluation."""
# ruff: noqa: F401  (re-exports)
from jaxcompress.reid.distance import euclidean_dist, pairwise_sq_dist
from jaxcompress.reid.evaluate import evaluate
from jaxcompress.reid.kmeans import kmeans
from jaxcompress.reid.losses import (
    cross_entropy_label_smooth,
    soft_cross_entropy,
    soft_triplet_loss,
    triplet_loss,
    uniform_confusion_loss,
)
from jaxcompress.reid.mebnet import expert_authority, j_scatter, mean_teacher_decay, meb_loss
from jaxcompress.reid.memory import (
    IdentityMemory,
    ddan_id_domains,
    identity_memory_init,
    identity_memory_loss,
)
from jaxcompress.reid.mining import hard_example_mining
from jaxcompress.reid.rerank import re_ranking
from jaxcompress.selfsup.contrastive import ema_update
