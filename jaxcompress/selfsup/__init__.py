"""Self-supervised video representation learning (DSM, arXiv 2009.05757) and its MoCo machinery."""
# ruff: noqa: F401  (re-exports)
from jaxcompress.selfsup.ema import ema_update
from jaxcompress.selfsup.moco import info_nce, init_queue, moco_logits, queue_push
from jaxcompress.selfsup.negatives import (
    clip_frame_indices,
    intra_video_negative,
    sample_clip_start,
    shift_negative_start,
)
from jaxcompress.selfsup.warp import dsm_warp, sample_warp_points, warp_index_maps
