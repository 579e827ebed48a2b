"""Runs a benchmark in two checkouts (e.g. before and after a change) in alternating rounds.

  git worktree add /tmp/before <commit>
  python benchmarks/compare_trees.py --trees before=/tmp/before after=. --rounds 2 \
      --variant "before default=" --variant "before no-onednn=DISENTANGLE_JAX_ONEDNN=0" \
      --variant "after flax=" --variant "after onednn=--conv-impl onednn" \
      -- --archs mlp conv --batch-sizes 64 2048

Each variant is "<tree> <label>=<settings>": settings are ENV=value words and extra arguments
for that tree's benchmarks/bench_train.py. The variants run one after another in fresh processes,
round after round, so a machine whose speed drifts affects every variant alike; the table gives
each variant's median images/s over the rounds for every (arch, batch) row the benchmark prints
("arch batch ... step_ms img/s", the last column read as images/s).
"""

import argparse
import collections
import os
import pathlib
import statistics
import subprocess
import sys


def parse_variant(text: str, trees: dict[str, str]):
  tree, _, rest = text.partition(" ")
  label, _, settings = rest.partition("=")
  if tree not in trees or not label:
    raise SystemExit(f"variant {text!r}: want '<tree> <label>=<settings>', tree in {list(trees)}")
  env, args = {}, []
  for word in settings.split():
    if "=" in word and not word.startswith("-"):
      key, _, value = word.partition("=")
      env[key] = value
    else:
      args.append(word)
  return tree, label, env, args


def run(tree: str, env: dict, args: list[str], bench_args: list[str]) -> dict:
  command = [sys.executable, "benchmarks/bench_train.py", *bench_args, *args]
  # The tree's own package first: an editable install would otherwise import the other one.
  env = {**os.environ, "PYTHONPATH": tree, **env}
  done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
  if done.returncode:
    raise SystemExit(f"{command} in {tree} failed:\n{done.stderr[-2000:]}")
  rows = {}
  for line in done.stdout.splitlines():
    words = line.split()
    if len(words) >= 5 and words[0] in ("mlp", "conv") and words[1].isdigit():
      rows[words[0], int(words[1])] = float(words[-1])
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trees", nargs="+", required=True, help="name=path ...")
  parser.add_argument("--variant", action="append", required=True)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("bench_args", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  trees = dict(t.split("=", 1) for t in args.trees)
  trees = {k: str(pathlib.Path(v).resolve()) for k, v in trees.items()}
  variants = [parse_variant(v, trees) for v in args.variant]
  bench_args = [a for a in args.bench_args if a != "--"]
  results = collections.defaultdict(list)
  for r in range(args.rounds):
    for tree, label, env, extra in variants:
      for row, rate in run(trees[tree], env, extra, bench_args).items():
        results[tree, label, row].append(rate)
        print(
          f"round {r + 1} {tree:>8s} {label:>14s} {row[0]:>5s} {row[1]:5d} {rate:9.0f} img/s",
          flush=True,
        )
  print("\nmedian images/s over the rounds:")
  for (tree, label, row), rates in sorted(results.items(), key=lambda kv: kv[0][2]):
    print(f"{row[0]:>5s} {row[1]:5d} {tree:>8s} {label:>14s} {statistics.median(rates):9.0f}")


if __name__ == "__main__":
  main()
