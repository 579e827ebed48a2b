"""Mutual information gap (MIG), as Chen et al. compute it and as disentanglement_lib does.

For each factor v_k, MIG takes the two latents with the most mutual information with it and
scores their gap, normalised by the factor's entropy:
  MIG = (1/F) sum_k (I(z_a(k); v_k) - I(z_b(k); v_k)) / H(v_k),  a(k), b(k) the top two latents.
The two published estimators differ in everything else and their values are not comparable:
  - Chen et al. ("chen"): every example of the dataset, one sampled z ~ q(z|x) per example,
    I(z_j; v_k) = H(z_j) - H(z_j | v_k) with the entropies of the aggregate posterior estimated
    by sampling and exact log-sum-exp over all posteriors; on dSprites shape is left out. The ISA
    variant treats each subspace as one variable.
  - disentanglement_lib ("dlib"): 10,000 random examples, mean codes, each latent binned into 20
    equal-width bins, plug-in discrete mutual information, all factors.

References:
  Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
  <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019;
  Stuehmer, Turner and Nowozin, `Independent Subspace Analysis for Unsupervised Learning of
  Disentangled Representations <https://arxiv.org/abs/1909.05063>`_, AISTATS 2020 (subspace MIG).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.distributions.gaussian_mixture import (
  gaussian_mixture_log_marginals,
  per_dimension_groups,
)
from disentangle_jax.metrics import utils

EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""images float32 [B, H, W, C] -> (mean [B, K], log_var [B, K]) of the Gaussian posterior."""

_DSPRITES = (("shape", "scale", "orientation", "posX", "posY"), (3, 6, 40, 32, 32))


def default_mig_factors(dataset: GroundTruthData) -> tuple[str, ...]:
  """The factors Chen et al.'s MIG averages over: all, except shape on dSprites and its variants.

  Shape is left out on dSprites because square and ellipse are symmetric under rotation, so the
  encoder cannot separate shape from orientation cleanly (Chen et al., section 6).
  """
  if (tuple(dataset.factor_names), tuple(dataset.factor_sizes)) == _DSPRITES:
    return _DSPRITES[0][1:]
  return tuple(dataset.factor_names)


def mutual_information_gap(
  mutual_information: np.ndarray, factor_entropies: np.ndarray
) -> tuple[float, np.ndarray]:
  """MIG from a latent-by-factor mutual information matrix.

  Formula: per factor k, with I sorted over latents in decreasing order and clamped at 0,
    gap_k = (I[0, k] - I[1, k]) / H(v_k);  MIG = mean_k gap_k.
  Estimated MI can be slightly negative; clamping at 0 follows Chen et al.

  Args:
    mutual_information: [G, F] nats, G >= 2 latents (or subspaces).
    factor_entropies: [F] nats, positive.

  Returns:
    (MIG, per-factor gaps [F]).
  """
  mi = np.asarray(mutual_information, np.float64)
  entropies = np.asarray(factor_entropies, np.float64)
  if mi.ndim != 2 or mi.shape[0] < 2 or entropies.shape != mi.shape[1:]:
    raise ValueError(
      f"mutual_information_gap needs MI [G >= 2, F] and entropies [F]; got {mi.shape} and "
      f"{entropies.shape}."
    )
  if np.any(entropies <= 0):
    raise ValueError(f"factor entropies must be positive; got {entropies}.")
  top = -np.sort(-np.clip(mi, 0.0, None), axis=0)
  gaps = (top[0] - top[1]) / entropies
  return float(np.mean(gaps)), gaps


# ---------------------------------------------------------------------- Chen et al.


