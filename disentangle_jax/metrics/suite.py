"""Runs a list of metrics by name on one model and dataset, with a progress line per metric.

Each metric gets its own random stream, derived from (seed, metric name), so a score does not
change when other metrics are added to or removed from the list.

The dataset is encoded at most once. When its observations are deterministic (dSprites), the
metrics look their codes up in that encoding (`encoding.CodeTable`) instead of rendering and
encoding millions of images: same factors, same codes, same scores, minutes less.
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
from disentangle_jax.metrics.encoding import (
  CodeTable,
  Encoding,
  as_encoding,
  encode_all,
  join_codes,
  observations_are_deterministic,
  split_encoder_output,
)

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


def _images_encoded(name: str, kwargs: Mapping[str, Any]) -> int:
  """About how many images a metric encodes with its settings (disentanglement_lib defaults)."""
  get = kwargs.get
  if name == "beta_vae":
    return 2 * get("batch_size_points", 64) * (get("num_train", 10_000) + get("num_eval", 5_000))
  if name == "factor_vae":
    votes = get("num_train", 10_000) + get("num_eval", 5_000)
    return get("batch_size_points", 64) * votes + get("num_variance_estimate", 10_000)
  if name == "mig_dlib":
    return get("num_train", 10_000)
  return get("num_train", 10_000) + get("num_test", 5_000)


def compute_metrics(
  dataset: GroundTruthData,
  encode_fn: mig.EncodeFn,
  *,
  names: str | Sequence[str],
  seed: int = 0,
  settings: Mapping[str, Mapping[str, Any]] | None = None,
  subspaces: Sequence[Sequence[int]] | None = None,
  encoded: Encoding | tuple | None = None,
  code_table: bool | None = None,
) -> dict[str, dict[str, Any]]:
  """Every named metric of the representation given by `encode_fn`.

  The codes of the disentanglement_lib scores are the posterior means, followed by the
  categorical codes when the encoder returns them (JointVAE): those columns are discrete, not
  binned by disentanglement_lib's MIG and modularity, and scored by counts in Chen et al.'s MIG.

  Args:
    dataset: the ground-truth dataset.
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K][, discrete]) with discrete
      int [B, C] categorical codes or C logits arrays [B, V_c]; the scores of
      disentanglement_lib use the mean as the code, Chen et al.'s MIG the whole posterior.
    names: metric names (keys of `METRICS`), a list or a comma-separated string.
    seed: seed of every metric's random stream (`metric_rng`).
    settings: per-metric keyword arguments overriding the defaults, e.g. {"dci": {"num_train":
      2000}}.
    subspaces: latent index groups of an ISA prior; adds "mig_chen_subspace" when "mig_chen" runs.
    encoded: the whole dataset's encoding, an `Encoding` from `encode_all` or (mean, log_var,
      factors[, discrete]) from `encode_dataset`, reused instead of encoding again.
    code_table: look the codes up in the dataset's encoding instead of encoding images. None
      (default): when the observations are deterministic and the encoding is given, needed by
      Chen et al.'s MIG, or cheaper than the images the metrics would encode.

  Returns:
    {metric name: its result dict, plus "seconds" (wall time) and "codes" ("table" or
    "images": where the codes came from)}.
  """
  names = parse_metric_names(names)
  settings = dict(settings or {})
  unknown = [n for n in settings if n not in METRICS]
  if unknown:
    raise ValueError(f"settings for unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}.")

  if encoded is not None:
    encoded = as_encoding(encoded)
  if code_table is None:
    images = sum(_images_encoded(n, settings.get(n, {})) for n in names if n != "mig_chen")
    wanted = encoded is not None or "mig_chen" in names or images > dataset.num_examples
    code_table = wanted and images > 0 and observations_are_deterministic(dataset)
  if encoded is None and (code_table or "mig_chen" in names):
    logging.info("metrics: encoding all %d examples", dataset.num_examples)
    encoded = encode_all(dataset, encode_fn, metric_rng(seed, "encode"))

  if encoded is not None:
    num_discrete = encoded.num_discrete
  else:
    probe = dataset.observations_from_indices(np.arange(1), np.random.default_rng(0))
    num_discrete = _num_discrete(split_encoder_output(encode_fn(probe), 1))

  if code_table:
    representation_fn = CodeTable(encoded.codes)
  else:

    def representation_fn(images):
      mean, _, discrete = split_encoder_output(encode_fn(images), len(images))
      return join_codes(mean, discrete)

  results = {}
  for name in names:
    fn, needs_posterior = METRICS[name]
    kwargs = dict(settings.get(name, {}))
    if num_discrete and name in ("mig_dlib", "modularity"):
      kwargs.setdefault("num_discrete", num_discrete)
    start = time.perf_counter()
    logging.info("metric %s: running", name)
    if name == "mig_chen":
      kwargs["encoded"] = encoded
    model_fn = encode_fn if needs_posterior else representation_fn
    results[name] = fn(dataset, model_fn, metric_rng(seed, name), **kwargs)
    results[name]["seconds"] = time.perf_counter() - start
    results[name]["codes"] = "table" if code_table or needs_posterior else "images"
    if name == "mig_chen" and subspaces is not None:
      start = time.perf_counter()
      results["mig_chen_subspace"] = fn(
        dataset, model_fn, metric_rng(seed, "mig_chen_subspace"), subspaces=subspaces, **kwargs
      )
      results["mig_chen_subspace"]["seconds"] = time.perf_counter() - start
      results["mig_chen_subspace"]["codes"] = "table"
    scores = headline_scores({name: results[name]})
    logging.info(
      "metric %s: %s (%.1f s)",
      name,
      ", ".join(f"{k.split('.', 1)[1]} {v:.3f}" for k, v in scores.items()),
      results[name]["seconds"],
    )
  return results


def _num_discrete(split) -> int:
  return 0 if split[2] is None else split[2].shape[1]
