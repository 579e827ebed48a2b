"""Benchmark of the data layer: dSprites generation, cache loading, input pipeline throughput.

Run from the repository root:

  python benchmarks/bench_data.py                      # fresh cache in a temporary folder
  python benchmarks/bench_data.py --cache-dir DIR      # reuse / build DIR's cache
  python benchmarks/bench_data.py --steps 50 --batch-sizes 64 2048

Prints a table: full-set generation time, cache load time (checksum verified or not), batches/s
of the sharded prefetching iterator on one CPU device, and the peak resident memory after each.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

# One CPU device, set before jax is imported (the pipeline imports it).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from disentangle_jax import data  # noqa: E402
from disentangle_jax.data import dsprites  # noqa: E402

peak_rss_mib = common.peak_rss_mib


def time_pipeline(dataset, batch_size: int, steps: int, warmup: int) -> float:
  """Batches per second of ShardedBatchIterator, the consumer only waiting for each batch."""
  with data.ShardedBatchIterator(dataset, batch_size=batch_size, seed=0) as batches:
    for _ in range(warmup):
      jax.block_until_ready(next(batches))
    start = time.perf_counter()
    for _ in range(steps):
      jax.block_until_ready(next(batches))
    return steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cache-dir", default=None, help="cache folder (default: a fresh temp dir)")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 2048])
  parser.add_argument("--steps", type=int, default=100, help="timed batches per measurement")
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument(
    "--datasets", nargs="+", default=["dsprites", "dsprites:render", "noisy_dsprites"]
  )
  args = parser.parse_args()

  temporary = args.cache_dir is None
  cache_dir = tempfile.mkdtemp(prefix="bench_data_") if temporary else args.cache_dir
  rows = []
  try:
    existed = dsprites.cache_file(cache_dir).exists()
    start = time.perf_counter()
    dsprites.load_or_generate(cache_dir)
    label = "load existing cache" if existed else "generate full set + write cache"
    rows.append((label, f"{time.perf_counter() - start:.2f} s", peak_rss_mib()))
    for verify in (True, False):
      start = time.perf_counter()
      packed = dsprites.load_or_generate(cache_dir, verify=verify)
      elapsed = time.perf_counter() - start
      name = "load cache (sha256 verified)" if verify else "load cache (no checksum)"
      rows.append((name, f"{elapsed:.3f} s", peak_rss_mib()))
    rows.append(("cache file size", f"{packed.nbytes / 2**20:.0f} MiB", peak_rss_mib()))

    for spec in args.datasets:
      name, _, source = spec.partition(":")
      kwargs = {"cache_dir": cache_dir, "source": source or "cache"}
      if source == "render":
        kwargs.pop("cache_dir")
      dataset = data.get_dataset(name, **kwargs)
      for batch_size in args.batch_sizes:
        rate = time_pipeline(dataset, batch_size, args.steps, args.warmup)
        label = f"pipeline {spec} (source={kwargs['source']}) B={batch_size}"
        value = f"{rate:.1f} batches/s ({rate * batch_size / 1e3:.0f}k img/s)"
        rows.append((label, value, peak_rss_mib()))
  finally:
    if temporary:
      shutil.rmtree(cache_dir, ignore_errors=True)

  print(common.machine())
  width = max(len(r[0]) for r in rows)
  print(f"{'measurement':<{width}}  {'result':<34}  peak RSS")
  for label, value, rss in rows:
    print(f"{label:<{width}}  {value:<34}  {rss:7.0f} MiB")


if __name__ == "__main__":
  main()
