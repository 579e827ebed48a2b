"""What the benchmarks share: the machine line, configs by name, timing, memory.

Benchmarks are scripts, run from the repository root (`python benchmarks/bench_train.py`);
they import this file as a sibling module.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import platform
import resource
import statistics
import time

import jax
import ml_collections

REPO = pathlib.Path(__file__).parents[1]


def machine() -> str:
  """One line: CPU model and vector extension, cores, jax version and devices."""
  model, flags = platform.processor() or platform.machine(), ""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
    names = (line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line)
    model = next(names)
    flags = "AVX-512" if "avx512f" in info else "AVX2" if "avx2" in info else ""
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  return (
    f"{model} {flags}, {os.cpu_count()} cores; jax {jax.__version__}, "
    f"{len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind})"
  )


def experiment_config(name: str, arg: str | None = None, **overrides) -> ml_collections.ConfigDict:
  """experiments/configs/<name>.py's get_config(arg), with dotted-key overrides, locked."""
  path = REPO / "experiments" / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *path, last = key.split(".")
      for part in path:
        node = node[part]
      node[last] = value
  return config


def time_jitted(jitted, *args, repeats: int = 10, max_seconds: float = 30.0, donate: bool = False):
  """(compile s, median s per call) of a jitted function on fixed arguments.

  With `donate`, the function returns its (donated) first argument first, and each call feeds
  the previous result back in (a train step). The number of timed calls is at most `repeats`
  and at least 3, fewer where a call is slow (about `max_seconds` in all).
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start

  def call(args):
    out = compiled(*args)
    jax.block_until_ready(out)
    return ((out[0], *args[1:]) if donate else args), out

  args, _ = call(args)  # warm-up
  start = time.perf_counter()
  args, _ = call(args)
  times = [time.perf_counter() - start]
  for _ in range(max(3, min(repeats, int(max_seconds / max(times[0], 1e-4)))) - 1):
    start = time.perf_counter()
    args, _ = call(args)
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def peak_rss_mib() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
