"""Training throughput: the jitted train step per architecture, batch size and conv layers.

  python benchmarks/bench_train.py                          # mlp and conv, batch 64, 256, 2048
  python benchmarks/bench_train.py --archs conv --batch-sizes 64 --conv-impl onednn
  python benchmarks/bench_train.py --archs mlp --batch-sizes 256 --loop-steps 300

For each architecture (experiments/configs/beta_vae.py with `model=mlp|conv`: beta-VAE,
Bernoulli, Adam) and batch size: the compile time of the jitted train step and the median wall
time of a step on a fixed device batch, as images/s. With --loop-steps, the whole
`train_and_evaluate` loop (input pipeline, metrics, NaN guard, logging; checkpoints only at the
end) runs that many steps and its steps/s, read from metrics.jsonl, is compared with the bare
step's. Rows print as they are measured: `arch batch conv_impl compile_s step_ms img/s`.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

import jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from disentangle_jax import data  # noqa: E402
from disentangle_jax.models.registry import CONV_IMPLS  # noqa: E402
from disentangle_jax.training import host_memory, train_and_evaluate  # noqa: E402
from disentangle_jax.training.train_step import build_trainer, jit_train_step  # noqa: E402


def bare_step(arch: str, batch_size: int, conv_impl: str, repeats: int, max_seconds: float):
  """(compile s, median step s) of the jitted train step on one fixed device batch."""
  config = common.experiment_config(
    "beta_vae", f"model={arch}", batch_size=batch_size, **{"model.conv_impl": conv_impl}
  )
  dataset = data.get_dataset("dsprites", source="render")
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  state = trainer.init_state(0)
  step = jit_train_step(trainer.train_step, data.make_data_mesh(), state)
  batch = jax.device_put(data.host_batch(dataset, 0, batch_size=batch_size, seed=0))
  return common.time_jitted(
    step, state, batch, jax.random.key(1), repeats=repeats, max_seconds=max_seconds, donate=True
  )


def loop_rate(arch: str, batch_size: int, conv_impl: str, steps: int) -> float:
  """Median steps/s of train_and_evaluate's logging windows after the first (compile) one."""
  config = common.experiment_config(
    "beta_vae",
    f"model={arch}",
    batch_size=batch_size,
    num_steps=steps,
    log_every=max(steps // 6, 1),
    checkpoint_every=10 * steps,
    **{"model.conv_impl": conv_impl, "eval.num_examples": 1000, "eval.report": False},
  )
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config.lock(), workdir)
    lines = [json.loads(x) for x in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return statistics.median(line["steps_per_second"] for line in lines[1:-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", nargs="+", default=["mlp", "conv"])
  parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 2048])
  parser.add_argument("--conv-impl", default="flax", choices=CONV_IMPLS)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--max-seconds", type=float, default=30.0, help="per measurement")
  parser.add_argument("--loop-steps", type=int, default=0, help="0: no loop measurement")
  parser.add_argument("--loop-batch", type=int, default=256)
  args = parser.parse_args()
  print(common.machine())
  print(f"host memory: {host_memory.describe()}")
  header = ("arch", "batch", "conv_impl", "compile_s", "step_ms", "img/s")
  print(" ".join(f"{h:>9s}" for h in header))
  bare = {}
  for arch in args.archs:
    impl = args.conv_impl if arch == "conv" else "-"
    for b in args.batch_sizes:
      compile_s, t = bare_step(arch, b, args.conv_impl, args.repeats, args.max_seconds)
      bare[arch, b] = t
      row = (arch, str(b), impl, f"{compile_s:.2f}", f"{1e3 * t:.1f}", f"{b / t:.0f}")
      print(" ".join(f"{v:>9s}" for v in row), flush=True)
  if args.loop_steps:
    for arch in args.archs:
      b = args.loop_batch
      t = bare.get((arch, b))
      if t is None:
        t = bare_step(arch, b, args.conv_impl, args.repeats, args.max_seconds)[1]
      rate = loop_rate(arch, b, args.conv_impl, args.loop_steps)
      print(
        f"main loop {arch} batch {b}: {rate:.2f} steps/s vs bare step {1 / t:.2f} steps/s "
        f"(loop overhead {100 * (1 - rate * t):.1f}%)",
        flush=True,
      )


if __name__ == "__main__":
  main()
