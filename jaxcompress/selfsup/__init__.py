"""Self-supervised video representation learning (DSM, arXiv 2009.05757) and its MoCo machinery."""
# ruff: noqa: F401  (re-exports)
from jaxcompress.selfsup.contrastive import (
    ema_update,
    info_nce,
    init_queue,
    moco_logits,
    queue_push,
)
from jaxcompress.selfsup.warp import dsm_warp, sample_warp_points, warp_index_maps
