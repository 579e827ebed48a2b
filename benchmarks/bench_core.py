"""Time and memory of the core math: ELBO decomposition terms and the Lp-nested prior.

  python benchmarks/bench_core.py            # full sizes (batch 2048, 10**6 points)
  python benchmarks/bench_core.py --quick    # small sizes, a smoke run

Each function is jitted once; the figure is the median wall time of --repeats calls after a
warm-up call. "XLA temp" is the scratch memory of the compiled program (its peak working set
beyond inputs and outputs), from `compiled.memory_analysis()`; "peak RSS" is the process's.
"""

import argparse
import itertools
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

import disentangle_jax as dj  # noqa: E402


def _time(fn, *args, repeats: int) -> tuple[float, float, float]:
  """(compile s, median run s, XLA temp MiB) of jax.jit(fn)(*args)."""
  jitted = jax.jit(fn)
  compile_s, median = common.time_jitted(jitted, *args, repeats=repeats, max_seconds=1e9)
  memory = jitted.lower(*args).compile().memory_analysis()
  temp_mib = memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan")
  return compile_s, median, temp_mib


def _decomposition_rows(batch: int, latents: tuple[int, ...], repeats: int):
  for k in latents:
    keys = jax.random.split(jax.random.key(k), 3)
    mean = jax.random.normal(keys[0], (batch, k))
    log_var = jax.random.uniform(keys[1], (batch, k), minval=-3, maxval=0)
    z = dj.gaussian_sample(keys[2], mean, log_var)
    for estimator in ("mss", "mws"):

      def terms(z, mean, log_var, estimator=estimator):
        out = dj.elbo_decomposition(
          z,
          mean,
          log_var,
          dj.standard_normal_log_prob(z),
          dataset_size=737_280,
          estimator=estimator,
        )
        return jax.tree.map(jnp.mean, out)

      def grads(z, mean, log_var, terms=terms):
        return jax.grad(lambda *a: sum(terms(*a)), argnums=(0, 1, 2))(z, mean, log_var)

      for what, fn in (("terms", terms), ("terms+grad", grads)):
        c, t, m = _time(fn, z, mean, log_var, repeats=repeats)
        yield f"decomposition {estimator} {what}", f"B={batch} K={k}", c, t, m


def _lp_nested_rows(num_points: int, repeats: int):
  layouts = {
    "ISA [2.0,[(2.1,6)]*3] n=18": [2.0, [(2.1, 6)] * 3],
    "ISA [2.1,[(2.2,5)]*2] n=10": [2.1, [(2.2, 5)] * 2],
  }
  for name, spec in layouts.items():
    prior = dj.LpNested.from_spec(spec)
    z = prior.sample(seed=jax.random.key(0), sample_shape=(num_points,))
    log_prob = lambda z, e, prior=prior: dj.lp_nested_log_prob(z, prior.tree, e, prior.scale)
    grad = jax.grad(lambda z, e, log_prob=log_prob: jnp.sum(log_prob(z, e)), argnums=(0, 1))
    sample = lambda key, e, prior=prior: dj.lp_nested_sample(
      key, prior.tree, e, prior.scale, sample_shape=(num_points,)
    )
    for what, fn, args in (
      ("log-density", log_prob, (z, prior.exponents)),
      ("log-density grad (z, p)", grad, (z, prior.exponents)),
      ("sampler", sample, (jax.random.key(1), prior.exponents)),
    ):
      c, t, m = _time(fn, *args, repeats=repeats)
      yield f"lp-nested {what}", f"{name}, {num_points:.0e} pts", c, t, m


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  batch, points = (256, 10**4) if args.quick else (2048, 10**6)
  print(common.machine())
  header = f"{'what':38s} {'size':36s} {'compile s':>9s} {'median ms':>10s} {'XLA temp MiB':>12s}"
  print(header)
  print("-" * len(header))
  rows = itertools.chain(
    _decomposition_rows(batch, (10, 20), args.repeats), _lp_nested_rows(points, args.repeats)
  )
  for what, size, c, t, m in rows:  # printed as measured
    print(f"{what:38s} {size:36s} {c:9.2f} {1e3 * t:10.1f} {m:12.1f}", flush=True)
  print(f"peak RSS of the process: {common.peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
  main()
