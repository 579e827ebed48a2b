"""SAP, the separated attribute predictability score: the gap between the two best single latents.

For every latent j and factor k, a score of how well latent j alone predicts factor k: the test
accuracy of a linear SVM on that one latent for discrete factors, or the squared correlation
for continuous ones. Per factor, SAP takes the gap between the best and the second-best latent,
and averages the gaps over factors. A factor spread over several latents has a small gap.

References:
  Kumar et al., `Variational Inference of Disentangled Latent Concepts from Unlabeled
  Observations <https://arxiv.org/abs/1711.00848>`_, ICLR 2018;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the parameters).
"""

from __future__ import annotations

import numpy as np
import sklearn.svm

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics import utils

SVC_C = 0.01
"""Inverse regularisation of the single-latent LinearSVC (disentanglement_lib's value)."""


def sap_from_score_matrix(score_matrix: np.ndarray) -> tuple[float, np.ndarray]:
  """SAP from a latent-by-factor score matrix.

  Formula: per factor k, with S[:, k] sorted over latents in decreasing order,
    gap_k = S[0, k] - S[1, k];  SAP = mean_k gap_k.

  Args:
    score_matrix: [K, F] scores S, K >= 2 latents.

  Returns:
    (SAP, per-factor gaps [F]).
  """
  s = np.asarray(score_matrix, np.float64)
  if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 1:
    raise ValueError(f"score_matrix must have shape [K >= 2, F >= 1], got {s.shape}.")
  if not np.all(np.isfinite(s)):
    raise ValueError("score_matrix must be finite.")
  top = -np.sort(-s, axis=0)
  gaps = top[0] - top[1]
  return float(np.mean(gaps)), gaps


def sap_score_matrix(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  rng: RngLike,
  *,
  continuous_factors: bool = False,
) -> np.ndarray:
  """How well each latent alone predicts each factor.

  Formula: discrete factors: S[j, k] = test accuracy of LinearSVC(C = 0.01,
    class_weight = "balanced") fitted on the training pairs (z_j, v_k);
    continuous factors: S[j, k] = Cov(z_j, v_k)^2 / (Var z_j Var v_k) on the training set.
  A latent or factor that is constant on the training set scores 0.

  Args:
    codes_train: [N, K] codes.
    factors_train: [N, F] factors.
    codes_test: [M, K] codes (unused for continuous factors).
    factors_test: [M, F] factors (unused for continuous factors).
    rng: `np.random.Generator` or int seed (one seed shared by the SVMs, so that the matrix
      does not depend on the order of the latents).
    continuous_factors: treat the factors as continuous (squared correlation).

  Returns:
    float64 [K, F].
  """
  rng = as_rng(rng, required=True, what="sap_score_matrix")
  codes_train, codes_test = np.asarray(codes_train, np.float64), np.asarray(codes_test, np.float64)
  factors_train, factors_test = np.asarray(factors_train), np.asarray(factors_test)
  if (
    codes_train.ndim != 2
    or codes_test.ndim != 2
    or codes_train.shape[1] != codes_test.shape[1]
    or factors_train.shape != (len(codes_train), factors_train.shape[-1])
    or factors_test.shape != (len(codes_test), factors_train.shape[-1])
  ):
    raise ValueError(
      f"need codes [N, K], [M, K] and factors [N, F], [M, F]; got {codes_train.shape}, "
      f"{codes_test.shape}, {factors_train.shape}, {factors_test.shape}."
    )
  num_latents, num_factors = codes_train.shape[1], factors_train.shape[1]
  scores = np.zeros((num_latents, num_factors))
  seed = int(rng.integers(2**31 - 1))
  for j in range(num_latents):
    z = codes_train[:, j]
    if np.ptp(z) == 0:
      continue
    for k in range(num_factors):
      v = factors_train[:, k]
      if np.ptp(v) == 0:
        continue
      if continuous_factors:
        cov = np.cov(z, v.astype(np.float64), ddof=1)
        scores[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
      else:
        svc = sklearn.svm.LinearSVC(C=SVC_C, class_weight="balanced", random_state=seed)
        svc.fit(z[:, None], v)
        scores[j, k] = np.mean(svc.predict(codes_test[:, j : j + 1]) == factors_test[:, k])
  return scores


def compute_sap(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  num_train: int = 10_000,
  num_test: int = 5_000,
  continuous_factors: bool = False,
  batch_size: int = 256,
) -> dict[str, float | list]:
  """The SAP score of a representation (see `sap_score_matrix`, `sap_from_score_matrix`).

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means), K >= 2.
    rng: `np.random.Generator` or int seed.
    num_train: training points (disentanglement_lib: 10,000).
    num_test: test points (5,000); drawn but unused when `continuous_factors`.
    continuous_factors: score with squared correlations instead of SVM accuracies.
    batch_size: images encoded per call.

  Returns:
    dict with "sap_score", "sap_per_factor" {name: gap} and "score_matrix" [K][F].

  References:
    Kumar et al., `Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations <https://arxiv.org/abs/1711.00848>`_, ICLR 2018.
  """
  rng = as_rng(rng, required=True, what="compute_sap")
  num_train = utils.check_count("num_train", num_train, 2)
  num_test = utils.check_count("num_test", num_test)
  batch_size = utils.check_count("batch_size", batch_size)
  kwargs = {"batch_size": batch_size}
  codes_train, factors_train = utils.sample_codes_and_factors(
    dataset, representation_fn, num_train, rng, **kwargs
  )
  codes_test, factors_test = utils.sample_codes_and_factors(
    dataset, representation_fn, num_test, rng, **kwargs
  )
  if codes_train.shape[1] < 2:
    raise ValueError(f"SAP needs at least two latents; the codes have {codes_train.shape[1]}.")
  matrix = sap_score_matrix(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    rng,
    continuous_factors=continuous_factors,
  )
  sap, gaps = sap_from_score_matrix(matrix)
  return {
    "sap_score": sap,
    "sap_per_factor": dict(zip(dataset.factor_names, map(float, gaps), strict=True)),
    "score_matrix": matrix.tolist(),
  }
