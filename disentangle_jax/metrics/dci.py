"""DCI: disentanglement, completeness and informativeness from a matrix of feature importances.

For each factor a model predicts the factor from the codes; the importance R[j, k] of latent j for
factor k is read off the fitted model: gradient-boosted trees, as disentanglement_lib, either
scikit-learn's histogram-based booster ("hist", the default) or the exact booster that
disentanglement_lib ran ("gbt", single-threaded and minutes per factor at 10,000 points).
- Disentanglement: each latent should matter for one factor only. Per latent, one minus the
  entropy (base F) of its row of R normalised to a distribution; weighted by the latent's share
  of the total importance.
- Completeness: each factor should be captured by one latent. Per factor, one minus the entropy
  (base K) of its column normalised; weighted by the factor's share.
- Informativeness: how well the models predict the factors on held-out codes (accuracy for
  classifiers, R^2 for regressors), and on the training codes.

References:
  Eastwood & Williams, `A Framework for the Quantitative Evaluation of Disentangled
  Representations <https://openreview.net/forum?id=By-7dz-AZ>`_, ICLR 2018;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the parameters and the GBT).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.compose
import sklearn.ensemble
import sklearn.linear_model
import sklearn.pipeline
import sklearn.preprocessing
import threadpoolctl
from absl import logging

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics import utils

ImportanceModelFactory = Callable[[int], object]
"""seed -> an unfitted scikit-learn estimator (fit / score, then `feature_importances_` or
`coef_`); the seed comes from the metric's rng so that results are reproducible."""

LASSO_ALPHA = 0.02
"""L1 weight of the "lasso" importance model, on standardised codes and factor. Eastwood &
Williams use a lasso among their regressors; this value is this package's choice, not a
convention of the field: pass a callable `importance_model` to use another."""


def _gbt(seed: int):
  return sklearn.ensemble.GradientBoostingClassifier(random_state=seed)


def _hist(seed: int):
  # GradientBoostingClassifier's defaults where the histogram booster has the same knob: 100
  # stages, learning rate 0.1, depth-3 trees (8 leaves), leaves of one sample, no L2 penalty, no
  # early stopping. The differences left: thresholds from 255 quantile bins, splits and leaf
  # values from gradients and hessians (Newton) instead of least squares on the residuals.
  return sklearn.ensemble.HistGradientBoostingClassifier(
    max_iter=100,
    learning_rate=0.1,
    max_depth=3,
    max_leaf_nodes=None,
    min_samples_leaf=1,
    l2_regularization=0.0,
    early_stopping=False,
    random_state=seed,
  )


def _lasso(seed: int):
  regressor = sklearn.pipeline.make_pipeline(
    sklearn.preprocessing.StandardScaler(),
    sklearn.linear_model.Lasso(alpha=LASSO_ALPHA, random_state=seed),
  )
  return sklearn.compose.TransformedTargetRegressor(
    regressor=regressor, transformer=sklearn.preprocessing.StandardScaler()
  )


_MODELS = {"hist": _hist, "gbt": _gbt, "lasso": _lasso}


def importance_model_factory(
  importance_model: str | ImportanceModelFactory,
) -> ImportanceModelFactory:
  """Resolves the `importance_model` argument of `compute_dci`.

  Args:
    importance_model: "hist" (scikit-learn's HistGradientBoostingClassifier set up as
      GradientBoostingClassifier's defaults, importance measured as GradientBoostingClassifier
      measures it, `histogram_booster_importance`),
      "gbt" (GradientBoostingClassifier with default parameters, disentanglement_lib's choice,
      importance its impurity decrease), "lasso" (Lasso regression of the standardised factor
      on the standardised codes, alpha = `LASSO_ALPHA`, importance |coefficient|), or a
      callable seed -> unfitted estimator.

  Returns:
    A callable seed -> unfitted estimator.
  """
  if callable(importance_model):
    return importance_model
  if importance_model in _MODELS:
    return _MODELS[importance_model]
  raise ValueError(
    f"importance_model must be one of {sorted(_MODELS)} or a callable seed -> estimator; got "
    f"{importance_model!r}."
  )


