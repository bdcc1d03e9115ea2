"""Channel pruning: DMAD differentiable masks (arXiv 2011.08382).

Level 1 (pure functions, `masks`): the mask step `dmad_mask`, the bound schedule `dmad_bound`
(`dmad_update_interval`), the sparsity penalties `dmad_penalty` / `dmad_block_penalty`, the
cross-block group coefficients and the whole-generator `dmad_mask_loss`. Level 2 (`gate`): the
linen `MaskGate` for the layer factory's gate slot, with its bound in the non-parameter
collection `BOUND_COLLECTION` and the helpers `set_bound`, `mask_params`, `binarize_masks`.
Level 3 (`materialize`): `materialize` cuts a gated model down to a really smaller one whose
output equals the binary-masked model's (`effective_masks`: the masks it equals).
"""
from __future__ import annotations

from jaxcompress.prune.gate import (
                                    BOUND_COLLECTION,
                                    MaskGate,
                                    binarize_masks,
                                    mask_params,
                                    set_bound,
)
from jaxcompress.prune.masks import (
                                     OFFICIAL_MIN_BOUND,
                                     dmad_block_penalty,
                                     dmad_bound,
                                     dmad_group_coefficients,
                                     dmad_mask,
                                     dmad_mask_loss,
                                     dmad_penalty,
                                     dmad_update_interval,
)
from jaxcompress.prune.materialize import effective_masks, materialize, pruned_widths
