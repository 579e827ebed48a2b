"""Where the train step's time goes: per-operation durations of the compiled XLA program.

  python benchmarks/profile_step.py --arch mlp --batch-size 2048
  python benchmarks/profile_step.py --arch conv --batch-size 64 --steps 20 --top 30

Builds the jitted beta-VAE train step exactly as benchmarks/bench_vs_torch.py does (same config,
one fixed random binary batch), times --steps steps (median), then records the same number of
steps under `jax.profiler.trace` and sums, per step, the duration of every XLA operation the
runtime reports. Each of the --top slowest operations is printed with the shape it produces and
the JAX operation it came from (the HLO instruction's op_name metadata, e.g.
`transpose(jvp(MLPDecoder))/Dense_3/dot_general` is the input gradient of the decoder's last
dense layer); then the totals per kind of operation (`ynn_fusion`: matrix products run by
YNNPACK, `dot`: products run by XLA's own kernels, `*_fusion`: element-wise loops, `copy*`: layout
changes). Operations run concurrently on the cores, so the sum of durations can differ from the
step's wall time, and an operation that hands its work to a thread pool (XLA's own `dot`) may be
reported with its dispatch time only.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
import time

import jax
from bench_vs_torch import compile_jax_step, random_images, stepper

from disentangle_jax.training import host_memory

# Trace events that are not XLA operations: the runtime's own bookkeeping and Python frames.
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool", "PjitFunction", "Common", "ParseArguments")


def hlo_origins(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (result shape, JAX op_name)} for every named HLO instruction."""
  origins = {}
  instruction = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ")
  for line in hlo_text.splitlines():
    match = instruction.match(line)
    if match:
      op_name = re.search(r'op_name="([^"]*)"', line)
      origin = op_name.group(1).removeprefix("jit(train_step)/") if op_name else ""
      origins.setdefault(match.group(1), (match.group(2), origin))
  return origins


def op_durations(trace_dir: str) -> dict[str, tuple[float, int]]:
  """{event name: (total microseconds, count)} of the complete events in a perfetto trace."""
  (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
  for event in events:
    name = event.get("name", "")
    if event.get("ph") == "X" and not name.startswith(("$", *_NOT_OPS)):
      totals[name][0] += event["dur"]
      totals[name][1] += 1
  return {name: (total, count) for name, (total, count) in totals.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10, help="timed and then profiled steps")
  parser.add_argument("--top", type=int, default=25, help="slowest operations to list")
  args = parser.parse_args()

  compiled, state, batch, rng, _ = compile_jax_step(args.arch, random_images(args.batch_size))
  origins = hlo_origins(compiled.as_text())
  run = stepper(compiled, state, batch, rng)

  for _ in range(2):
    run()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  wall = statistics.median(times)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        run()
    durations = op_durations(trace_dir)

  per_step = {name: total / args.steps / 1e3 for name, (total, _) in durations.items()}
  print(
    f"{args.arch} batch {args.batch_size}: median step {wall * 1e3:.1f} ms "
    f"({args.batch_size / wall:.0f} img/s); operations sum to {sum(per_step.values()):.1f} ms/step"
  )
  print(f"\n{'ms/step':>8s}  {'calls':>5s}  operation, result shape, origin")
  for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[: args.top]:
    shape, origin = origins.get(name, ("", ""))
    calls = durations[name][1] // args.steps
    print(f"{ms:8.2f}  {calls:5d}  {name}  {shape}  {origin}")
  kinds: dict[str, float] = collections.defaultdict(float)
  for name, ms in per_step.items():
    kinds[re.sub(r"\.\d+$", "", name)] += ms
  print("\nper kind of operation (ms/step):")
  for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])[: args.top]:
    print(f"{ms:8.2f}  {kind}")


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # as experiments/main.py does
  main()