@functools.partial(jax.jit, static_argnums=(9, 10))
def _replay_importance(
  ranks, target, baseline, feature, threshold, left, right, is_leaf, value, depth, num_classes
):
  """GBT's importance of a booster's trees [stages, trees, nodes], replayed on its data."""
  num_latents, num = ranks.shape
  num_trees, size = feature.shape[1:]
  trees = jnp.arange(num_trees)[:, None]

  def stage(raw, tree_arrays):  # raw [N, T]
    feat, thr, lft, rgt, leaf_node, val = tree_arrays
    if num_classes == 2:
      residuals = (target == 1)[:, None] - jax.nn.sigmoid(raw)
    else:
      residuals = jax.nn.one_hot(target, num_classes) - jax.nn.softmax(raw, axis=1)
    node = jnp.zeros((num_trees, num), jnp.int32)
    count = jnp.zeros((num_trees, size))
    total = jnp.zeros((num_trees, size))
    for _ in range(depth):
      leaf = leaf_node[trees, node]
      x = jnp.take_along_axis(ranks, feat[trees, node], axis=0)
      child = jnp.where(x <= thr[trees, node], lft[trees, node], rgt[trees, node])
      node = jnp.where(leaf, node, child)
      moved = jax.nn.one_hot(node, size) * (~leaf)[..., None]  # [T, N, P], once per child
      count = count + moved.sum(axis=1)
      total = total + jnp.einsum("tnp,nt->tp", moved, residuals)
    n_left, n_right = count[trees, lft], count[trees, rgt]
    safe_left, safe_right = jnp.maximum(n_left, 1), jnp.maximum(n_right, 1)
    gap = total[trees, lft] / safe_left - total[trees, rgt] / safe_right
    use = ~leaf_node & (n_left > 0) & (n_right > 0)
    decrease = jnp.where(use, n_left * n_right / (safe_left + safe_right) * gap**2, 0.0)
    gained = jnp.zeros(num_latents).at[feat.ravel()].add(decrease.ravel() / num)
    return raw + val[trees, node].T, gained

  raw = jnp.broadcast_to(baseline, (num, feature.shape[1])).astype(jnp.float32)
  _, gains = jax.lax.scan(stage, raw, (feature, threshold, left, right, is_leaf, value))
  return gains.sum(axis=0)


