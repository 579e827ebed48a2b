"""Multi-seed throughput: one vmapped step of K models against K single-model steps.

  python benchmarks/bench_multi_seed.py              # mlp and conv, batch 64 and 256, K 1 2 4 8
  python benchmarks/bench_multi_seed.py --archs mlp --batch-sizes 64 --seeds 1 2 4 --max-seconds 5
  python benchmarks/bench_multi_seed.py --archs mlp --broadcast-batch

For each architecture (experiments/configs/beta_vae.py with `model=mlp|conv`: beta-VAE,
Bernoulli, Adam) and batch size B: the compile time and median wall time t_single of the jitted
single-model train step (`train_step.jit_train_step`), then for each K the compile time and
median wall time t_vmap of one step of the K-model program (`multi_seed`: vmap over the models,
the batch shared). K sequential runs would take K * t_single per step; the table reports
speed-up = K * t_single / t_vmap, and images/s per model, B / t_vmap (B / t_single for one run
alone). Batches are random binary images [B, 64, 64, 1] on the device: no dataset is needed.
`--broadcast-batch` times `make_multi_seed_train_step(..., broadcast_batch=True)` instead.
"""

import argparse
import importlib.util
import pathlib
import statistics
import time

import jax
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from disentangle_jax import data
from disentangle_jax.training import host_memory, multi_seed
from disentangle_jax.training import model as model_lib
from disentangle_jax.training.losses import make_loss_fn
from disentangle_jax.training.train_step import (
  create_train_state,
  jit_train_step,
  make_train_step,
)

REPO = pathlib.Path(__file__).parents[1]
OBSERVATION_SHAPE = (64, 64, 1)
DATASET_SIZE = 737_280  # dSprites; the beta-VAE loss does not use it


def load_config(arch: str, batch_size: int) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("c", REPO / "experiments/configs/beta_vae.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"model={arch}")
  config.unlock()
  config.batch_size = batch_size
  return config.lock()


def random_batch(mesh, batch_size: int) -> dict[str, jax.Array]:
  """Binary images [B, 64, 64, 1] (float32), split over the mesh's data axis."""
  images = jax.random.bernoulli(jax.random.key(0), 0.1, (batch_size, *OBSERVATION_SHAPE))
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  return {"image": jax.device_put(images.astype("float32"), sharding)}


def time_steps(compiled, state, batch, rng, max_seconds: float, repeats: int):
  """Median wall time of `compiled`; returns (median s, the final state, to keep it alive)."""
  state, metrics = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  probe = time.perf_counter() - start
  repeats = max(3, min(repeats, int(max_seconds / max(probe, 1e-4))))
  times = [probe]
  for _ in range(repeats - 1):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times), state


def single_step(config, networks, mesh, batch, max_seconds, repeats) -> tuple[float, float]:
  """(compile s, median step s) of the single-model jitted train step."""
  params, disc = model_lib.init_params(config, networks, jax.random.key(0), OBSERVATION_SHAPE)
  tx, dtx = model_lib.make_optimizer(config, params), model_lib.make_discriminator_optimizer(config)
  state = create_train_state(params, disc, tx, dtx)
  loss_fn = make_loss_fn(config, networks, DATASET_SIZE)
  step = jit_train_step(make_train_step(loss_fn, tx, dtx), mesh, state)
  rng = jax.random.fold_in(jax.random.key(0), 1)
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  t, _ = time_steps(compiled, state, batch, rng, max_seconds, repeats)
  return compile_s, t


def vmapped_step(
  config, networks, mesh, batch, k, max_seconds, repeats, broadcast_batch
) -> tuple[float, float]:
  """(compile s, median step s) of one step of K models (seeds 0..K-1) in one program."""
  seeds = range(k)
  states, tx, dtx = multi_seed.init_states(config, networks, seeds, OBSERVATION_SHAPE)
  loss_fn = make_loss_fn(config, networks, DATASET_SIZE)
  step = multi_seed.jit_multi_seed_train_step(
    multi_seed.make_multi_seed_train_step(make_train_step(loss_fn, tx, dtx), broadcast_batch),
    mesh,
    states,
  )
  rngs = multi_seed.step_rngs(seeds)
  start = time.perf_counter()
  compiled = step.lower(states, batch, rngs).compile()
  compile_s = time.perf_counter() - start
  t, _ = time_steps(compiled, states, batch, rngs, max_seconds, repeats)
  return compile_s, t


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
  parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
  parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 4, 8], help="values of K")
  parser.add_argument("--repeats", type=int, default=20, help="most timed steps per measurement")
  parser.add_argument(
    "--max-seconds",
    type=float,
    default=20.0,
    help="time budget of each measurement: fewer repeats (at least 3) where a step is slow",
  )
  parser.add_argument(
    "--broadcast-batch",
    action="store_true",
    help="broadcast the batch to [K, B, ...] inside the step (make_multi_seed_train_step)",
  )
  args = parser.parse_args()
  mesh = data.make_data_mesh()
  print(
    f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s); "
    f"batch {'broadcast to [K, B, ...]' if args.broadcast_batch else 'shared (in_axes None)'}"
  )
  header = (
    f"{'arch':5s} {'batch':>5s} {'K':>3s} {'compile s':>9s} {'K*single ms':>11s} "
    f"{'vmap ms':>9s} {'img/s/model':>11s} {'speed-up':>8s}"
  )
  print(header)
  for arch in args.archs:
    for b in args.batch_sizes:
      config = load_config(arch, b)
      networks = model_lib.build_networks(config, OBSERVATION_SHAPE)
      batch = random_batch(mesh, b)
      compile_s, t_single = single_step(
        config, networks, mesh, batch, args.max_seconds, args.repeats
      )
      print(
        f"{arch:5s} {b:5d} {'-':>3s} {compile_s:9.2f} {1e3 * t_single:11.1f} {'(single)':>9s} "
        f"{b / t_single:11.0f} {'':>8s}",
        flush=True,
      )
      for k in args.seeds:
        compile_s, t_vmap = vmapped_step(
          config, networks, mesh, batch, k, args.max_seconds, args.repeats, args.broadcast_batch
        )
        print(
          f"{arch:5s} {b:5d} {k:3d} {compile_s:9.2f} {1e3 * k * t_single:11.1f} "
          f"{1e3 * t_vmap:9.1f} {b / t_vmap:11.0f} {k * t_single / t_vmap:8.2f}",
          flush=True,
        )


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # as experiments/main.py does
  main()
