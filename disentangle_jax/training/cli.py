"""What the command-line programs share: their error handling and their log set-up."""

from __future__ import annotations

import contextlib
import os
import sys

import jax
from absl import flags, logging

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


_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "One process per host: call jax.distributed.initialize() first. On TPU pods and SLURM / "
  "Open MPI clusters JAX finds the processes itself; elsewhere give --coordinator_address, "
  "--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
  "JAX_PROCESS_ID).",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_distributed() -> None:
  """With --distributed, joins the processes of a multi-host job (before any JAX work).

  Flags win over the environment; what neither gives, JAX detects from the cluster (TPU pod,
  SLURM, Open MPI). On CPUs the processes' collectives run over gloo.
  """
  if not _DISTRIBUTED.value:
    return
  env = {
    "coordinator_address": os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "num_processes": os.environ.get("JAX_NUM_PROCESSES"),
    "process_id": os.environ.get("JAX_PROCESS_ID"),
  }
  given = {
    "coordinator_address": _COORDINATOR.value or env["coordinator_address"],
    "num_processes": _NUM_PROCESSES.value
    if _NUM_PROCESSES.value is not None
    else env["num_processes"],
    "process_id": _PROCESS_ID.value if _PROCESS_ID.value is not None else env["process_id"],
  }
  kwargs = {
    k: (v if k == "coordinator_address" else int(v)) for k, v in given.items() if v is not None
  }
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  logging.info(
    "process %d of %d; %d local and %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
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
