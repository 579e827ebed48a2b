"""Evaluates a saved checkpoint: eval.json and the report (every metric, pictures, report.json).

  python experiments/evaluate.py --workdir=workdirs/isa_vae_quick
  python experiments/evaluate.py --workdir=workdirs/isa_vae_quick --step=3500 --metrics=mig_chen,dci
  python experiments/evaluate.py --workdir=workdirs/isa --config=experiments/configs/isa_vae.py \
      --config.eval.dci.num_train=2000

The run's own config (workdir/config.json) is used unless --config is given. The latest step's
eval.json and report/ go to the workdir, an earlier step's to workdir/step_<step>/ (see
disentangle_jax/training/report.py for the report's files).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from disentangle_jax.training import cli, evaluate_checkpoint
from disentangle_jax.training import config as config_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's folder (checkpoints/, config.json).")
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file; default workdir/config.json."
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
_METRICS = flags.DEFINE_string(
  "metrics", None, 'Comma-separated metric names, overriding config.eval.metrics ("" for none).'
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.set_up_logging()
  with cli.one_line_errors():
    config = _CONFIG.value or config_lib.load_saved_config(f"{_WORKDIR.value}/config.json")
    if _METRICS.value is not None:
      with config.unlocked():
        config.eval.metrics = _METRICS.value
    results = evaluate_checkpoint(_WORKDIR.value, config, step=_STEP.value)
  for name, value in results.get("scores", {}).items():
    logging.info("%-40s %.4f", name, value)


if __name__ == "__main__":
  app.run(main)
