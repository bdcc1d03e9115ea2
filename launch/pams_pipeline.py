"""PAMS in one command: FP teacher, then one quantized student per bit width, then the table.

  python -m launch.pams_pipeline --config=configs/pams/quick.py --workdir=/tmp/pams_quick

Same flags as `launch.main` (whose flag definitions this module reuses). The engine runs one
method per run, so the chain is three ordinary `loop.run` calls on the configs that
`jaxcompress.methods.pams.pipeline_configs` derives from the config's `pipeline` block
(`<workdir>/fp`, `<workdir>/8bit`, `<workdir>/4bit`, each a normal resumable workdir; rerunning
the command resumes or just re-reports), then `pams.pipeline_report` scores all models on the
held-out images: `<workdir>/pams_table.{json,md}` and an eval line in `<workdir>/metrics.jsonl`.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging

from jaxcompress import distributed
from jaxcompress.errors import UserError
from launch import main as launch_main  # defines --config, --workdir and the cluster flags

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  del argv
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)  # as launch.main
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    launch_main.setup_process()
    from jaxcompress.methods import pams  # pylint: disable=g-import-not-at-top
    from jaxcompress.train import loop  # pylint: disable=g-import-not-at-top
    stages = pams.pipeline_configs(FLAGS.config, FLAGS.workdir)
    params = {label: loop.run(cfg, wd)["state"].params for label, (cfg, wd) in stages.items()}
    if distributed.is_main_process():
      report = pams.pipeline_report(FLAGS.config, params, FLAGS.workdir)
      print(report["table"], end="")
      print(f"Outputs in {FLAGS.workdir} (pams_table.md, pams_table.json; runs in "
            f"{', '.join(stages)}).")
  except UserError as e:
    print(f"jaxcompress: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=launch_main.parse_flags)
