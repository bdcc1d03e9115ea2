"""Neural architecture search: DARTS/PC-DARTS spaces, genotypes, bandits and robust ops.

Technique API: `channel_shuffle`, `derive_genotype`, `Genotype`, `ucb`, `lcb`,
`BanditState` (with `sample`, `update`, `remove_worst`), `gabor_kernel`, `nonlocal_mean`, `OPS`,
`PRIMITIVES`; the evaluation network `EvalNetwork` (`get_genotype`, `drop_path`) and PCNN
projection ops (`pcnn_project`, `pcnn_projection_loss`).
"""
from jaxcompress.nas.bandit import (
    BanditState,
    lcb,
    remove_by_score,
    remove_worst,
    sample,
    ucb,
    update,
)
from jaxcompress.nas.eval_network import EvalNetwork, drop_path, get_genotype
from jaxcompress.nas.genotype import (
    DARTS_V1,
    DARTS_V2,
    PC_DARTS,
    Genotype,
    derive_genotype,
    from_json,
    to_json,
)
from jaxcompress.nas.pcnn import pcnn_project, pcnn_projection_loss
from jaxcompress.nas.robust_ops import ABANDIT_OPS, ABANDIT_PRIMITIVES, gabor_kernel, nonlocal_mean
from jaxcompress.nas.space import OPS, PRIMITIVES
from jaxcompress.nas.supernet import (
    MixedOp,
    PCMixedOp,
    SampledOp,
    channel_shuffle,
    edge_normalization,
)

__all__ = [
    "ABANDIT_OPS", "ABANDIT_PRIMITIVES", "BanditState", "DARTS_V1", "DARTS_V2", "EvalNetwork",
    "Genotype", "drop_path", "get_genotype", "pcnn_project", "pcnn_projection_loss",
    "MixedOp", "OPS", "PCMixedOp", "PC_DARTS", "PRIMITIVES", "SampledOp", "channel_shuffle",
    "derive_genotype", "edge_normalization", "from_json", "gabor_kernel", "lcb",
    "nonlocal_mean", "remove_by_score", "remove_worst", "sample", "to_json", "ucb", "update",
]