def encode_dataset(
  dataset: GroundTruthData,
  encode_fn: EncodeFn,
  rng: RngLike = None,
  *,
  batch_size: int = 2048,
  log_every_seconds: float = 30.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Posterior parameters of every example of the dataset, in index order.

  Args:
    dataset: the ground-truth dataset (all `num_examples` examples are encoded).
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K]).
    rng: generator for datasets with random observations (colour, noise); ignored otherwise.
    batch_size: images per call.
    log_every_seconds: interval of the progress line.

  Returns:
    (mean float32 [N, K], log_var float32 [N, K], factors int64 [N, F]).
  """
  rng = as_rng(rng if rng is not None else 0)
  num = dataset.num_examples
  means, log_vars = [], []
  start_time = last_log = time.perf_counter()
  for start in range(0, num, batch_size):
    images = dataset.observations_from_indices(np.arange(start, min(start + batch_size, num)), rng)
    mean, log_var = encode_fn(images)
    means.append(np.asarray(mean, np.float32))
    log_vars.append(np.asarray(log_var, np.float32))
    if time.perf_counter() - last_log > log_every_seconds:
      last_log = time.perf_counter()
      done = start + len(images)
      logging.info(
        "encoding the dataset: %d/%d (%.0f images/s)", done, num, done / (last_log - start_time)
      )
  factors = dataset.index_to_factors(np.arange(num))
  return np.concatenate(means), np.concatenate(log_vars), factors


def _entropy(
  z: np.ndarray,
  mean: np.ndarray,
  log_var: np.ndarray,
  groups,
  rng: np.random.Generator,
  num_samples: int,
  chunk_size: int,
) -> np.ndarray:
  """H(z_g) [G] of the mixture of the given posteriors, from up to `num_samples` of their z."""
  chosen = rng.permutation(len(z))[:num_samples]
  log_q = gaussian_mixture_log_marginals(
    jnp.asarray(z[chosen]),
    jnp.asarray(mean),
    jnp.asarray(log_var),
    groups=groups,
    chunk_size=chunk_size,
  )
  return -np.mean(np.asarray(log_q, np.float64), axis=0)


def chen_mutual_information(
  mean: np.ndarray,
  log_var: np.ndarray,
  factors: np.ndarray,
  rng: RngLike,
  *,
  groups: Sequence[Sequence[int]] | None = None,
  num_samples: int = 10_000,
  chunk_size: int = 1024,
  factor_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """Mutual information between each latent (or group) and each factor, Chen et al.'s way.

  One z_n ~ q(z|x_n) is drawn per example. Entropies of the aggregate posterior
  q(z_g) = (1/N) sum_n q(z_g|x_n) are estimated as H(z_g) = -mean_s log q(z_sg) over up to
  `num_samples` of these z, with log q(z_sg) exact over all N posteriors. The conditional
  entropy restricts both to the examples with v_k = v:
    H(z_g | v_k) = sum_v p(v) H(z_g | v_k = v),   I(z_g; v_k) = H(z_g) - H(z_g | v_k).

  Args:
    mean: [N, K] posterior means of every example.
    log_var: [N, K] posterior log-variances.
    factors: int [N, F] factor values of the examples.
    rng: `np.random.Generator` or int seed (the z draws and the subsets of samples).
    groups: latent index groups treated as one variable each (ISA subspaces); default, one
      group per latent.
    num_samples: at most this many z per entropy estimate (Chen et al.: 10,000).
    chunk_size: posteriors per step of the compiled log-sum-exp (memory K x S x chunk floats).
    factor_names: names for the progress log.

  Returns:
    dict with "mutual_information" [G, F], "marginal_entropy" [G] and "conditional_entropy"
    [G, F], in nats.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018.
  """
  rng = as_rng(rng, required=True, what="chen_mutual_information")
  mean = np.asarray(mean, np.float32)
  log_var = np.asarray(log_var, np.float32)
  factors = np.asarray(factors)
  if mean.ndim != 2 or mean.shape != log_var.shape or factors.shape[:1] != mean.shape[:1]:
    raise ValueError(
      f"chen_mutual_information needs mean, log_var [N, K] and factors [N, F]; got "
      f"{mean.shape}, {log_var.shape}, {factors.shape}."
    )
  num, num_latents = mean.shape
  groups = per_dimension_groups(num_latents) if groups is None else tuple(map(tuple, groups))
  names = factor_names or [f"factor {k}" for k in range(factors.shape[1])]
  noise = rng.standard_normal(mean.shape, dtype=np.float32)
  z = mean + np.exp(0.5 * log_var) * noise

  start = time.perf_counter()
  marginal = _entropy(z, mean, log_var, groups, rng, num_samples, chunk_size)
  conditional = np.zeros((len(groups), factors.shape[1]))
  for k in range(factors.shape[1]):
    for value in np.unique(factors[:, k]):
      members = np.flatnonzero(factors[:, k] == value)
      h = _entropy(
        z[members], mean[members], log_var[members], groups, rng, num_samples, chunk_size
      )
      conditional[:, k] += h * len(members) / num
    logging.info(
      "MIG (Chen et al.): H(z | %s) done, %.0f s elapsed", names[k], time.perf_counter() - start
    )
  return {
    "mutual_information": marginal[:, None] - conditional,
    "marginal_entropy": marginal,
    "conditional_entropy": conditional,
  }


def compute_mig_chen(
  dataset: GroundTruthData,
  encode_fn: EncodeFn,
  rng: RngLike,
  *,
  scored_factors: Sequence[str] | None = None,
  subspaces: Sequence[Sequence[int]] | None = None,
  num_samples: int = 10_000,
  batch_size: int = 2048,
  chunk_size: int = 1024,
  encoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict:
  """Chen et al.'s MIG over the whole dataset (see `chen_mutual_information`).

  The factor entropies are H(v_k) = log |V_k|, exact for a full grid of factors. With
  `subspaces` (e.g. an ISA layout's `tree.subspace_slices()` as ranges of latents) each subspace
  is one variable, the ISA-VAE paper's subspace MIG.

  Args:
    dataset: the ground-truth dataset; every example is encoded.
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K]).
    rng: `np.random.Generator` or int seed.
    scored_factors: names of the factors MIG averages over; default `default_mig_factors`
      (all but shape on dSprites). MI is computed for every factor regardless.
    subspaces: groups of latent indices, one variable each; default one per latent.
    num_samples: samples per entropy estimate.
    batch_size: images per encoder call.
    chunk_size: posteriors per step of the log-sum-exp.
    encoded: (mean, log_var, factors) from `encode_dataset`, to skip encoding again.

  Returns:
    dict with "mig", "mig_per_factor" {name: gap}, "scored_factors", "mutual_information"
    [G][F] and "factor_entropies" [F] (nats), "num_examples", "variables" ("latents" or
    "subspaces") and "groups".

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018;
    Stuehmer, Turner and Nowozin, `Independent Subspace Analysis for Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1909.05063>`_, AISTATS 2020.
  """
  rng = as_rng(rng, required=True, what="compute_mig_chen")
  names = tuple(dataset.factor_names)
  scored = tuple(scored_factors) if scored_factors is not None else default_mig_factors(dataset)
  unknown = [name for name in scored if name not in names]
  if unknown or not scored:
    raise ValueError(f"scored_factors {scored} must be a non-empty subset of {names}.")
  mean, log_var, factors = (
    encoded
    if encoded is not None
    else encode_dataset(dataset, encode_fn, rng, batch_size=batch_size)
  )
  if len(mean) != dataset.num_examples:
    raise ValueError(f"encoded holds {len(mean)} examples; the dataset has {dataset.num_examples}.")
  groups = per_dimension_groups(mean.shape[1]) if subspaces is None else subspaces
  result = chen_mutual_information(
    mean,
    log_var,
    factors,
    rng,
    groups=groups,
    num_samples=num_samples,
    chunk_size=chunk_size,
    factor_names=names,
  )
  columns = [names.index(name) for name in scored]
  entropies = np.log(np.asarray(dataset.factor_sizes, np.float64))
  mig, gaps = mutual_information_gap(result["mutual_information"][:, columns], entropies[columns])
  return {
    "mig": mig,
    "mig_per_factor": dict(zip(scored, map(float, gaps), strict=True)),
    "scored_factors": list(scored),
    "mutual_information": result["mutual_information"].tolist(),
    "factor_entropies": entropies.tolist(),
    "num_examples": int(len(mean)),
    "variables": "latents" if subspaces is None else "subspaces",
    "groups": [list(map(int, g)) for g in groups],
  }


# ---------------------------------------------------------------------- disentanglement_lib


def mig_from_codes(
  codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
  """disentanglement_lib's MIG from sampled codes and factors.

  Formula: c = histogram_discretize(codes, num_bins); I_jk = plug-in I(c_j; v_k);
    H_k = plug-in H(v_k); MIG = mean_k (I sorted over j: I[0, k] - I[1, k]) / H_k.

  Args:
    codes: [N, K] continuous codes (K >= 2).
    factors: int [N, F].
    num_bins: equal-width bins per latent.

  Returns:
    (MIG, per-factor gaps [F], MI [K, F], factor entropies [F]); nats.
  """
  mi = utils.discrete_mutual_info(utils.histogram_discretize(codes, num_bins=num_bins), factors)
  entropies = utils.discrete_entropy(factors)
  constant = entropies <= 0
  if constant.any():
    raise ValueError(f"factors {np.flatnonzero(constant).tolist()} take a single value.")
  mig, gaps = mutual_information_gap(mi, entropies)
  return mig, gaps, mi, entropies


def compute_mig_dlib(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  num_train: int = 10_000,
  num_bins: int = 20,
  batch_size: int = 256,
) -> dict:
  """disentanglement_lib's MIG: `num_train` random examples, binned mean codes, all factors.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means).
    rng: `np.random.Generator` or int seed.
    num_train: examples drawn.
    num_bins: equal-width bins per latent.
    batch_size: images per encoder call.

  Returns:
    dict with "mig", "mig_per_factor" {name: gap}, "mutual_information" [K][F] and
    "factor_entropies" [F] (nats).

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019;
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018.
  """
  rng = as_rng(rng, required=True, what="compute_mig_dlib")
  if num_train < 2 or num_bins < 1:
    raise ValueError(f"need num_train >= 2 and num_bins >= 1; got {num_train}, {num_bins}.")
  codes, factors = utils.sample_codes_and_factors(
    dataset, representation_fn, num_train, rng, batch_size=batch_size
  )
  mig, gaps, mi, entropies = mig_from_codes(codes, factors, num_bins=num_bins)
  return {
    "mig": mig,
    "mig_per_factor": dict(zip(dataset.factor_names, map(float, gaps), strict=True)),
    "mutual_information": mi.tolist(),
    "factor_entropies": entropies.tolist(),
  }