def histogram_booster_importance(model, codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """GradientBoostingClassifier's impurity importance, measured on a histogram booster's trees.

  GradientBoostingClassifier fits each stage's tree to the residuals r = 1[y = c] - p_c of the
  current model by least squares; a split's importance is its decrease of the squared error,
  and `feature_importances_` averages the per-tree sums over the trees and normalises them.
  This replays a fitted HistGradientBoostingClassifier stage by stage on its training data:
  the residuals before each stage, every sample routed through each tree, every split scored
  the same way.

  Formula: per split node with n_L, n_R samples and mean residuals rbar_L, rbar_R,
    decrease = n_L n_R / (n_L + n_R) * (rbar_L - rbar_R)^2;
    importance_j = sum over trees of sum over the splits on j of decrease / N, normalised to
    sum to 1 (zero everywhere when no tree splits).

  Args:
    model: a fitted `HistGradientBoostingClassifier` (reads its trees, `_predictors`, for which
      scikit-learn has no public accessor).
    codes: [N, K] its training inputs.
    labels: [N] its training labels.

  Returns:
    float64 [K].

  References:
    Friedman, `Greedy Function Approximation: A Gradient Boosting Machine
    <https://doi.org/10.1214/aos/1013203451>`_, Annals of Statistics 2001;
    Ke et al., `LightGBM: A Highly Efficient Gradient Boosting Decision Tree
    <https://papers.nips.cc/paper/6907>`_, NeurIPS 2017 (histogram boosting).
  """
  codes = np.asarray(codes, np.float64)
  num, num_latents = codes.shape
  target = np.searchsorted(model.classes_, labels)
  stages = model._predictors
  size = max(len(p.nodes) for stage in stages for p in stage)
  depth = max(int(p.nodes["depth"].max()) for stage in stages for p in stage)

  def field(name, fill):  # [stages, trees, nodes], padded with leaves no sample reaches
    out = np.full((len(stages), len(stages[0]), size), fill, dtype=np.float64)
    for i, stage in enumerate(stages):
      for t, p in enumerate(stage):
        out[i, t, : len(p.nodes)] = p.nodes[name]
    return out

  # Routing in rank space is exact: x <= threshold iff rank(x) <= rank of the threshold.
  feature = field("feature_idx", 0).astype(np.int32)
  threshold = field("num_threshold", 0.0)
  ranks = np.empty((num_latents, num), np.int32)
  sorted_values = [np.unique(codes[:, j]) for j in range(num_latents)]
  for j in range(num_latents):
    ranks[j] = np.searchsorted(sorted_values[j], codes[:, j])
  threshold_rank = np.zeros(threshold.shape, np.int32)
  for j in range(num_latents):
    on_j = feature == j
    threshold_rank[on_j] = np.searchsorted(sorted_values[j], threshold[on_j], side="right") - 1
  importance = _replay_importance(
    jnp.asarray(ranks),
    jnp.asarray(target, jnp.int32),
    jnp.asarray(np.asarray(model._baseline_prediction, np.float32).reshape(-1)),
    jnp.asarray(feature),
    jnp.asarray(threshold_rank),
    jnp.asarray(field("left", 0).astype(np.int32)),
    jnp.asarray(field("right", 0).astype(np.int32)),
    jnp.asarray(field("is_leaf", 1).astype(bool)),
    jnp.asarray(field("value", 0.0).astype(np.float32)),
    depth,
    len(model.classes_),
  )
  importance = np.asarray(importance, np.float64)
  total = importance.sum()
  return importance / total if total > 0 else importance


def feature_importance(model, num_latents: int) -> np.ndarray:
  """Non-negative importance of each input latent for a fitted estimator.

  Uses `feature_importances_` when the estimator has it (trees), otherwise |coef_| (linear
  models; summed over classes for a multi-class coefficient matrix). Wrappers are unwrapped:
  `TransformedTargetRegressor` to its fitted regressor, a `Pipeline` to its last step.

  Args:
    model: a fitted scikit-learn estimator.
    num_latents: K, the number of input features.

  Returns:
    float64 [K].
  """
  if hasattr(model, "regressor_"):
    model = model.regressor_
  if isinstance(model, sklearn.pipeline.Pipeline):
    model = model[-1]
  if hasattr(model, "feature_importances_"):
    importance = np.abs(np.asarray(model.feature_importances_, np.float64))
  elif hasattr(model, "coef_"):
    coef = np.abs(np.asarray(model.coef_, np.float64))
    importance = coef.reshape(-1, num_latents).sum(axis=0) if coef.ndim > 1 else coef
  else:
    raise ValueError(
      f"the importance model {type(model).__name__} exposes neither feature_importances_ nor coef_."
    )
  if importance.shape != (num_latents,):
    raise ValueError(f"expected {num_latents} importances, got shape {importance.shape}.")
  return importance


def _normalized_entropy(probabilities: np.ndarray, axis: int) -> np.ndarray:
  """Entropy along `axis` divided by log(n), n the length of that axis; 0 log 0 = 0; 0 if n = 1."""
  n = probabilities.shape[axis]
  if n == 1:
    return np.zeros(np.delete(probabilities.shape, axis))
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
  return -terms.sum(axis=axis) / np.log(n)


def dci_scores(importance_matrix: np.ndarray) -> dict[str, float | np.ndarray]:
  """Disentanglement and completeness of an importance matrix.

  Formula: with P[j, k] = R[j, k] / sum_k' R[j, k'] and Q[j, k] = R[j, k] / sum_j' R[j', k],
    D_j = 1 - H_F(P[j, :]),  D = sum_j D_j * (sum_k R[j, k]) / (sum R),
    C_k = 1 - H_K(Q[:, k]),  C = sum_k C_k * (sum_j R[j, k]) / (sum R),
  H_n the entropy in base n (0 log 0 = 0). A latent (factor) of zero total importance scores 0
  and has weight 0; an all-zero matrix scores D = C = 0. With a single factor every latent's
  D_j is 1 (and with a single latent every C_k is 1): the entropy of one outcome is 0.

  Args:
    importance_matrix: [K, F] non-negative importances R, latents by factors.

  Returns:
    dict with "dci_disentanglement", "dci_completeness" (floats in [0, 1]),
    "disentanglement_per_latent" [K] and "completeness_per_factor" [F].

  References:
    Eastwood & Williams, `A Framework for the Quantitative Evaluation of Disentangled
    Representations <https://openreview.net/forum?id=By-7dz-AZ>`_, ICLR 2018.
  """
  r = np.asarray(importance_matrix, np.float64)
  if r.ndim != 2 or r.size == 0:
    raise ValueError(f"importance_matrix must have shape [K, F], got {r.shape}.")
  if not np.all(np.isfinite(r)) or np.any(r < 0):
    raise ValueError("importance_matrix must be finite and non-negative.")
  total = r.sum()
  row_sums, col_sums = r.sum(axis=1), r.sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    rows = np.where(row_sums[:, None] > 0, r / row_sums[:, None], 0.0)
    cols = np.where(col_sums[None, :] > 0, r / col_sums[None, :], 0.0)
  per_latent = np.where(row_sums > 0, 1.0 - _normalized_entropy(rows, axis=1), 0.0)
  per_factor = np.where(col_sums > 0, 1.0 - _normalized_entropy(cols, axis=0), 0.0)
  if total > 0:
    disentanglement = float(np.sum(per_latent * row_sums / total))
    completeness = float(np.sum(per_factor * col_sums / total))
  else:
    disentanglement = completeness = 0.0
  return {
    "dci_disentanglement": disentanglement,
    "dci_completeness": completeness,
    "disentanglement_per_latent": per_latent,
    "completeness_per_factor": per_factor,
  }


def dci_importance_matrix(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  rng: RngLike,
  *,
  importance_model: str | ImportanceModelFactory = "hist",
  factor_names: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fits one model per factor; returns importances and train / test informativeness.

  Args:
    codes_train: [N, K] codes.
    factors_train: int [N, F] factors; each must take at least two values.
    codes_test: [M, K].
    factors_test: int [M, F].
    rng: `np.random.Generator` or int seed (one model seed per factor).
    importance_model: see `importance_model_factory`.
    factor_names: names for the progress log.

  Returns:
    (importance matrix [K, F], train informativeness [F], test informativeness [F]); the
    informativeness is the model's `score`: accuracy for classifiers, R^2 for regressors.
  """
  rng = as_rng(rng, required=True, what="dci_importance_matrix")
  factory = importance_model_factory(importance_model)
  codes_train, codes_test = np.asarray(codes_train), np.asarray(codes_test)
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
  names = factor_names or tuple(f"factor {k}" for k in range(num_factors))
  importance = np.zeros((num_latents, num_factors))
  train_scores, test_scores = np.zeros(num_factors), np.zeros(num_factors)
  seeds = rng.integers(2**31 - 1, size=num_factors)
  start = time.perf_counter()
  for k in range(num_factors):
    num_values = len(np.unique(factors_train[:, k]))
    if num_values < 2:
      raise ValueError(f"factor {names[k]!r} takes a single value in the DCI training points.")
    tick = time.perf_counter()
    model = factory(int(seeds[k]))
    # One OpenMP thread: the histogram booster's trees are small (10,000 points) and its
    # threads spin while they wait; on a busy 2-core machine two threads ran 6x slower.
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
      model.fit(codes_train, factors_train[:, k])
    if isinstance(model, sklearn.ensemble.HistGradientBoostingClassifier):
      importance[:, k] = histogram_booster_importance(model, codes_train, factors_train[:, k])
    else:
      importance[:, k] = feature_importance(model, num_latents)
    train_scores[k] = model.score(codes_train, factors_train[:, k])
    test_scores[k] = model.score(codes_test, factors_test[:, k])
    logging.info(
      "DCI: factor %d/%d (%s, %d values) fitted in %.1f s (%.1f s elapsed), test score %.3f",
      k + 1,
      num_factors,
      names[k],
      num_values,
      time.perf_counter() - tick,
      time.perf_counter() - start,
      test_scores[k],
    )
  return importance, train_scores, test_scores


def compute_dci(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  num_train: int = 10_000,
  num_test: int = 5_000,
  importance_model: str | ImportanceModelFactory = "hist",
  batch_size: int = 256,
) -> dict[str, float | list]:
  """DCI disentanglement, completeness and informativeness of a representation.

  Formula: R[j, k] = importance of latent j in the model predicting factor k (fitted on
  `num_train` points); D, C from `dci_scores(R)`; informativeness = mean over factors of the
  model's score on `num_test` fresh points (and on the training points).

  Both boosters fit one tree per class and stage (100 stages; 40 classes for dSprites'
  orientation). "gbt", disentanglement_lib's exact booster, takes minutes per factor at 10,000
  points; "hist" seconds, multi-threaded, with scores within 0.02 of "gbt"'s on the codes of
  docs/benchmarks.md. Each factor's time is logged (absl.logging.info).

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means).
    rng: `np.random.Generator` or int seed.
    num_train: training points (disentanglement_lib: 10,000).
    num_test: test points (5,000).
    importance_model: "hist" (default), "gbt" (disentanglement_lib's), "lasso" or a callable
      seed -> unfitted estimator; see `importance_model_factory`.
    batch_size: images encoded per call.

  Returns:
    dict with "dci_disentanglement", "dci_completeness", "dci_informativeness_test",
    "dci_informativeness_train", "importance_matrix" [K][F], "disentanglement_per_latent" [K],
    "completeness_per_factor" [F], "informativeness_test_per_factor" {name: score} and
    "importance_model" (its name, or "custom").

  References:
    Eastwood & Williams, `A Framework for the Quantitative Evaluation of Disentangled
    Representations <https://openreview.net/forum?id=By-7dz-AZ>`_, ICLR 2018.
  """
  rng = as_rng(rng, required=True, what="compute_dci")
  num_train = utils.check_count("num_train", num_train, 2)
  num_test = utils.check_count("num_test", num_test)
  batch_size = utils.check_count("batch_size", batch_size)
  importance_model_factory(importance_model)
  kwargs = {"batch_size": batch_size}
  codes_train, factors_train = utils.sample_codes_and_factors(
    dataset, representation_fn, num_train, rng, **kwargs
  )
  codes_test, factors_test = utils.sample_codes_and_factors(
    dataset, representation_fn, num_test, rng, **kwargs
  )
  importance, train_scores, test_scores = dci_importance_matrix(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    rng,
    importance_model=importance_model,
    factor_names=tuple(dataset.factor_names),
  )
  scores = dci_scores(importance)
  return {
    "dci_disentanglement": scores["dci_disentanglement"],
    "dci_completeness": scores["dci_completeness"],
    "dci_informativeness_test": float(np.mean(test_scores)),
    "dci_informativeness_train": float(np.mean(train_scores)),
    "importance_matrix": importance.tolist(),
    "disentanglement_per_latent": scores["disentanglement_per_latent"].tolist(),
    "completeness_per_factor": scores["completeness_per_factor"].tolist(),
    "informativeness_test_per_factor": dict(
      zip(dataset.factor_names, map(float, test_scores), strict=True)
    ),
    "importance_model": importance_model if isinstance(importance_model, str) else "custom",
  }
