"""The study of a sweep: every model scored, then one table and the figures that compare them.

workdir/models/<model>/study.json        the model's grid values, eval numbers and scores
workdir/study/results.csv                one row per model: axes, reconstruction, KL, metrics
workdir/study/tradeoff.png               MIG against reconstruction, medians per knob joined
workdir/study/mig_distribution.png       MIG over seeds, per method and knob value
workdir/study/latents/<model>.png        each active latent's mean against each factor
"""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import metrics, plots
from disentangle_jax.plots import study as study_plots
from disentangle_jax.training.evaluate import evaluate
from disentangle_jax.training.report import make_encode_fn

STUDY_FILE = "study.json"
# Chen et al.'s plot shows each latent against these factors, one line per shape.
LATENT_PLOT_FACTORS = ("posX", "posY", "scale", "orientation")


def latent_means_by_factor(
  means: np.ndarray, factors: np.ndarray, factor_sizes: Sequence[int], columns, group: int
) -> np.ndarray:
  """E[mu_j | v_k = v, v_group = g] for each latent j, factor k in `columns`, group value g.

  Args:
    means: [N, J] mean codes of the whole dataset.
    factors: [N, F] factor classes of the same examples.
    factor_sizes: [F] number of values of each factor.
    columns: indices of the factors to plot against.
    group: index of the factor whose values get one line each (dSprites: shape).

  Returns:
    [J, len(columns), factor_sizes[group], max size] averages (NaN past a factor's size).
  """
  num, latents = means.shape
  width = max(factor_sizes[k] for k in columns)
  out = np.full((latents, len(columns), factor_sizes[group], width), np.nan)
  for c, k in enumerate(columns):
    cell = factors[:, group] * factor_sizes[k] + factors[:, k]
    size = factor_sizes[group] * factor_sizes[k]
    counts = np.bincount(cell, minlength=size)
    for j in range(latents):
      sums = np.bincount(cell, weights=means[:, j], minlength=size)
      with np.errstate(invalid="ignore", divide="ignore"):
        out[j, c, :, : factor_sizes[k]] = (sums / counts).reshape(factor_sizes[group], -1)
  return out


def score_models(
  configs: Sequence[ml_collections.ConfigDict],
  networks,
  params: Sequence,
  dataset,
  *,
  metric_names: str,
  seed: int,
  latent_plots: Sequence[pathlib.Path | None],
) -> list[dict[str, Any]]:
  """eval.json's numbers, the study's metrics and the latent plot of trained models of one
  structure: each model encoded once, the metrics on the stack of encodings (the same examples
  and factor draws for every model, `metrics.score_models`)."""
  results = [evaluate(c, networks, p, dataset) for c, p in zip(configs, params, strict=True)]
  names = metrics.parse_metric_names(metric_names)
  if not names and not any(latent_plots):
    return results
  encodings = []
  for config, model_params in zip(configs, params, strict=True):
    encode_fn = make_encode_fn(networks, model_params)
    encodings.append(metrics.encode_all(dataset, encode_fn, np.random.default_rng(config.seed)))
  settings = {name: dict(configs[0].eval.get(name, {})) for name in names}
  scored = metrics.score_models(dataset, encodings, names=names, seed=seed, settings=settings)
  for i, (result, encoding, plot) in enumerate(zip(results, encodings, latent_plots, strict=True)):
    result["scores"] = {
      f"{name}.{key}": float(np.asarray(values)[i])
      for name, out in scored.items()
      for key, values in out["scores"].items()
    }
    result["active_units"] = int(
      metrics.active_latents(encoding.mean, encoding.log_var)["num_active"]
    )
    if plot is not None:
      _latent_plot(encoding, dataset, plot, plot.stem)
  return results


def _latent_plot(encoded, dataset, path: pathlib.Path, title: str) -> None:
  mean, factors = encoded.mean, encoded.factors
  names = list(dataset.factor_names)
  columns = [names.index(n) for n in LATENT_PLOT_FACTORS if n in names]
  if not columns or "shape" not in names:
    columns = list(range(1, len(names))) if len(names) > 1 else [0]
  group = names.index("shape") if "shape" in names else 0
  active = np.asarray(metrics.active_latents(mean, encoded.log_var)["active_latents"], int)
  if len(active) == 0:
    active = np.arange(mean.shape[1])
  averages = latent_means_by_factor(mean[:, active], factors, dataset.factor_sizes, columns, group)
  values = [np.arange(dataset.factor_sizes[k]) for k in columns]
  plots.save_figure(
    study_plots.latents_against_factors(
      averages,
      factor_names=[names[k] for k in columns],
      factor_values=values,
      group_names=[f"{names[group]} {g}" for g in range(dataset.factor_sizes[group])],
      latent_names=[f"z{j}" for j in active],
      title=title,
    ),
    path,
  )


def knob_axis(axes: Sequence[str]) -> str | None:
  """The axis the study's figures plot along: the first one that is not `seed`."""
  return next((a for a in axes if a != "seed"), None)


def write_study(records: Sequence[dict], axes: Sequence[str], study_dir: pathlib.Path) -> None:
  """results.csv and the two figures from the models' study records."""
  study_dir.mkdir(parents=True, exist_ok=True)
  score_keys = sorted({k for r in records for k in r.get("scores", {})})
  eval_keys = ["log_likelihood", "kl", "elbo", "mi", "tc", "dwkl", "active_units"]
  header = ["name", "method", *axes, "step", "diverged_at", *eval_keys, *score_keys]
  with open(study_dir / "results.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for r in records:
      row = [r["name"], r["method"], *(r["values"][a] for a in axes)]
      row += [r.get("step"), r.get("diverged_at", "")]
      row += [r.get(k, "") for k in eval_keys] + [
        r.get("scores", {}).get(k, "") for k in score_keys
      ]
      writer.writerow(row)
  live = [r for r in records if "diverged_at" not in r and r.get("scores")]
  mig_key = next((k for k in ("mig_chen.mig", "mig_dlib.mig") if k in score_keys), None)
  if not live or mig_key is None:
    logging.warning("study: no MIG to plot (metrics %s)", score_keys)
    return
  knob = knob_axis(axes)
  methods = [r["method"] for r in live]
  knobs = [float(r["values"][knob]) if knob else 0.0 for r in live]
  mig = [r["scores"][mig_key] for r in live]
  mig_name = "MIG (Chen et al.)" if mig_key.startswith("mig_chen") else "MIG (disentanglement_lib)"
  knob_name = knob  # None: methods and seeds only
  plots.save_figure(
    study_plots.tradeoff(
      methods,
      knobs,
      [r["log_likelihood"] for r in live],
      mig,
      knob_name=knob_name,
      mig_name=mig_name,
    ),
    study_dir / "tradeoff.png",
  )
  plots.save_figure(
    study_plots.mig_distribution(methods, knobs, mig, knob_name=knob_name, mig_name=mig_name),
    study_dir / "mig_distribution.png",
  )


def read_records(out_dirs: Sequence[pathlib.Path]) -> list[dict]:
  return [json.loads((d / STUDY_FILE).read_text()) for d in out_dirs if (d / STUDY_FILE).exists()]
