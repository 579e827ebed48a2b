"""Time and peak memory of every metric on the full generated dSprites (737,280 images, K = 10).

  python benchmarks/bench_metrics.py                               # every metric, random-init MLP
  python benchmarks/bench_metrics.py --metrics mig_chen dci --arch conv
  python benchmarks/bench_metrics.py --workdir workdirs/vae_quick  # a trained model's encoder

Each metric runs in a fresh subprocess with disentanglement_lib's default parameters, so its peak
resident memory (VmHWM) is its own. "extra MiB" is that peak minus the process's resident memory
just before the metric started (dataset cache, encoder, JAX runtime loaded). Wall time includes
encoding the images the metric needs. Without --workdir the encoder is a freshly initialised
network with K = 10: the cost of a metric depends on the data sizes, not on what the code means.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).parents[1]
NAMES = ("mig_chen", "mig_dlib", "beta_vae", "factor_vae", "dci", "sap", "modularity")


def _memory_mib(field: str) -> float:
  for line in open("/proc/self/status"):
    if line.startswith(field + ":"):
      return int(line.split()[1]) / 1024
  return float("nan")


def run_one(name: str, arch: str, workdir: str | None, seed: int) -> dict:
  """Runs one metric in this process; returns seconds and memory figures."""
  import jax

  from disentangle_jax import data, metrics
  from disentangle_jax.training import config as config_lib
  from disentangle_jax.training import model as model_lib
  from disentangle_jax.training.report import make_encode_fn

  dataset = data.get_dataset("dsprites")
  if workdir:
    from disentangle_jax.training.checkpoint import Checkpointer
    from disentangle_jax.training.train_step import create_train_state

    config = config_lib.load_saved_config(pathlib.Path(workdir) / "config.json")
  else:
    config = config_lib.base_config()
    config.model.encoder = config.model.decoder = arch
  networks = model_lib.build_networks(config, dataset.observation_shape)
  params, disc = model_lib.init_params(
    config, networks, jax.random.key(seed), dataset.observation_shape
  )
  if workdir:
    like = create_train_state(
      params,
      disc,
      model_lib.make_optimizer(config, params),
      model_lib.make_discriminator_optimizer(config),
    )
    params = Checkpointer(workdir).restore_latest(like).params
  encode_fn = make_encode_fn(networks, params)
  encode_fn(dataset.observations_from_indices(list(range(8))))  # compile outside the timing
  before = _memory_mib("VmRSS")
  start = time.perf_counter()
  result = metrics.compute_metrics(dataset, encode_fn, names=[name], seed=seed)[name]
  seconds = time.perf_counter() - start
  peak = _memory_mib("VmHWM")
  scores = metrics.headline_scores({name: result})
  return {
    "metric": name,
    "seconds": seconds,
    "peak_mib": peak,
    "extra_mib": peak - before,
    "scores": scores,
    "latents": networks.latent_dim,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--metrics", nargs="+", default=list(NAMES), choices=NAMES)
  parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
  parser.add_argument("--workdir", default=None, help="use this run's trained encoder")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default=None, help="also write the results here")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process mode
  args = parser.parse_args()

  if args.one:
    print(json.dumps(run_one(args.one, args.arch, args.workdir, args.seed)))
    return

  import jax

  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print(f"{'metric':12s} {'seconds':>9s} {'peak MiB':>9s} {'extra MiB':>10s}  scores")
  rows = []
  for name in args.metrics:
    command = [sys.executable, __file__, "--one", name, "--arch", args.arch]
    command += ["--seed", str(args.seed)] + (["--workdir", args.workdir] if args.workdir else [])
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
      print(f"{name:12s} failed:\n{out.stderr[-2000:]}", flush=True)
      continue
    row = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append(row)
    scores = ", ".join(f"{k.split('.', 1)[1]} {v:.3f}" for k, v in row["scores"].items())
    print(
      f"{name:12s} {row['seconds']:9.1f} {row['peak_mib']:9.0f} {row['extra_mib']:10.0f}  {scores}",
      flush=True,
    )
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
