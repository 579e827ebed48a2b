"""Metrics at sweep scale: the full report, DCI's boosters, and M models scored together.

  python benchmarks/bench_metrics.py report [--before /tmp/metrics_before]
  python benchmarks/bench_metrics.py dci [--gbt-cache /tmp/gbt_ref.npz]
  python benchmarks/bench_metrics.py stack [--models 8] [--chen-samples 2000]

report: `training.report.write_report` end to end (encoding, decomposition, every metric at
  disentanglement_lib's default sizes, pictures) for a freshly initialised MLP (K = 10) on the
  generated dSprites, in a subprocess; with --before, the same in a subprocess whose PYTHONPATH
  is another checkout (e.g. `git worktree add /tmp/metrics_before <commit>`), so today's and the
  old figure come from one invocation. A metric's cost depends on the data sizes, not on what
  the code means.
dci: the four codes of docs/benchmarks.md (good, rotated, partial, noise; 5 factor latents
  plus 5 noise latents on dSprites' factor sizes, 10,000 / 5,000 points): "hist" timed, and its
  scores against "gbt" (disentanglement_lib's booster, about 15 minutes per code on a loaded
  2-core machine; cached in --gbt-cache when given).
stack: M models' whole-dataset posteriors (one encoding plus independent perturbations, so the
  models differ) scored by the stacked programs and one model after another, in one process.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).parents[1]
SIZES = (3, 6, 40, 32, 32)
CODES = ("good", "rotated", "partial", "noise")


def _load_average() -> str:
  return " ".join(open("/proc/loadavg").read().split()[:3])


# ------------------------------------------------------------------------------------ report


def run_report(seed: int, out: str) -> dict:
  """write_report for a fresh MLP in this process; returns the timings of report.json."""
  import jax

  from disentangle_jax import data
  from disentangle_jax.training import config as config_lib
  from disentangle_jax.training import model as model_lib
  from disentangle_jax.training.report import write_report

  dataset = data.get_dataset("dsprites")
  config = config_lib.base_config()
  config.seed = seed
  networks = model_lib.build_networks(config, dataset.observation_shape)
  params, _ = model_lib.init_params(networks, jax.random.key(seed))
  start = time.perf_counter()
  summary = write_report(config, networks, params, dataset, out, out_dir=out)
  total = time.perf_counter() - start
  metrics = {name: result.get("seconds") for name, result in summary["metrics"].items()}
  return {"total_seconds": total, "metric_seconds": metrics, "scores": summary["scores"]}


def report(args):
  rows = []
  trees = [("current", str(REPO))] + ([("before", args.before)] if args.before else [])
  for label, tree in trees:
    env = dict(os.environ, PYTHONPATH=tree)
    command = [sys.executable, __file__, "report-child", "--seed", str(args.seed)]
    command += ["--out", f"/tmp/bench_metrics_report_{label}"]
    load = _load_average()
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    wall = time.perf_counter() - start
    if out.returncode:
      print(f"{label}: failed\n{out.stderr[-3000:]}")
      continue
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(tree=label, process_seconds=wall, load_before=load, load_after=_load_average())
    rows.append(row)
    print(f"{label}: report {row['total_seconds']:.1f} s (process {wall:.1f} s), load {load}")
    for name, seconds in row["metric_seconds"].items():
      print(f"  {name:18s} {seconds:8.1f} s")
    print("  scores:", ", ".join(f"{k} {v:.3f}" for k, v in row["scores"].items()), flush=True)
  return rows


# --------------------------------------------------------------------------------------- DCI


def dci_codes(kind: str, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[N, 10] codes of `factors` (dSprites sizes): 5 latents by kind, then 5 noise latents.

  good: scaled factors + N(0, 0.02^2); rotated: pairs (0, 1) and (2, 3) rotated by 45 degrees;
  partial: shape lost (noise), scale and posX kept, orientation and posX mixed by 30 degrees,
  posY with noise 0.2; noise: N(0, 1).
  """
  x = factors / (np.array(SIZES) - 1.0)
  n = len(x)

  def noise():
    return rng.standard_normal((n, 5))

  if kind == "good":
    z = x + 0.02 * noise()
  elif kind == "rotated":
    c = np.sqrt(0.5)
    turn = np.eye(5)
    turn[0:2, 0:2] = turn[2:4, 2:4] = [[c, -c], [c, c]]
    z = x @ turn + 0.02 * noise()
  elif kind == "partial":
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    turn = np.eye(5)
    turn[2:4, 2:4] = [[c, -s], [s, c]]
    z = x @ turn + np.array([0.0, 0.02, 0.02, 0.02, 0.2]) * noise()
    z[:, 0] = rng.standard_normal(n)
  else:
    z = noise()
  return np.concatenate([z, rng.standard_normal((n, 5))], axis=1)


