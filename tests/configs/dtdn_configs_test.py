"""configs/dtdn: the quick config's stages build with the release's DTDN settings."""
from __future__ import annotations

from configs.dtdn import quick
from jaxcompress import methods
from jaxcompress.methods import dtdn


def test_quick_stages_and_report():
  c = quick.get_config()
  assert tuple(c.stage_order) == ("source_only", "dtdn", "report")
  so, dt = c.stages.source_only, c.stages.dtdn
  assert so.dtdn.variant == "source_only" and dt.dtdn.variant == "dtdn"
  assert "streams" not in so.data and dt.data.streams.target.source_kwargs.domain == "target"
  assert dt.data.streams.target.batch_size == dt.data.batch_size
  # Same budget: epochs, batch and optimizer of both stages agree.
  assert so.num_epochs == dt.num_epochs and so.optim.to_dict() == dt.optim.to_dict()
  assert dt.dtdn.num_target == 80 * 8 and dt.evals.target.type == "retrieval"
  assert c.stages.report.report == "dtdn_report" and c.stages.report.metric == "target/rank1"
  assert methods.get(dt.method) is dtdn.DTDN
  assert methods.get_report("dtdn_report") is dtdn.dtdn_report


def test_small_variant():
  c = quick.get_config("small")
  assert c.stages.dtdn.num_epochs < quick.get_config().stages.dtdn.num_epochs
  assert c.stages.dtdn.dtdn.switch_epoch < c.stages.dtdn.num_epochs


def test_reid_paper_rows():
  from configs.dtdn import reid_paper  # pylint: disable=g-import-not-at-top
  for arg, src, tgt, ids, n_t in (("duke_market", "dukemtmc_reid", "market1501", 702, 12936),
                                  ("market_duke", "market1501", "dukemtmc_reid", 751, 16522)):
    c = reid_paper.get_config(arg)
    dt = c.stages.dtdn
    assert dt.data.name == src and dt.data.streams.target.name == tgt
    assert dt.model.num_classes == ids and dt.dtdn.num_target == n_t
    assert dt.num_epochs == 40 and dt.data.batch_size == 128 and dt.dtdn.switch_epoch == 12
    assert dt.optim.nesterov and dt.optim.weight_decay == 5e-4
    table = dict(dt.optim.lr_table)
    # Release adjust_lr: warm-up, the hard-coded 0.1, lr, lr / 10, then 1e-5 and 1e-6.
    assert table[5] == 0.0004 and table[10] == table[14] == 0.1 and table[15] == 0.08
    assert table[20] == 0.008 and table[21] == 1e-5 and table[31] == 1e-6
    back = dict(dt.optim.groups[0]["lr_table"])
    assert abs(back[10] - 0.01) < 1e-12
    assert dt.steps_per_epoch == -(-max(16522, 12936) // 128)
