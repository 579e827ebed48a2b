"""Trains and evaluates one model.

  python experiments/main.py --config=experiments/configs/isa_vae.py:quick --workdir=workdirs/isa
  python experiments/main.py --config=experiments/configs/beta_vae.py \
      --config.objective.beta_vae.beta=6 --workdir=workdirs/bvae6

Running the same command again resumes from the workdir's last checkpoint; Ctrl-C (or SIGTERM)
saves a checkpoint of the step reached first. A workdir holding a run of another config is
refused unless --allow_config_change.
"""

from absl import app, flags
from ml_collections import config_flags

from disentangle_jax.training import cli, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (file.py:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and results.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Continue the workdir's run with a config that differs from its config.json (e.g. more "
  "num_steps).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.set_up_logging()
  with cli.one_line_errors():
    cli.initialize_distributed()
    train_and_evaluate(
      _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
    )


if __name__ == "__main__":
  app.run(main)
