"""The one entry point: `python -m launch.main --config=configs/<paper>/<exp>.py --workdir=DIR`.

Multi-host: pass --coordinator_address/--num_processes/--process_id (GPU clusters, localhost) or
--jax_distributed (TPU pods, SLURM: JAX detects the cluster). All logic lives in the library
(`jaxcompress.train.loop.run`), so Colab calls the same function.
"""
from __future__ import annotations

import logging
import os
import sys

import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxcompress import distributed
from jaxcompress.errors import UserError
from jaxcompress.train import compilation_cache

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumes if it has checkpoints).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_LOCAL_DEVICES = flags.DEFINE_list("local_device_ids", None, "Devices of this process.")
_AUTO = flags.DEFINE_bool("jax_distributed", False, "Auto-detect the cluster (TPU pod, SLURM).")
_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "Persistent XLA compilation cache (reruns skip compiling); default "
    "~/.cache/jaxcompress/xla-<cpu>, 'none' turns it off. JAX_COMPILATION_CACHE_DIR wins.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  del argv
  # Backend probing messages (no TPU found, ...) are noise for users; errors still show.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax/grain INFO lines drown the progress
  try:
    setup_process()
    from jaxcompress.train import loop  # pylint: disable=g-import-not-at-top
    result = loop.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f"jaxcompress: error: {e}", file=sys.stderr)
    sys.exit(1)
  if distributed.is_main_process():
    shown = " ".join(f"{k}={float(v):.4f}" for k, v in result["eval"].items() if np.ndim(v) == 0)
    done = (f"stages {', '.join(result['stages'])}" if "stages" in result
            else f"{result['steps']} steps")
    print(f"Finished {done}. Final eval: {shown}. Outputs in {_WORKDIR.value}")


def setup_process() -> None:
  """Cluster initialisation and the compilation cache, shared by every launcher."""
  distributed.initialize(_COORD.value, _NPROC.value, _PID.value, auto=_AUTO.value,
                         local_device_ids=_LOCAL_DEVICES.value)
  compilation_cache.enable(_CACHE.value)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports bad config overrides in one line instead of a traceback."""
  missing = _missing_config_file(argv)
  if missing:
    print(f"jaxcompress: error: {missing}", file=sys.stderr)
    sys.exit(1)
  try:
    remaining = flags.FLAGS(argv)
    config = flags.FLAGS["config"].value
    if config is not None:
      # ml_collections defers a config file's load error to the first attribute access (deep
      # inside the run, as a long traceback); touch one attribute here so it surfaces now.
      getattr(config, "get")
    return remaining
  except flags.Error as e:
    message = str(e)
  except OSError as e:
    # A config file that could not be loaded (for instance named through --flagfile).
    cause = str(e.__cause__ or e).strip().splitlines()[-1].strip()
    print(f"jaxcompress: error: cannot load the --config file ({cause}). Pass an existing "
          "experiment config, e.g. --config=configs/baseline/digits_resnet20.py.", file=sys.stderr)
    sys.exit(1)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags raises these for unknown keys and values of the wrong type.
    message = f"{type(e).__name__}: {str(e).strip(chr(34) + chr(39))}"
  print(f"jaxcompress: error: bad flag or config override ({message}). Check the key exists in "
        "the config file and the value has the field's type; --helpfull lists flags.",
        file=sys.stderr)
  sys.exit(1)


def _missing_config_file(argv: list[str]) -> str | None:
  """The one-line problem when --config names no file (None when it does, or is not given).

  Args:
    argv: the command line, program name first.

  Returns:
    The error message, or None.
  """
  value = None
  args = iter(argv[1:])
  for arg in args:
    if arg == "--":  # absl stops parsing flags here
      break
    name, has_value, rest = arg.lstrip("-").partition("=")
    if arg.startswith("-") and name == "config":
      value = rest if has_value else next(args, "")
  if value is None:
    return None
  path = value.split(":", 1)[0]  # `file.py:arg` passes `arg` to the file's get_config
  if os.path.isfile(path):
    return None
  example = "--config=configs/baseline/digits_resnet20.py"
  if os.path.isdir(path):
    return (f"config file {path!r} is a directory. Pass one experiment config file in it, "
            f"e.g. {example}.")
  where = "" if os.path.isabs(path) else f" (relative paths start in {os.getcwd()})"
  return (f"config file {path!r} not found{where}. Pass an existing experiment config, e.g. "
          f"{example}; the experiments are under configs/.")


def run_main() -> None:
  """Console-script entry point (`jaxcompress --config=... --workdir=...`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run_main()
