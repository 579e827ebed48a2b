"""Trains a grid of models (a sweep) and writes the study that compares them.

  python experiments/sweep.py --config=experiments/configs/sweeps/cpu_study.py \
      --workdir=workdirs/cpu_study
  python experiments/sweep.py --config=experiments/configs/sweeps/isa_vae_fig5.py \
      --workdir=workdirs/fig5 --config.axes="{'objective.beta': [1, 4], 'seed': [0, 1]}"

Models that differ only in the objective's numbers, the learning rate or the seed train as one
compiled program; the outputs are workdir/models/<model>/ (metrics, eval, study.json) and
workdir/study/ (results.csv, tradeoff.png, mig_distribution.png, latents/). The same command
resumes an interrupted sweep. Across hosts (a TPU pod slice, a GPU cluster), start the same
command on every host with --distributed (see README.md).
"""

from absl import app, flags
from ml_collections import config_flags

from disentangle_jax.training import cli
from disentangle_jax.training import sweep as sweep_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file (file.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the sweep's models and study.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change", False, "Continue a workdir's sweep with a changed sweep config."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.set_up_logging()
  with cli.one_line_errors():
    cli.initialize_distributed()
    sweep_lib.run_sweep(
      _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
    )


if __name__ == "__main__":
  app.run(main)
