"""The BetaVAE score: how well a linear classifier names the factor two batches have in common.

One point of the classifier's data: draw a factor k uniformly, draw `batch_size_points` pairs of
factor vectors that share the value of factor k (all other factors independent), encode both
halves of every pair and average the absolute code differences over the pairs. A disentangled
code leaves the latent of factor k nearly unchanged within each pair, so the feature vector has a
small entry there and k can be read off linearly. The score is the accuracy of a logistic
regression on fresh points; chance level is 1/F.

References:
  Higgins et al., `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework <https://openreview.net/forum?id=Sy2fzU9gl>`_, ICLR 2017;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the parameters).
"""

from __future__ import annotations

import numpy as np
import sklearn.linear_model

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics import utils


def beta_vae_features(codes1: np.ndarray, codes2: np.ndarray) -> np.ndarray:
  """Feature vectors of the BetaVAE classifier from the codes of paired batches.

  Formula: feature[p, j] = (1/L) sum_l |codes1[p, l, j] - codes2[p, l, j]|

  Args:
    codes1: [P, L, K] codes of the first element of L pairs, for P points.
    codes2: [P, L, K] codes of the second element of the same pairs.

  Returns:
    float64 [P, K].
  """
  codes1, codes2 = np.asarray(codes1, np.float64), np.asarray(codes2, np.float64)
  if codes1.ndim != 3 or codes1.shape != codes2.shape:
    raise ValueError(
      f"beta_vae_features needs two code arrays [P, L, K] of one shape; got {codes1.shape} and "
      f"{codes2.shape}."
    )
  return np.mean(np.abs(codes1 - codes2), axis=1)


def sample_beta_vae_points(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  num_points: int,
  rng: RngLike,
  *,
  batch_size_points: int = 64,
  batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws labelled points for the BetaVAE classifier.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K].
    num_points: P, the number of (feature, label) points.
    rng: `np.random.Generator` or int seed.
    batch_size_points: L, pairs averaged per point.
    batch_size: images encoded per call.

  Returns:
    (features float64 [P, K], labels int64 [P], the index of the shared factor).
  """
  rng = as_rng(rng, required=True, what="sample_beta_vae_points")
  num_points = utils.check_count("num_points", num_points)
  pairs = utils.check_count("batch_size_points", batch_size_points)
  num_factors = dataset.num_factors
  points_per_chunk = max(1, batch_size // (2 * pairs))
  features, labels = [], []
  for start in range(0, num_points, points_per_chunk):
    num = min(points_per_chunk, num_points - start)
    shared = rng.integers(num_factors, size=num)
    first = dataset.sample_factors(num * pairs, rng).reshape(num, pairs, num_factors)
    second = dataset.sample_factors(num * pairs, rng).reshape(num, pairs, num_factors)
    rows = np.arange(num)
    second[rows, :, shared] = first[rows, :, shared]
    both = np.concatenate([first.reshape(-1, num_factors), second.reshape(-1, num_factors)])
    codes = utils.codes_of_factors(dataset, representation_fn, both, rng, batch_size=batch_size)
    codes = codes.reshape(2, num, pairs, -1)
    features.append(beta_vae_features(codes[0], codes[1]))
    labels.append(shared)
  return np.concatenate(features), np.concatenate(labels)


def beta_vae_classifier_accuracy(
  train_features: np.ndarray,
  train_labels: np.ndarray,
  eval_features: np.ndarray,
  eval_labels: np.ndarray,
) -> tuple[float, float]:
  """Fits the BetaVAE score's logistic regression and returns its train and eval accuracy.

  The classifier is scikit-learn's `LogisticRegression` with its default parameters (L2
  penalty, C = 1, lbfgs, multinomial), as disentanglement_lib's `beta_vae_sklearn`.

  Args:
    train_features: [P, K] features (`beta_vae_features`).
    train_labels: int [P] index of the shared factor; at least two distinct values.
    eval_features: [Q, K].
    eval_labels: int [Q].

  Returns:
    (train accuracy, eval accuracy), fractions in [0, 1].
  """
  train_features, eval_features = np.asarray(train_features), np.asarray(eval_features)
  train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
  if (
    train_features.ndim != 2
    or eval_features.ndim != 2
    or train_features.shape[1] != eval_features.shape[1]
    or train_labels.shape != train_features.shape[:1]
    or eval_labels.shape != eval_features.shape[:1]
  ):
    raise ValueError(
      f"need features [P, K], [Q, K] and labels [P], [Q]; got {train_features.shape}, "
      f"{eval_features.shape}, {train_labels.shape}, {eval_labels.shape}."
    )
  if len(np.unique(train_labels)) < 2:
    raise ValueError(
      "the BetaVAE training points name a single factor; increase num_train (and check that the "
      "dataset has at least two factors)."
    )
  model = sklearn.linear_model.LogisticRegression()
  model.fit(train_features, train_labels)
  return (
    float(model.score(train_features, train_labels)),
    float(model.score(eval_features, eval_labels)),
  )


def compute_beta_vae(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  batch_size_points: int = 64,
  num_train: int = 10_000,
  num_eval: int = 5_000,
  batch_size: int = 256,
) -> dict[str, float | list]:
  """The BetaVAE score of a representation (see the module docstring).

  Formula: score = accuracy of LogisticRegression(features -> k) on `num_eval` fresh points,
    features = mean over `batch_size_points` pairs sharing factor k of |z(x1) - z(x2)|.

  Args:
    dataset: the ground-truth dataset (F >= 2 factors).
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means).
    rng: `np.random.Generator` or int seed.
    batch_size_points: pairs averaged per point (disentanglement_lib: 64).
    num_train: training points of the classifier (10,000).
    num_eval: evaluation points (5,000).
    batch_size: images encoded per call.

  Returns:
    dict with "beta_vae_score" (eval accuracy) and "train_accuracy".

  References:
    Higgins et al., `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework <https://openreview.net/forum?id=Sy2fzU9gl>`_, ICLR 2017.
  """
  rng = as_rng(rng, required=True, what="compute_beta_vae")
  batch_size_points = utils.check_count("batch_size_points", batch_size_points)
  num_train = utils.check_count("num_train", num_train, 2)
  num_eval = utils.check_count("num_eval", num_eval)
  batch_size = utils.check_count("batch_size", batch_size)
  if dataset.num_factors < 2:
    raise ValueError(f"the BetaVAE score needs at least two factors; {dataset} has one.")
  kwargs = {"batch_size_points": batch_size_points, "batch_size": batch_size}
  train = sample_beta_vae_points(dataset, representation_fn, num_train, rng, **kwargs)
  evaluation = sample_beta_vae_points(dataset, representation_fn, num_eval, rng, **kwargs)
  train_accuracy, eval_accuracy = beta_vae_classifier_accuracy(*train, *evaluation)
  return {"beta_vae_score": eval_accuracy, "train_accuracy": train_accuracy}
