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
