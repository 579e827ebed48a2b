"""A/B of train-step variants, timed in turn in one process (this CPU drifts by 20% in minutes).

  python benchmarks/ab_step.py --arch conv --batch-size 64 --rounds 6 \
      base subpixel:conv_lowering.CPU_DEFAULT=subpixel \
      chunk8:conv_lowering.CPU_DEFAULT=subpixel,conv_lowering.NETWORK_CHUNK=8
  python benchmarks/ab_step.py --arch mlp --batch-size 2048 \
      base vw512:xla.xla_cpu_prefer_vector_width=512

Each variant is NAME or NAME:SETTING,SETTING,... with a SETTING either
`conv_lowering.CONSTANT=value` (a module constant of `disentangle_jax.models.conv_lowering`, set
while that variant's step is traced, then restored) or `xla.option=value` (an XLA compile
option for that variant; true/false are booleans). Every variant's step is built as
benchmarks/bench_vs_torch.py builds it, compiled once, and checked to give the same loss as the
first variant on the same batch (to float32 rounding: 1e-5 relative). Then each round times
every variant for --seconds (median step), in an order that alternates between rounds, and the
table gives images/s per round and the median, and each variant's median ratio to the first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from bench_vs_torch import compile_jax_step, random_images, stepper

from disentangle_jax.models import conv_lowering
from disentangle_jax.training import host_memory

MODULES = {"conv_lowering": conv_lowering}


def parse_variant(spec: str) -> tuple[str, dict, dict]:
  """'name:mod.CONST=1,xla.opt=true' -> (name, {(module, CONST): 1}, {opt: True})."""
  name, _, settings = spec.partition(":")
  constants, options = {}, {}
  for setting in filter(None, settings.split(",")):
    key, sep, raw = setting.partition("=")
    prefix, _, attr = key.partition(".")
    if not sep or not attr or prefix not in (*MODULES, "xla"):
      raise ValueError(
        f"Bad setting {setting!r} in {spec!r}: use module.CONSTANT=value or xla.option=value."
      )
    value = {"true": True, "false": False}.get(raw.lower(), raw)
    if prefix == "xla":
      options[attr] = value
      continue
    module = MODULES[prefix]
    if not hasattr(module, attr):
      raise ValueError(f"{prefix} has no constant {attr!r} (in {spec!r}).")
    constants[(module, attr)] = type(getattr(module, attr))(value)
  return name, constants, options


def compile_variant(arch, images, constants, options):
  """(run, loss of the first step): the variant's step compiled with its settings in force."""
  saved = {key: getattr(*key) for key in constants}
  try:
    for (module, attr), value in constants.items():
      setattr(module, attr, value)
    compiled, state, batch, rng, _ = compile_jax_step(arch, images, options)
  finally:
    for (module, attr), value in saved.items():
      setattr(module, attr, value)
  run = stepper(compiled, state, batch, rng)
  return run, float(run()["loss"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variants", nargs="+", help="NAME or NAME:SETTING,... (see above)")
  parser.add_argument("--arch", default="conv", choices=["mlp", "conv"])
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
  args = parser.parse_args()

  images = random_images(args.batch_size)
  runs, losses = {}, {}
  for spec in args.variants:
    name, constants, options = parse_variant(spec)
    runs[name], losses[name] = compile_variant(args.arch, images, constants, options)
    runs[name]()
  first = next(iter(losses))
  for name, loss in losses.items():
    if not np.isclose(loss, losses[first], rtol=1e-5):
      raise SystemExit(
        f"{name} gives loss {loss} where {first} gives {losses[first]}: not the same step."
      )

  names = list(runs)
  rates: dict[str, list[float]] = {name: [] for name in names}
  for r in range(args.rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      times, start = [], time.perf_counter()
      while time.perf_counter() - start < args.seconds or len(times) < 3:
        tick = time.perf_counter()
        runs[name]()
        times.append(time.perf_counter() - tick)
      rates[name].append(args.batch_size / statistics.median(times))
    print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)
  print(
    f"\n{args.arch} batch {args.batch_size}, images/s by round, median, median ratio to {first}:"
  )
  for name in names:
    ratio = statistics.median(a / b for a, b in zip(rates[name], rates[first], strict=True))
    print(
      f"{name:12s} "
      + " ".join(f"{v:6.0f}" for v in rates[name])
      + f"   median {statistics.median(rates[name]):6.0f}   x{ratio:.2f}"
    )


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # as experiments/main.py does
  main()
