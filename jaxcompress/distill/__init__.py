"""Distillation losses (attention maps, PAMS SKT, DMAD co-attention)."""
from jaxcompress.distill.attention import attention_map, normalize_rows, skt_loss
from jaxcompress.distill.coattention import (
                                             co_attention_loss,
                                             disc_distill_loss,
                                             spatial_attention,
)
