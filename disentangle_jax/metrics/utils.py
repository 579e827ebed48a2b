"""What the disentanglement metrics share: sampling codes with factors, discretising, discrete MI.

A metric sees a model only through a representation function, images [B, H, W, C] -> codes
[B, K] (the posterior means, for the scores of disentanglement_lib), and a dataset only through
the `GroundTruthData` interface (factors drawn uniformly, observations rendered from factors).

References:
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics.encoding import CodeTable

RepresentationFn = Callable[[np.ndarray], np.ndarray] | CodeTable
"""images float32 [B, H, W, C] in [0, 1] -> codes [B, K] (numpy or JAX); or a `CodeTable`, the
codes of every example of a deterministic dataset, looked up by factors instead."""


def represent(
  representation_fn: RepresentationFn, observations: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
  """Codes of `observations`, computed `batch_size` at a time.

  Args:
    representation_fn: images [B, H, W, C] -> codes [B, K].
    observations: [N, H, W, C].
    batch_size: images per call (bounds the encoder's memory).

  Returns:
    float64 [N, K].
  """
  parts = []
  for start in range(0, len(observations), batch_size):
    codes = np.asarray(representation_fn(observations[start : start + batch_size]))
    if codes.ndim != 2 or codes.shape[0] != len(observations[start : start + batch_size]):
      raise ValueError(
        f"representation_fn must map images [B, H, W, C] to codes [B, K]; for B = "
        f"{len(observations[start : start + batch_size])} it returned shape {codes.shape}."
      )
    parts.append(codes.astype(np.float64))
  return np.concatenate(parts)


def sample_codes_and_factors(
  dataset: GroundTruthData,
  representation_fn: RepresentationFn,
  num_points: int,
  rng: RngLike,
  *,
  batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws `num_points` factor combinations uniformly and encodes their observations.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K], or a `CodeTable`.
    num_points: N.
    rng: `np.random.Generator` or int seed (factors and observation noise).
    batch_size: images rendered and encoded per call.

  Returns:
    (codes float64 [N, K], factors int64 [N, F]).
  """
  rng = as_rng(rng, required=True, what="sample_codes_and_factors")
  if num_points < 1:
    raise ValueError(f"num_points must be positive, got {num_points}.")
  codes, factors = [], []
  for start in range(0, num_points, batch_size):
    f = dataset.sample_factors(min(batch_size, num_points - start), rng)
    if isinstance(representation_fn, CodeTable):
      codes.append(representation_fn.lookup(dataset, f))
    else:
      codes.append(represent(representation_fn, dataset.observations_from_factors(f, rng)))
    factors.append(f)
  return np.concatenate(codes), np.concatenate(factors)


def histogram_discretize(
  codes: np.ndarray, *, num_bins: int = 20, num_discrete: int = 0
) -> np.ndarray:
  """Bins each latent into `num_bins` equal-width bins spanning its observed range.

  The convention of disentanglement_lib's MIG and modularity: bin edges from
  `np.histogram(codes[..., k], num_bins)`; a value's bin is the number of left edges <= it, so
  bins are 1..num_bins and the maximum falls in the last bin. The last `num_discrete` columns
  are categorical codes, already discrete: they are kept as they are.

  Args:
    codes: [N, K] continuous codes, or [M, N, K] for a stack of M models (each binned over its
      own range).
    num_bins: bins per latent.
    num_discrete: C, trailing columns that are categorical codes (not binned).

  Returns:
    int64 of the shape of `codes`, bin numbers in 1..num_bins (categorical codes unchanged).
  """
  codes = np.asarray(codes)
  if codes.ndim not in (2, 3):
    raise ValueError(
      f"histogram_discretize needs codes [N, K] (or [M, N, K]); got shape {codes.shape}."
    )
  if num_bins < 1:
    raise ValueError(f"num_bins must be positive, got {num_bins}.")
  if not 0 <= num_discrete <= codes.shape[-1]:
    raise ValueError(f"num_discrete {num_discrete} is not in [0, {codes.shape[-1]}].")
  continuous = codes[..., : codes.shape[-1] - num_discrete].astype(np.float64)
  low, high = continuous.min(axis=-2), continuous.max(axis=-2)  # [(M,) K]
  # np.histogram's edges, for every latent at once: a constant latent spans [x - 0.5, x + 0.5].
  flat = low == high
  low, high = np.where(flat, low - 0.5, low), np.where(flat, high + 0.5, high)
  left_edges = np.linspace(low, high, num_bins + 1)[:-1]  # [bins, (M,) K]
  bins = np.zeros(continuous.shape, np.int64)
  for edge in left_edges:  # np.digitize: the number of left edges <= x
    bins += continuous >= np.expand_dims(edge, -2)
  discrete = codes[..., codes.shape[-1] - num_discrete :]
  return np.concatenate([bins, np.rint(discrete).astype(np.int64)], axis=-1)


def _dense_labels(column: np.ndarray) -> tuple[np.ndarray, int]:
  values, inverse = np.unique(column, return_inverse=True)
  return inverse.reshape(-1), len(values)


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Plug-in mutual information (nats) between every discrete latent and every factor.

  Formula: I(c; v) = sum_{a,b} p(a, b) log(p(a, b) / (p(a) p(b))), with empirical frequencies
  (the value of `sklearn.metrics.mutual_info_score`, from counts).

  Args:
    codes: int [N, K] discretised codes.
    factors: int [N, F] factor values.

  Returns:
    float64 [K, F].
  """
  codes, factors = np.asarray(codes), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) == 0:
    raise ValueError(
      f"discrete_mutual_info needs codes [N, K] and factors [N, F] (N >= 1); got {codes.shape} "
      f"and {factors.shape}."
    )
  num = len(codes)
  code_labels = [_dense_labels(codes[:, k]) for k in range(codes.shape[1])]
  factor_labels = [_dense_labels(factors[:, f]) for f in range(factors.shape[1])]
  out = np.zeros((codes.shape[1], factors.shape[1]))
  for k, (a, num_a) in enumerate(code_labels):
    for f, (b, num_b) in enumerate(factor_labels):
      joint = np.bincount(a * num_b + b, minlength=num_a * num_b).reshape(num_a, num_b)
      nonzero = joint > 0
      outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
      terms = joint[nonzero] * (np.log(joint[nonzero]) + np.log(num) - np.log(outer[nonzero]))
      out[k, f] = max(float(np.sum(terms) / num), 0.0)
  return out


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
  """Plug-in entropy (nats) of each column of a discrete array: H(v) = I(v; v).

  Args:
    factors: int [N, F].

  Returns:
    float64 [F].
  """
  factors = np.asarray(factors)
  if factors.ndim != 2 or len(factors) == 0:
    raise ValueError(f"discrete_entropy needs an array [N, F] (N >= 1); got shape {factors.shape}.")
  out = np.zeros(factors.shape[1])
  for f in range(factors.shape[1]):
    p = np.bincount(_dense_labels(factors[:, f])[0]) / len(factors)
    out[f] = float(-np.sum(p * np.log(p)))
  return out


def codes_of_factors(
  dataset: GroundTruthData,
  representation_fn: RepresentationFn,
  factors: np.ndarray,
  rng: RngLike,
  *,
  batch_size: int = 256,
) -> np.ndarray:
  """Renders the observations of given factor vectors and encodes them, `batch_size` at a time.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K], or a `CodeTable`.
    factors: int [N, F] factor class indices.
    rng: `np.random.Generator` or int seed (observation noise of random datasets).
    batch_size: images rendered and encoded per call.

  Returns:
    float64 [N, K].
  """
  rng = as_rng(rng, required=True, what="codes_of_factors")
  if isinstance(representation_fn, CodeTable):
    return representation_fn.lookup(dataset, factors)
  parts = []
  for start in range(0, len(factors), batch_size):
    images = dataset.observations_from_factors(factors[start : start + batch_size], rng)
    parts.append(represent(representation_fn, images, batch_size=batch_size))
  return np.concatenate(parts)


def normalize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Standardises both sets of codes with the mean and standard deviation of the training set.

  Formula: x' = (x - mean_train) / std_train per latent (population std, ddof = 0); a latent
  that is constant on the training set is only centred (its std is taken as 1).

  Args:
    train: [N, K] training codes.
    test: [M, K] test codes.

  Returns:
    (float64 [N, K], float64 [M, K]).
  """
  train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
  if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
    raise ValueError(f"normalize needs codes [N, K] and [M, K]; got {train.shape}, {test.shape}.")
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return (train - mean) / std, (test - mean) / std


def check_count(name: str, value: int, minimum: int = 1) -> int:
  """Validates an integer parameter (a number of points, a batch size) and returns it as int."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)
