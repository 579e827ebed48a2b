"""Modularity and explicitness of a representation.

Modularity: each latent should carry information about at most one factor. From the mutual
information between the binned latents and the factors, a latent's score is one minus how far its
squared MI profile is from the ideal template that keeps only its largest entry.
Explicitness: the factors should be linearly decodable from the codes. Per factor, a logistic
regression on the standardised codes; its class probabilities are scored by ROC AUC (one class
against the rest, averaged over classes).

References:
  Ridgeway & Mozer, `Learning Deep Disentangled Embeddings with the F-Statistic Loss
  <https://arxiv.org/abs/1802.05312>`_, NeurIPS 2018;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the parameters).
"""

from __future__ import annotations

import numpy as np
import sklearn.linear_model
import sklearn.metrics

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics import utils


def modularity_per_latent(mutual_information: np.ndarray) -> np.ndarray:
  """Modularity of each latent from a latent-by-factor mutual information matrix.

  Formula: with m_j = I[j, :]^2 and theta_j = max_k m_jk,
    delta_j = (sum_k m_jk - theta_j) / (theta_j (F - 1)),  modularity_j = 1 - delta_j;
  a latent with theta_j = 0 (no information about any factor) scores 0.

  Args:
    mutual_information: [K, F] non-negative, F >= 2 factors.

  Returns:
    float64 [K], each in [0, 1].
  """
  mi = np.asarray(mutual_information, np.float64)
  if mi.ndim != 2 or mi.shape[0] < 1 or mi.shape[1] < 2:
    raise ValueError(
      f"mutual_information must have shape [K >= 1, F >= 2] (modularity compares factors), "
      f"got {mi.shape}."
    )
  if not np.all(np.isfinite(mi)) or np.any(mi < 0):
    raise ValueError("mutual_information must be finite and non-negative.")
  squared = mi**2
  theta = squared.max(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    delta = (squared.sum(axis=1) - theta) / (theta * (mi.shape[1] - 1))
  return np.where(theta > 0, 1.0 - delta, 0.0)


def modularity_score(mutual_information: np.ndarray) -> float:
  """Mean over latents of `modularity_per_latent`.

  Args:
    mutual_information: [K, F] non-negative, F >= 2.

  Returns:
    Modularity in [0, 1].
  """
  return float(np.mean(modularity_per_latent(mutual_information)))


def _roc_auc(labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray) -> float:
  """Macro-averaged one-vs-rest ROC AUC over the classes with both positives and negatives."""
  one_hot = (labels[:, None] == classes[None, :]).astype(np.int64)
  usable = (one_hot.min(axis=0) == 0) & (one_hot.max(axis=0) == 1)
  if not usable.any():
    return float("nan")
  return float(
    sklearn.metrics.roc_auc_score(one_hot[:, usable], probabilities[:, usable], average="macro")
  )


def explicitness_per_factor(
  codes_train: np.ndarray,
  labels_train: np.ndarray,
  codes_test: np.ndarray,
  labels_test: np.ndarray,
) -> tuple[float, float]:
  """Explicitness of one factor: ROC AUC of a logistic regression, on train and test codes.

  Formula: p = LogisticRegression().fit(codes_train, labels).predict_proba(codes);
    AUC = mean over classes c of ROC-AUC(1[label = c], p_c)
  (scikit-learn's `roc_auc_score` on one-hot labels, macro average). Classes absent from a set,
  or making up all of it, have no AUC there and are left out of its average; test labels the
  classifier never saw count as negatives for every class.

  Args:
    codes_train: [N, K] codes, already standardised (`utils.normalize`).
    labels_train: int [N] values of the factor; at least two distinct.
    codes_test: [M, K].
    labels_test: int [M].

  Returns:
    (train AUC, test AUC), NaN where no class is usable.
  """
  labels_train, labels_test = np.asarray(labels_train), np.asarray(labels_test)
  if len(np.unique(labels_train)) < 2:
    raise ValueError("explicitness needs a factor that takes at least two values in training.")
  model = sklearn.linear_model.LogisticRegression()
  model.fit(codes_train, labels_train)
  return (
    _roc_auc(labels_train, model.classes_, model.predict_proba(codes_train)),
    _roc_auc(labels_test, model.classes_, model.predict_proba(codes_test)),
  )


def compute_modularity_explicitness(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  num_train: int = 10_000,
  num_test: int = 5_000,
  num_bins: int = 20,
  batch_size: int = 256,
  num_discrete: int = 0,
) -> dict[str, float | list]:
  """Modularity and explicitness of a representation (see the module docstring).

  Modularity uses the training codes only: mutual information between the latents, each binned
  into `num_bins` equal-width bins (`utils.histogram_discretize`), and the factors. Explicitness
  standardises both sets of codes with the training mean and standard deviation.

  Args:
    dataset: the ground-truth dataset (F >= 2 factors).
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means), or a
      `CodeTable`.
    rng: `np.random.Generator` or int seed.
    num_train: training points (disentanglement_lib: 10,000).
    num_test: test points (5,000).
    num_bins: bins per latent for the mutual information (20).
    batch_size: images encoded per call.
    num_discrete: trailing code columns that are categorical codes (kept, not binned).

  Returns:
    dict with "modularity_score", "explicitness_score_train", "explicitness_score_test",
    "modularity_per_latent" [K], "explicitness_test_per_factor" {name: AUC} and
    "mutual_information" [K][F] (nats).

  References:
    Ridgeway & Mozer, `Learning Deep Disentangled Embeddings with the F-Statistic Loss
    <https://arxiv.org/abs/1802.05312>`_, NeurIPS 2018.
  """
  rng = as_rng(rng, required=True, what="compute_modularity_explicitness")
  num_train = utils.check_count("num_train", num_train, 2)
  num_test = utils.check_count("num_test", num_test)
  num_bins = utils.check_count("num_bins", num_bins)
  batch_size = utils.check_count("batch_size", batch_size)
  if dataset.num_factors < 2:
    raise ValueError(f"modularity needs at least two factors; {dataset} has one.")
  kwargs = {"batch_size": batch_size}
  codes_train, factors_train = utils.sample_codes_and_factors(
    dataset, representation_fn, num_train, rng, **kwargs
  )
  codes_test, factors_test = utils.sample_codes_and_factors(
    dataset, representation_fn, num_test, rng, **kwargs
  )
  mi = utils.discrete_mutual_info(
    utils.histogram_discretize(codes_train, num_bins=num_bins, num_discrete=num_discrete),
    factors_train,
  )
  per_latent = modularity_per_latent(mi)
  train_std, test_std = utils.normalize(codes_train, codes_test)
  auc = np.array(
    [
      explicitness_per_factor(train_std, factors_train[:, k], test_std, factors_test[:, k])
      for k in range(dataset.num_factors)
    ]
  )
  return {
    "modularity_score": float(np.mean(per_latent)),
    "explicitness_score_train": float(np.mean(auc[:, 0])),
    "explicitness_score_test": float(np.mean(auc[:, 1])),
    "modularity_per_latent": per_latent.tolist(),
    "explicitness_test_per_factor": dict(
      zip(dataset.factor_names, map(float, auc[:, 1]), strict=True)
    ),
    "mutual_information": mi.tolist(),
  }


compute_modularity = compute_modularity_explicitness
"""Alias of `compute_modularity_explicitness` (the module's `compute_<name>`)."""
