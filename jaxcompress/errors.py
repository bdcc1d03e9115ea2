"""Errors a user can fix: the launcher prints their message (no traceback) and exits non-zero.

Each message names the cause and the fix. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(RuntimeError):
  """Base class of problems the user fixes by changing a config, a flag or the environment."""


class ConfigError(UserError, ValueError):
  """A config value is unknown, inconsistent or of the wrong type."""


class DatasetNotFoundError(UserError):
  """A dataset is not prepared on disk; the message has the command that prepares it."""


class CheckpointError(UserError):
  """A checkpoint exists but cannot be restored."""


class TrainingDivergedError(UserError):
  """A loss or metric became NaN/inf; the message names the step and the metric."""


class PreemptedError(UserError):
  """The run stopped on SIGTERM/preemption after saving a checkpoint."""
