"""What the command-line programs share: their error handling and their log set-up."""

from __future__ import annotations

import contextlib
import sys

from absl import logging

from disentangle_jax.cpu_conv.onednn import Unavailable
from disentangle_jax.training import host_memory
from disentangle_jax.training.checkpoint import CheckpointMismatchError, quiet_orbax_logs
from disentangle_jax.training.config import ConfigError
from disentangle_jax.training.loop import Interrupted, NonFiniteError, WorkdirError

# Errors that are the user's input or the run's outcome, not a bug: one line, no traceback.
USER_ERRORS = (
  ConfigError,
  WorkdirError,
  CheckpointMismatchError,
  NonFiniteError,
  FileNotFoundError,  # a missing dataset file, config.json or checkpoint
  Unavailable,
)


def set_up_logging() -> None:
  quiet_orbax_logs()
  logging.info("host memory: %s", host_memory.describe())


@contextlib.contextmanager
def one_line_errors():
  """Turns the known errors into one line on stderr and a non-zero exit status.

  Exit status: 2 for bad input (config, workdir, dataset), 3 for a non-finite run, 128 + the
  signal number for SIGINT / SIGTERM (after the run saved its checkpoint), 130 for a second
  Ctrl-C.
  """
  try:
    yield
  except Interrupted as error:
    logging.warning("%s", error)
    print(f"interrupted: {error}", file=sys.stderr)
    sys.exit(128 + error.signum)
  except NonFiniteError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(3)
  except USER_ERRORS as error:
    lines = str(error).splitlines() or [type(error).__name__]
    print("\n".join(f"error: {line}" for line in lines), file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print(
      "interrupted: stopped at once (steps since the last checkpoint are lost)", file=sys.stderr
    )
    sys.exit(130)
