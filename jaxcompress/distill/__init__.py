"""Distillation losses (attention maps, PAMS SKT)."""
from jaxcompress.distill.attention import attention_map, skt_loss
