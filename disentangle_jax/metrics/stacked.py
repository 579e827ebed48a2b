"""Scores of a stack of M models at once, for sweeps: one compiled program per metric.

A sweep scores many models on one dataset. Where a metric is array arithmetic on the codes,
the M models' codes are stacked [M, N, K] and scored by one vmapped, jitted program: Chen et
al.'s MIG (`chen.chen_mutual_information_stack`), disentanglement_lib's binned MIG and the
modularity of Ridgeway & Mozer (`binned_scores_stack`). Metrics that fit scikit-learn
classifiers (DCI, BetaVAE, FactorVAE, SAP's SVMs, explicitness) run model after model on codes
looked up in each model's encoding (`encoding.CodeTable`); `score_models` does both.

References:
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the study protocol);
  Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
  <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018;
  Ridgeway & Mozer, `Learning Deep Disentangled Embeddings with the F-Statistic Loss
  <https://arxiv.org/abs/1802.05312>`_, NeurIPS 2018.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike
from disentangle_jax.metrics import chen, mig, suite, utils
from disentangle_jax.metrics.encoding import CodeTable, Encoding, as_encoding


@functools.partial(jax.jit, static_argnums=2)
def _binned_mutual_information(bins, factor_one_hot, num_bins):
  """Plug-in MI [M, K, F] from bins [M, N, K] (0..num_bins-1) and one-hot factors [N, F, V]."""
  num = bins.shape[1]

  def one_model(model_bins):  # [N, K] -> [K, F]
    one_hot = jax.nn.one_hot(model_bins, num_bins, dtype=jnp.float32)  # [N, K, B]
    joint = jnp.einsum("nkb,nfv->kfbv", one_hot, factor_one_hot)  # counts
    outer = joint.sum(axis=3, keepdims=True) * joint.sum(axis=2, keepdims=True)
    seen = joint > 0
    ratio = jnp.where(seen, joint * num / jnp.where(seen, outer, 1.0), 1.0)
    return jnp.maximum(jnp.sum(joint * jnp.log(ratio), axis=(2, 3)) / num, 0.0)

  return jax.vmap(one_model)(bins)


def binned_scores_stack(
  codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20, num_discrete: int = 0
) -> dict[str, np.ndarray]:
  """disentanglement_lib's MIG and the modularity score of M models' codes, in one program.

  Formula: per model, c = histogram_discretize(codes, num_bins) (each latent over its own
  range); I_jk = plug-in I(c_j; v_k) from counts; H_k = plug-in H(v_k);
    MIG = mean_k (I sorted over j: I[0, k] - I[1, k]) / H_k,
    modularity = mean_j (1 - (sum_k I_jk^2 - max_k I_jk^2) / (max_k I_jk^2 (F - 1))).
  Counts are exact in float32 (N < 2^24); the MI is float32 (about 1e-6 nats).

  Args:
    codes: [M, N, K] codes of M models at the same N examples (K >= 2).
    factors: int [N, F] the examples' factors (F >= 2 for modularity).
    num_bins: equal-width bins per latent.
    num_discrete: trailing code columns that are categorical codes (kept, not binned).

  Returns:
    dict with "mig" [M], "mig_per_factor" [M, F], "mutual_information" [M, K, F],
    "factor_entropies" [F], "modularity" [M] and "modularity_per_latent" [M, K].

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019;
    Ridgeway & Mozer, `Learning Deep Disentangled Embeddings with the F-Statistic Loss
    <https://arxiv.org/abs/1802.05312>`_, NeurIPS 2018.
  """
  codes, factors = np.asarray(codes), np.asarray(factors)
  if codes.ndim != 3 or factors.ndim != 2 or codes.shape[1] != len(factors):
    raise ValueError(
      f"binned_scores_stack needs codes [M, N, K] and factors [N, F]; got {codes.shape} and "
      f"{factors.shape}."
    )
  binned = utils.histogram_discretize(codes, num_bins=num_bins, num_discrete=num_discrete)
  # Dense labels per column (categorical codes may take any integers).
  dense = np.zeros(binned.shape, np.int32)
  for k in range(binned.shape[2]):
    dense[:, :, k] = np.unique(binned[:, :, k], return_inverse=True)[1].reshape(binned.shape[:2])
  num_values = int(max(dense.max() + 1, 1))
  factor_labels = np.stack(
    [np.unique(factors[:, f], return_inverse=True)[1].reshape(-1) for f in range(factors.shape[1])],
    axis=1,
  )
  factor_one_hot = jax.nn.one_hot(factor_labels, int(factor_labels.max()) + 1, dtype=jnp.float32)
  mi = np.asarray(
    _binned_mutual_information(jnp.asarray(dense), factor_one_hot, num_values),
    np.float64,
  )
  entropies = utils.discrete_entropy(factors)
  if np.any(entropies <= 0):
    raise ValueError(f"factors {np.flatnonzero(entropies <= 0).tolist()} take a single value.")
  top = -np.sort(-mi, axis=1)
  gaps = (top[:, 0] - top[:, 1]) / entropies
  squared = mi**2
  theta = squared.max(axis=2)
  with np.errstate(divide="ignore", invalid="ignore"):
    delta = (squared.sum(axis=2) - theta) / (theta * (mi.shape[2] - 1))
  per_latent = np.where(theta > 0, 1.0 - delta, 0.0)
  return {
    "mig": gaps.mean(axis=1),
    "mig_per_factor": gaps,
    "mutual_information": mi,
    "factor_entropies": entropies,
    "modularity": per_latent.mean(axis=1),
    "modularity_per_latent": per_latent,
  }


def chen_mig_stack(
  mean: np.ndarray,
  log_var: np.ndarray,
  factors: np.ndarray,
  factor_sizes: Sequence[int],
  rng: RngLike,
  *,
  scored: Sequence[int] | None = None,
  num_samples: int = 10_000,
  groups: Sequence[Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
  """Chen et al.'s MIG of M models in one program (shared sampling; `chen`).

  Formula: I_m [G, F] = chen_mutual_information_stack(...); per model, with I clamped at 0,
    MIG_m = mean_{k in scored} (I sorted over g: I[0, k] - I[1, k]) / log |V_k|.

  Args:
    mean: [M, N, K] posterior means of every example, per model.
    log_var: [M, N, K].
    factors: int [N, F].
    factor_sizes: [F] |V_k| (a full grid: H(v_k) = log |V_k|).
    rng: `np.random.Generator` or int seed.
    scored: factor indices MIG averages over; default all.
    num_samples: S.
    groups: latent groups (ISA subspaces); default one per latent.

  Returns:
    dict with "mig" [M], "mig_per_factor" [M, F_scored], and the arrays of
    `chen_mutual_information_stack`.
  """
  out = chen.chen_mutual_information_stack(
    mean, log_var, factors, rng, groups=groups, num_samples=num_samples
  )
  columns = list(range(len(factor_sizes))) if scored is None else list(scored)
  entropies = np.log(np.asarray(factor_sizes, np.float64))[columns]
  top = -np.sort(-np.clip(out["mutual_information"][:, :, columns], 0.0, None), axis=1)
  gaps = (top[:, 0] - top[:, 1]) / entropies
  return {"mig": gaps.mean(axis=1), "mig_per_factor": gaps, **out}


def score_models(
  dataset: GroundTruthData,
  encodings: Sequence[Encoding | tuple],
  *,
  names: str | Sequence[str],
  seed: int = 0,
  settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
  """Every named metric for M models of one dataset, from each model's whole-dataset encoding.

  Chen et al.'s MIG, disentanglement_lib's MIG and modularity run on the stack of models in
  one program each (the same examples and factor draws for every model, so that the models'
  scores differ only by their codes); the metrics that fit classifiers (BetaVAE, FactorVAE,
  DCI, SAP, explicitness) run model after model on codes looked up in each encoding (the
  dataset's observations must be deterministic). Random streams are `suite.metric_rng(seed,
  name)`, as in `suite.compute_metrics`.

  Args:
    dataset: the ground-truth dataset (deterministic observations).
    encodings: M encodings (`encode_all`, or (mean, log_var, factors[, discrete])), all of the
      same shape.
    names: metric names (keys of `suite.METRICS`).
    seed: seed of every metric's random stream.
    settings: per-metric keyword arguments, as in `compute_metrics`.

  Returns:
    {metric name: {"scores": {headline key: [M] values}, "seconds": wall time, and for the
    stacked metrics their arrays}}.
  """
  names = suite.parse_metric_names(names)
  settings = dict(settings or {})
  encodings = [as_encoding(e) for e in encodings]
  if not encodings:
    raise ValueError("score_models needs at least one encoding.")
  shapes = {(e.mean.shape, e.num_discrete) for e in encodings}
  if len(shapes) != 1:
    raise ValueError(f"the encodings differ in shape: {sorted(shapes)}.")
  num_discrete = encodings[0].num_discrete
  results: dict[str, dict[str, Any]] = {}
  for name in names:
    kwargs = dict(settings.get(name, {}))
    start = time.perf_counter()
    rng = suite.metric_rng(seed, name)
    if name == "mig_chen" and num_discrete == 0:
      scored = [dataset.factor_names.index(n) for n in mig.default_mig_factors(dataset)]
      out = chen_mig_stack(
        np.stack([e.mean for e in encodings]),
        np.stack([e.log_var for e in encodings]),
        encodings[0].factors,
        dataset.factor_sizes,
        rng,
        scored=scored,
        num_samples=kwargs.get("num_samples", 10_000),
      )
      results[name] = {"scores": {"mig": out["mig"]}, **out}
    elif name == "mig_dlib":
      factors = dataset.sample_factors(kwargs.get("num_train", 10_000), rng)
      index = dataset.factors_to_index(factors)
      codes = np.stack([e.codes[index] for e in encodings])
      out = binned_scores_stack(
        codes, factors, num_bins=kwargs.get("num_bins", 20), num_discrete=num_discrete
      )
      results[name] = {"scores": {"mig": out["mig"]}, **out}
    else:
      per_model = []
      for e in encodings:
        table = CodeTable(e.codes)
        fn, needs_posterior = suite.METRICS[name]
        extra = {"encoded": e} if needs_posterior else {}
        if num_discrete and name == "modularity":
          extra["num_discrete"] = num_discrete
        per_model.append(fn(dataset, table, suite.metric_rng(seed, name), **kwargs, **extra))
      keys = suite.HEADLINES[name]
      results[name] = {"scores": {k: np.array([r[k] for r in per_model]) for k in keys}}
      results[name]["per_model"] = per_model
    results[name]["seconds"] = time.perf_counter() - start
  return results
