"""Trains and evaluates one model.

  python experiments/main.py --config=experiments/configs/isa_vae.py:quick --workdir=workdirs/isa
  python experiments/main.py --config=experiments/configs/beta_vae.py --config.objective.beta=6

Running the same command again resumes from the workdir's last checkpoint. On Linux with glibc
2.35+, the process first restarts itself once with huge-page malloc for XLA's large per-step
buffers (`disentangle_jax.training.host_memory`; DISENTANGLE_JAX_HUGE_PAGES=0 turns that off).
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from disentangle_jax.training import host_memory, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (file.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and results.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Call jax.distributed.initialize() first (one process per host)."
)
flags.mark_flags_as_required(["config", "workdir"])


def _not_orbax(record) -> bool:
  """Keeps orbax's per-save INFO lines out of the progress log (warnings still show)."""
  return record.levelno > logging.converter.STANDARD_INFO or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_not_orbax)
  logging.info("host memory: %s", host_memory.describe())
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # coordinator and process ids from the cluster's environment
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()
  app.run(main)
