"""Training throughput: the bare train step per architecture and batch size, and the main loop.

  python benchmarks/bench_train.py                         # mlp and conv at batch 64, 256, 2048
  python benchmarks/bench_train.py --archs mlp --batch-sizes 256 --loop-steps 300

For each architecture and batch size: compile time of the jitted train step (beta-VAE, Bernoulli,
Adam) and the median wall time of a step on a fixed device batch, as images/s. Then the whole
`train_and_evaluate` loop (input pipeline, metrics, NaN guard, logging; checkpoints off) is run
for --loop-steps steps and its steps/s, read from metrics.jsonl, is compared with the bare step's.
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import tempfile
import time

import jax
import ml_collections

from disentangle_jax import data
from disentangle_jax.training import host_memory
from disentangle_jax.training import model as model_lib
from disentangle_jax.training.loop import train_and_evaluate
from disentangle_jax.training.losses import make_loss_fn
from disentangle_jax.training.train_step import (
  create_train_state,
  jit_train_step,
  make_train_step,
)

REPO = pathlib.Path(__file__).parents[1]


def load_config(arch: str, batch_size: int) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("c", REPO / "experiments/configs/beta_vae.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"model={arch}")
  config.unlock()
  config.batch_size = batch_size
  config.dataset_kwargs = {"source": "cache"}
  return config


def bare_step(arch: str, batch_size: int, repeats: int) -> tuple[float, float]:
  """(compile s, median step s) of the jitted train step on one fixed device batch."""
  config = load_config(arch, batch_size)
  dataset = data.get_dataset("dsprites")
  mesh = data.make_data_mesh()
  networks = model_lib.build_networks(config, dataset.observation_shape)
  params, disc = model_lib.init_params(config, networks, jax.random.key(0), (64, 64, 1))
  tx, dtx = model_lib.make_optimizer(config, params), model_lib.make_discriminator_optimizer(config)
  state = create_train_state(params, disc, tx, dtx)
  step = jit_train_step(
    make_train_step(make_loss_fn(config, networks, 737_280), tx, dtx), mesh, state
  )
  batch = jax.device_put(data.host_batch(dataset, 0, batch_size=batch_size, seed=0))
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  state, _ = compiled(state, batch, rng)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def loop_rate(arch: str, batch_size: int, steps: int) -> float:
  """Median steps/s of train_and_evaluate's logging windows after the first (compile) one."""
  config = load_config(arch, batch_size)
  config.num_steps, config.log_every = steps, max(steps // 6, 1)
  config.checkpoint_every = 10 * steps  # only the final save
  config.eval.num_examples = 1000
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config.lock(), workdir)
    lines = [json.loads(x) for x in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return statistics.median(line["steps_per_second"] for line in lines[1:-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", nargs="+", default=["mlp", "conv"])
  parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 2048])
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument(
    "--max-seconds", type=float, default=60.0, help="fewer repeats where one step is slow"
  )
  parser.add_argument("--loop-steps", type=int, default=600)
  parser.add_argument("--loop-batch", type=int, default=256)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print(f"{'arch':5s} {'batch':>6s} {'compile s':>10s} {'step ms':>9s} {'img/s':>8s}")
  bare = {}
  for arch in args.archs:
    for b in args.batch_sizes:
      _, probe = bare_step(arch, b, 1)
      repeats = max(2, min(args.repeats, int(args.max_seconds / max(probe, 1e-3))))
      compile_s, t = bare_step(arch, b, repeats)
      bare[arch, b] = t
      print(f"{arch:5s} {b:6d} {compile_s:10.2f} {1e3 * t:9.1f} {b / t:8.0f}", flush=True)
  for arch in args.archs:
    b = args.loop_batch
    t = bare.get((arch, b)) or bare_step(arch, b, args.repeats)[1]
    rate = loop_rate(arch, b, args.loop_steps)
    print(
      f"main loop {arch} batch {b}: {rate:.2f} steps/s vs bare step {1 / t:.2f} steps/s "
      f"(loop overhead {100 * (1 - rate * t):.1f}%)",
      flush=True,
    )


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # as experiments/main.py does
  main()
