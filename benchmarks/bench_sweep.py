"""Sweep throughput: M models as one compiled program against M single-model steps, and the
data held on the device against the host pipeline.

  python benchmarks/bench_sweep.py                      # mlp and conv, M = 4 and 16
  python benchmarks/bench_sweep.py --archs mlp --models 4 --methods map vmap
  python benchmarks/bench_sweep.py --data-only          # host pipeline vs data on the device

Models: experiments/configs/beta_vae.py with `model=mlp` (batch 2048) or `model=conv` (batch
64), M models differing in beta and seed (one program: the betas and seeds are arrays). For
each (arch, M, method): the median wall time of one step of the M-model program (`t_group`,
`multi_model.make_multi_model_step`, "map" or "vmap" through the models) against M x the median
step of one model alone (`t_single`, the plain jitted step), on a fixed device batch; ratio =
M * t_single / t_group (>= 1: the sweep is not slower than M runs one after another). Compile
times are printed too: a sweep compiles once, M separate runs M times.

--data-only: steps/s of the beta-VAE MLP at batch 64 and 2048 fed by the host pipeline
(`data.ShardedBatchIterator`: gather, unpack and transfer per step) against dSprites held on the
device as packed bits (`data.on_device`: the step gathers and unpacks its batch).
"""

import argparse
import pathlib
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from disentangle_jax import data  # noqa: E402
from disentangle_jax.data import on_device  # noqa: E402
from disentangle_jax.models.registry import CONV_IMPLS  # noqa: E402
from disentangle_jax.training import multi_model  # noqa: E402
from disentangle_jax.training.train_step import build_trainer, jit_train_step  # noqa: E402

BATCH = {"mlp": 2048, "conv": 64}


def configs(arch: str, num_models: int, conv_impl: str):
  base = common.experiment_config(
    "beta_vae", f"model={arch}", **{"model.conv_impl": conv_impl, "dataset_kwargs.source": "render"}
  )
  out = []
  for m in range(num_models):
    out.append(
      common.experiment_config(
        "beta_vae",
        f"model={arch}",
        seed=m,
        **{
          "model.conv_impl": conv_impl,
          "dataset_kwargs.source": "render",
          "objective.beta_vae.beta": 1.0 + m,
        },
      )
    )
  return base, out


def fixed_batch(dataset, batch_size: int, mesh):
  batch = data.host_batch(dataset, 0, batch_size=batch_size, seed=0)
  return jax.device_put(batch, multi_model.batch_shardings(mesh, None, "data"))


def time_single(arch, conv_impl, args):
  base, _ = configs(arch, 1, conv_impl)
  dataset = data.get_dataset("dsprites", source="render")
  trainer = build_trainer(base, dataset.observation_shape, dataset.num_examples)
  state = trainer.init_state(0)
  mesh = data.make_data_mesh()
  step = jit_train_step(trainer.train_step, mesh, state)
  batch = fixed_batch(dataset, BATCH[arch], mesh)
  return common.time_jitted(
    step,
    state,
    batch,
    jax.random.key(1),
    repeats=args.repeats,
    max_seconds=args.max_seconds,
    donate=True,
  )


def time_group(arch, conv_impl, num_models, method, args):
  base, model_configs = configs(arch, num_models, conv_impl)
  dataset = data.get_dataset("dsprites", source="render")
  trainer = build_trainer(base, dataset.observation_shape, dataset.num_examples)
  states = trainer.init_models(model_configs)
  mesh = multi_model.make_model_mesh()
  step = multi_model.jit_multi_model_step(
    multi_model.make_multi_model_step(trainer.train_step, method), mesh, states
  )
  batch = fixed_batch(dataset, BATCH[arch], mesh)
  rngs = multi_model.step_rngs([c.seed for c in model_configs])
  return common.time_jitted(
    step, states, batch, rngs, repeats=args.repeats, max_seconds=args.max_seconds, donate=True
  )


def data_rates(batch_size: int, steps: int) -> tuple[float, float]:
  """(host pipeline steps/s, data-on-device steps/s) of the MLP beta-VAE train loop's core."""
  config = common.experiment_config("beta_vae", "model=mlp", batch_size=batch_size)
  dataset = data.get_dataset("dsprites")  # the cached set (generated on first use)
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  mesh = data.make_data_mesh()
  rates = []
  for device in (False, True):
    state = trainer.init_state(0)
    step_fn, keys = trainer.train_step, None
    if device:
      step_fn, keys = on_device.with_images_from_packed(step_fn), ("factors", "index", "packed")
    step = jit_train_step(step_fn, mesh, state, batch_keys=keys)
    packed = on_device.place_packed(dataset, mesh) if device else None
    with data.ShardedBatchIterator(
      dataset, batch_size=batch_size, seed=0, mesh=mesh, num_steps=steps + 3, images=not device
    ) as batches:
      for i, batch in enumerate(batches):
        if packed is not None:
          batch = {**batch, "packed": packed}
        if i == 3:  # after compiling and warming up
          jax.block_until_ready(state)
          start = time.perf_counter()
        state, metrics = step(state, batch, jax.random.key(1))
      jax.block_until_ready(metrics)
    rates.append(steps / (time.perf_counter() - start))
  return tuple(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", nargs="+", default=["mlp", "conv"])
  parser.add_argument("--models", nargs="+", type=int, default=[4, 16])
  parser.add_argument("--methods", nargs="+", default=["map", "vmap"])
  parser.add_argument("--conv-impl", default="flax", choices=CONV_IMPLS)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--max-seconds", type=float, default=60.0, help="per measurement")
  parser.add_argument("--data-only", action="store_true")
  parser.add_argument("--data-steps", type=int, default=30)
  args = parser.parse_args()
  print(common.machine())
  if not args.data_only:
    print(
      f"{'arch':5s} {'batch':>5s} {'M':>3s} {'method':>6s} {'compile_s':>9s} {'t_group_ms':>10s} "
      f"{'t_single_ms':>11s} {'ratio':>6s}"
    )
    for arch in args.archs:
      single_compile, t_single = time_single(arch, args.conv_impl, args)
      for num_models in args.models:
        for method in args.methods:
          compile_s, t_group = time_group(arch, args.conv_impl, num_models, method, args)
          ratio = num_models * t_single / t_group
          print(
            f"{arch:5s} {BATCH[arch]:5d} {num_models:3d} {method:>6s} {compile_s:9.1f} "
            f"{1e3 * t_group:10.1f} {1e3 * t_single:11.1f} {ratio:6.2f}",
            flush=True,
          )
      print(f"  ({arch}: one model's step compiles in {single_compile:.1f} s)", flush=True)
  print("data: host pipeline vs dSprites on the device (MLP beta-VAE, steps/s)")
  for batch_size in (64, 2048):
    steps = args.data_steps if batch_size == 64 else max(5, args.data_steps // 6)
    host, device = data_rates(batch_size, steps)
    ratio = device / host
    print(f"  batch {batch_size:5d}: host {host:7.2f}  on device {device:7.2f}  ratio {ratio:5.2f}")
  print(f"peak RSS {common.peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
  main()
