"""Distillation losses (attention maps, PAMS SKT)."""
from jaxcompress.distill.attention import attention_map
from jaxcompress.distill.attention import skt_loss
