"""The PyTorch comparison's bookkeeping (benchmarks/bench_vs_torch.py), without PyTorch."""

import importlib
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
bench = importlib.import_module("bench_vs_torch")  # benchmarks/ is not a package

MODES = ["eager", "fused", "channels_last", "compile"]


def _records(rates_by_round):
  return [
    {"arch": "conv", "batch": 64, "mode": mode, "round": r, "img_s": rate}
    for r, rates in enumerate(rates_by_round)
    for mode, rate in rates.items()
  ]


def test_ratio_is_taken_within_rounds():
  """A machine twice as fast in round 1: each round has JAX at 0.9 of the best PyTorch mode.

  Medians over rounds of each side would pair JAX's slow round with PyTorch's fast one (and give
  100 / 180 or 180 / 100 depending on the counts); the within-round ratio stays 0.9.
  """
  rounds = [
    {"jax": 90.0, "eager": 50.0, "fused": 100.0, "channels_last": 80.0, "compile": 70.0},
    {"jax": 180.0, "eager": 100.0, "fused": 150.0, "channels_last": 200.0, "compile": 140.0},
    {"jax": 95.0, "eager": 60.0, "fused": 105.56, "channels_last": 90.0, "compile": 75.0},
  ]
  row = bench.summarize("conv", 64, _records(rounds), MODES, 0.1, [100.0, 200.0, 100.0])
  assert row["ratio_by_round"] == pytest.approx([0.9, 0.9, 95.0 / 105.56])
  assert row["jax_over_best_torch"] == pytest.approx(0.9)
  assert row["jax"] == 95.0 and row["fused"] == 105.56  # medians of each side's rates
  assert row["best_torch_mode"] == "fused"  # best in two of the three rounds
  # %peak within each round: 90 * 0.1 / 100, 180 * 0.1 / 200, 95 * 0.1 / 100 -> median 0.09.
  assert row["jax_peak_fraction"] == pytest.approx(0.09)


def test_failed_and_missing_modes():
  records = _records([{"jax": 10.0, "fused": 20.0}])
  records.append({"arch": "conv", "batch": 64, "mode": "compile", "round": 0, "error": "boom"})
  row = bench.summarize("conv", 64, records, MODES, 0.1, [100.0])
  assert row["compile"] == "FAILED" and "eager" not in row
  assert row["jax_over_best_torch"] == pytest.approx(0.5)
  mlp = bench.summarize("mlp", 64, records, MODES, 0.1, [100.0])
  assert mlp["channels_last"] == "n/a" and "jax_over_best_torch" not in mlp


def test_flop_count_matches_a_hand_count():
  """Training FLOPs per image: 6 x MACs less the first layer's input gradient (2 x its MACs)."""
  mlp_macs = 4096 * 1200 + 1200 * 1200 + 1200 * 20 + 10 * 1200 + 2 * 1200 * 1200 + 1200 * 4096
  assert bench.train_flops_per_image("mlp") == 6 * mlp_macs - 2 * 4096 * 1200
  # conv, layer by layer: output pixels x taps x C_in x C_out (transposed: input pixels).
  encoder = 32**2 * 16 * 32 + 16**2 * 16 * 32 * 32 + 8**2 * 4 * 32 * 64 + 4**2 * 4 * 64 * 64
  decoder = 4**2 * 16 * 64 * 64 + 8**2 * 16 * 64 * 32 + 16**2 * 16 * 32 * 32 + 32**2 * 16 * 32
  dense = 1024 * 256 + 256 * 20 + 10 * 256 + 256 * 1024
  conv_macs = encoder + decoder + dense
  assert bench.train_flops_per_image("conv") == 6 * conv_macs - 2 * 32**2 * 16 * 32