def dci(args):
  from disentangle_jax.metrics import dci as dci_lib
  from tests.metrics.toy import FactorImages

  dataset = FactorImages(SIZES)
  rng = np.random.default_rng(0)
  train_factors = dataset.sample_factors(10_000, rng)
  test_factors = dataset.sample_factors(5_000, rng)
  cache = dict(np.load(args.gbt_cache)) if args.gbt_cache and os.path.exists(args.gbt_cache) else {}
  rows = []
  for kind in CODES:
    train, test = dci_codes(kind, train_factors, rng), dci_codes(kind, test_factors, rng)
    row = {"code": kind, "load": _load_average()}
    for model in ("hist", "gbt"):
      if model == "gbt" and f"{kind}_imp" in cache:
        importance, test_scores = cache[f"{kind}_imp"], cache[f"{kind}_tes"]
        row["gbt_seconds"] = float(cache.get(f"{kind}_seconds", np.nan))
      elif model == "gbt" and not args.gbt_cache:
        continue
      else:
        start = time.perf_counter()
        importance, _, test_scores = dci_lib.dci_importance_matrix(
          train, train_factors, test, test_factors, 1, importance_model=model
        )
        row[f"{model}_seconds"] = time.perf_counter() - start
        if model == "gbt":
          cache.update({f"{kind}_imp": importance, f"{kind}_tes": test_scores})
          cache[f"{kind}_seconds"] = row["gbt_seconds"]
          np.savez(args.gbt_cache, **cache)
      scores = dci_lib.dci_scores(importance)
      row[model] = {
        "D": scores["dci_disentanglement"],
        "C": scores["dci_completeness"],
        "I": float(np.mean(test_scores)),
      }
    line = f"{kind:8s} hist {row['hist_seconds']:6.1f} s " + " ".join(
      f"{k} {v:.3f}" for k, v in row["hist"].items()
    )
    if "gbt" in row:
      line += " | gbt " + " ".join(f"{k} {v:.3f}" for k, v in row["gbt"].items())
      line += " | |diff| " + " ".join(
        f"{k} {abs(row['hist'][k] - row['gbt'][k]):.3f}" for k in "DCI"
      )
    print(line, f"(load {row['load']})", flush=True)
    rows.append(row)
  return rows


# ------------------------------------------------------------------------------------- stack


def stack(args):
  import jax

  from disentangle_jax import data, metrics
  from disentangle_jax.metrics import chen, mig, modularity, stacked
  from disentangle_jax.training import config as config_lib
  from disentangle_jax.training import model as model_lib
  from disentangle_jax.training.report import make_encode_fn

  dataset = data.get_dataset("dsprites")
  config = config_lib.base_config()
  networks = model_lib.build_networks(config, dataset.observation_shape)
  params, _ = model_lib.init_params(networks, jax.random.key(0))
  start = time.perf_counter()
  base = metrics.encode_all(dataset, make_encode_fn(networks, params))
  print(f"encoding {dataset.num_examples} images: {time.perf_counter() - start:.1f} s")
  rng = np.random.default_rng(1)
  encodings = [
    metrics.Encoding(
      (base.mean + 0.1 * rng.standard_normal(base.mean.shape)).astype(np.float32),
      base.log_var,
      base.factors,
    )
    for _ in range(args.models)
  ]
  means = np.stack([e.mean for e in encodings])
  log_vars = np.stack([e.log_var for e in encodings])
  rows = []

  def timed(label, fn):
    fn_start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - fn_start
    rows.append({"what": label, "seconds": seconds, "load": _load_average()})
    print(f"  {label:45s} {seconds:8.1f} s (load {rows[-1]['load']})", flush=True)
    return seconds

  factors = base.factors
  codes_factors = dataset.sample_factors(10_000, np.random.default_rng(2))
  index = dataset.factors_to_index(codes_factors)
  codes = means[:, index].astype(np.float64)
  s = args.chen_samples
  print(f"M = {args.models} models; Chen's MIG with {s} samples")
  # Warm-up of the compiled programs outside the timings (shapes equal to the timed ones).
  chen.chen_mutual_information_stack(means[:1], log_vars[:1], factors, 0, num_samples=s)
  stacked.binned_scores_stack(codes[:1], codes_factors)
  together = timed(
    "Chen MIG, stacked",
    lambda: chen.chen_mutual_information_stack(means, log_vars, factors, 0, num_samples=s),
  )
  alone = timed(
    "Chen MIG, one after another",
    lambda: [
      chen.chen_mutual_information_stack(
        means[m : m + 1], log_vars[m : m + 1], factors, 0, num_samples=s
      )
      for m in range(args.models)
    ],
  )
  print(f"  Chen MIG ratio (one after another / stacked): {alone / together:.2f}")
  stacked.binned_scores_stack(codes, codes_factors)
  together = timed(
    "binned MIG + modularity MI, stacked", lambda: stacked.binned_scores_stack(codes, codes_factors)
  )

  def one_by_one():
    for m in range(args.models):
      _, _, mi, _ = mig.mig_from_codes(codes[m], codes_factors)
      modularity.modularity_score(mi)

  alone = timed("binned MIG + modularity MI, one after another", one_by_one)
  print(f"  binned ratio (one after another / stacked): {alone / together:.2f}")
  names = "mig_dlib,sap,modularity,beta_vae,factor_vae"
  together = timed(
    f"score_models({names})", lambda: stacked.score_models(dataset, encodings, names=names)
  )

  def each():
    for e in encodings:
      metrics.compute_metrics(dataset, None, names=names, encoded=e, code_table=True)

  alone = timed(f"compute_metrics({names}) per model", each)
  print(f"  classifier metrics ratio (per model / score_models): {alone / together:.2f}")
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("what", choices=["report", "report-child", "dci", "stack"])
  parser.add_argument("--before", default=None, help="another checkout, timed the same way")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="/tmp/bench_metrics_report")
  parser.add_argument("--gbt-cache", default=None, help="npz of gbt's results (read, written)")
  parser.add_argument("--models", type=int, default=8)
  parser.add_argument("--chen-samples", type=int, default=2000)
  parser.add_argument("--json", default=None, help="also write the results here")
  args = parser.parse_args()
  if args.what == "report-child":
    print(json.dumps(run_report(args.seed, args.out)))
    return
  sys.path.insert(0, str(REPO))
  import jax

  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {_load_average()}")
  rows = {"report": report, "dci": dci, "stack": stack}[args.what](args)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
  main()
