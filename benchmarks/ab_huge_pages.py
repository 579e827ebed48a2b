"""A/B of huge-page malloc (`training.host_memory`): the train step in fresh processes, in turn.

  python benchmarks/ab_huge_pages.py --arch mlp --batch-size 64 --rounds 4
  python benchmarks/ab_huge_pages.py --arch conv --batch-size 64 2048

glibc reads its tunables when a process starts, so each measurement is a new process: the
project's train step (built as benchmarks/bench_vs_torch.py builds it) on its fixed random
batch, 3 warm-up steps, then steps for --seconds; it reports the median step's images/s and the
minor page faults per step (getrusage). "huge" runs with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(what `experiments/main.py` restarts itself with), "default" with DISENTANGLE_JAX_HUGE_PAGES=0
and no tunable. The two alternate, and who goes first alternates between rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from disentangle_jax.training import host_memory


def worker(arch: str, batch_size: int, seconds: float) -> None:
  """Prints one JSON line: images/s (median step), minor page faults per step, GLIBC_TUNABLES."""
  from bench_vs_torch import compile_jax_step, random_images, stepper

  compiled, state, batch, rng, _ = compile_jax_step(arch, random_images(batch_size))
  run = stepper(compiled, state, batch, rng)
  for _ in range(3):
    run()
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  times, start = [], time.perf_counter()
  while time.perf_counter() - start < seconds or len(times) < 3:
    tick = time.perf_counter()
    run()
    times.append(time.perf_counter() - tick)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  result = {
    "img_s": batch_size / statistics.median(times),
    "faults_per_step": faults / len(times),
    "tunables": os.environ.get("GLIBC_TUNABLES", ""),
  }
  print(json.dumps(result), flush=True)


def measure(setting: str, arch: str, batch_size: int, seconds: float) -> dict:
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if setting == "huge":
    environ["GLIBC_TUNABLES"] = f"{host_memory.TUNABLE}=1"
  else:
    environ[host_memory.OPT_OUT] = "0"
  command = [sys.executable, __file__, "--worker", "--arch", arch, "--seconds", str(seconds)]
  out = subprocess.run(
    [*command, "--batch-size", str(batch_size)],
    env=environ,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
  parser.add_argument("--batch-size", type=int, nargs="+", default=[64])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per process")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.arch, args.batch_size[0], args.seconds)
    return
  print(f"kernel huge page mode: {host_memory.thp_mode()}")
  for batch_size in args.batch_size:
    rates: dict[str, list[float]] = {"default": [], "huge": []}
    for r in range(args.rounds):
      for setting in ("default", "huge") if r % 2 == 0 else ("huge", "default"):
        result = measure(setting, args.arch, batch_size, args.seconds)
        rates[setting].append(result["img_s"])
        print(
          f"{args.arch} batch {batch_size} round {r + 1} {setting:7s} {result['img_s']:7.0f} "
          f"img/s, {result['faults_per_step']:7.0f} faults/step "
          f"(GLIBC_TUNABLES={result['tunables']!r})",
          flush=True,
        )
    ratio = statistics.median(h / d for h, d in zip(rates["huge"], rates["default"], strict=True))
    print(
      f"{args.arch} batch {batch_size}: default {statistics.median(rates['default']):.0f}, "
      f"huge {statistics.median(rates['huge']):.0f} img/s (medians), huge / default x{ratio:.2f}"
    )


if __name__ == "__main__":
  main()
