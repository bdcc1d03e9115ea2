"""Neural architecture search: DARTS/PC-DARTS spaces, genotypes, bandits and robust ops.

Technique API: `channel_shuffle`, `derive_genotype`, `Genotype`, `ucb`, `lcb`,
`BanditState` (with `sample`, `update`, `remove_worst`), `gabor_kernel`, `nonlocal_mean`, `OPS`,
`PRIMITIVES`; the evaluation network `EvalNetwork` (`get_genotype`, `drop_path`) and PCNN
projection ops (`pcnn_project`, `pcnn_projection_loss`).
"""
from jaxcompress.nas.bandit import BanditState
from jaxcompress.nas.bandit import lcb
from jaxcompress.nas.bandit import remove_by_score
from jaxcompress.nas.bandit import remove_worst
from jaxcompress.nas.bandit import sample
from jaxcompress.nas.bandit import ucb
from jaxcompress.nas.bandit import update
from jaxcompress.nas.binary_ops import pcnn_project
from jaxcompress.nas.binary_ops import pcnn_projection_loss
from jaxcompress.nas.eval_network import drop_path
from jaxcompress.nas.eval_network import EvalNetwork
from jaxcompress.nas.eval_network import get_genotype
from jaxcompress.nas.genotype import DARTS_V1
from jaxcompress.nas.genotype import DARTS_V2
from jaxcompress.nas.genotype import derive_genotype
from jaxcompress.nas.genotype import from_json
from jaxcompress.nas.genotype import Genotype
from jaxcompress.nas.genotype import PC_DARTS
from jaxcompress.nas.genotype import to_json
from jaxcompress.nas.robust_ops import ABANDIT_OPS
from jaxcompress.nas.robust_ops import ABANDIT_PRIMITIVES
from jaxcompress.nas.robust_ops import gabor_kernel
from jaxcompress.nas.robust_ops import nonlocal_mean
from jaxcompress.nas.space import OPS
from jaxcompress.nas.space import PRIMITIVES
from jaxcompress.nas.supernet import channel_shuffle
from jaxcompress.nas.supernet import edge_normalization
from jaxcompress.nas.supernet import MixedOp
from jaxcompress.nas.supernet import PCMixedOp
from jaxcompress.nas.supernet import SampledOp

__all__ = [
    "ABANDIT_OPS", "ABANDIT_PRIMITIVES", "BanditState", "DARTS_V1", "DARTS_V2", "EvalNetwork",
    "Genotype", "drop_path", "get_genotype", "pcnn_project", "pcnn_projection_loss",
    "MixedOp", "OPS", "PCMixedOp", "PC_DARTS", "PRIMITIVES", "SampledOp", "channel_shuffle",
    "derive_genotype", "edge_normalization", "from_json", "gabor_kernel", "lcb",
    "nonlocal_mean", "remove_by_score", "remove_worst", "sample", "to_json", "ucb", "update",
]
