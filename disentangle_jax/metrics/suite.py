"""Runs a list of metrics by name on one model and dataset, with a progress line per metric.

Each metric gets its own random stream, derived from (seed, metric name), so a score does not
change when other metrics are added to or removed from the list.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from disentangle_jax.data.ground_truth import GroundTruthData
from disentangle_jax.metrics import beta_vae, dci, factor_vae, mig, modularity, sap

# name -> (function, whether it needs the posterior (mean, log_var) rather than mean codes)
METRICS = {
  "mig_chen": (mig.compute_mig_chen, True),
  "mig_dlib": (mig.compute_mig_dlib, False),
  "beta_vae": (beta_vae.compute_beta_vae, False),
  "factor_vae": (factor_vae.compute_factor_vae, False),
  "dci": (dci.compute_dci, False),
  "sap": (sap.compute_sap, False),
  "modularity": (modularity.compute_modularity_explicitness, False),
}

# The scalar scores a summary reports for each metric, all in [0, 1].
HEADLINES = {
  "mig_chen": ("mig",),
  "mig_chen_subspace": ("mig",),
  "mig_dlib": ("mig",),
  "beta_vae": ("beta_vae_score",),
  "factor_vae": ("factor_vae_score",),
  "dci": ("dci_disentanglement", "dci_completeness", "dci_informativeness_test"),
  "sap": ("sap_score",),
  "modularity": ("modularity_score", "explicitness_score_test"),
}


def parse_metric_names(names: str | Sequence[str]) -> tuple[str, ...]:
  """ "mig_chen,dci" or a sequence of names -> a checked tuple of names ("" -> none)."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f"Unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}.")
  return tuple(names)


def metric_rng(seed: int, name: str) -> np.random.Generator:
  """The random stream of one metric: a function of the seed and the metric's name only."""
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


def headline_scores(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """Flattens each metric's headline scores: {"dci.dci_completeness": 0.4, "mig_chen.mig": ...}."""
  out = {}
  for name, result in results.items():
    for key in HEADLINES.get(name, ()):
      if key in result:
        out[f"{name}.{key}"] = float(result[key])
  return out


def compute_metrics(
  dataset: GroundTruthData,
  encode_fn: mig.EncodeFn,
  *,
  names: str | Sequence[str],
  seed: int = 0,
  settings: Mapping[str, Mapping[str, Any]] | None = None,
  subspaces: Sequence[Sequence[int]] | None = None,
  encoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
  """Every named metric of the representation given by `encode_fn`.

  Args:
    dataset: the ground-truth dataset.
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K]); the scores of
      disentanglement_lib use the mean as the code, Chen et al.'s MIG the whole posterior.
    names: metric names (keys of `METRICS`), a list or a comma-separated string.
    seed: seed of every metric's random stream (`metric_rng`).
    settings: per-metric keyword arguments overriding the defaults, e.g. {"dci": {"num_train":
      2000}}.
    subspaces: latent index groups of an ISA prior; adds "mig_chen_subspace" when "mig_chen" runs.
    encoded: (mean, log_var, factors) of the whole dataset from `mig.encode_dataset`, reused by
      Chen et al.'s MIG instead of encoding again.

  Returns:
    {metric name: its result dict, plus "seconds" (wall time)}.
  """
  names = parse_metric_names(names)
  settings = dict(settings or {})
  unknown = [n for n in settings if n not in METRICS]
  if unknown:
    raise ValueError(f"settings for unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}.")

  def representation_fn(images):
    return encode_fn(images)[0]

  results = {}
  for name in names:
    fn, needs_posterior = METRICS[name]
    kwargs = dict(settings.get(name, {}))
    start = time.perf_counter()
    logging.info("metric %s: running", name)
    if name == "mig_chen":
      if encoded is None:
        encoded = mig.encode_dataset(dataset, encode_fn, metric_rng(seed, "encode"))
      kwargs["encoded"] = encoded
    model_fn = encode_fn if needs_posterior else representation_fn
    results[name] = fn(dataset, model_fn, metric_rng(seed, name), **kwargs)
    results[name]["seconds"] = time.perf_counter() - start
    if name == "mig_chen" and subspaces is not None:
      start = time.perf_counter()
      results["mig_chen_subspace"] = fn(
        dataset, model_fn, metric_rng(seed, "mig_chen_subspace"), subspaces=subspaces, **kwargs
      )
      results["mig_chen_subspace"]["seconds"] = time.perf_counter() - start
    scores = headline_scores({name: results[name]})
    logging.info(
      "metric %s: %s (%.1f s)",
      name,
      ", ".join(f"{k.split('.', 1)[1]} {v:.3f}" for k, v in scores.items()),
      results[name]["seconds"],
    )
  return results
