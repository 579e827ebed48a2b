"""The FactorVAE score: a majority vote from the latent that varies least when one factor is fixed.

One vote: draw a factor k uniformly, draw `batch_size_points` factor vectors, give all of them
the first one's value of factor k, encode them, divide each latent's variance over the batch by
its variance over the whole data (the normalisation makes the vote scale-invariant) and take the
latent with the smallest ratio. In a disentangled code that is the latent of factor k. Latents
whose global standard deviation is below `prune_std_threshold` (collapsed to a constant) take
no part. The classifier assigns each latent the factor it got most training votes for; the
score is the fraction of evaluation votes it gets right. Chance level is about 1/F.

References:
  Kim & Mnih, `Disentangling by Factorising <https://arxiv.org/abs/1802.05983>`_, ICML 2018;
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, ICML 2019 (the parameters and pruning).
"""

from __future__ import annotations

import numpy as np

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.metrics import utils


def active_latents(global_variances: np.ndarray, prune_std_threshold: float = 0.05) -> np.ndarray:
  """Indices of the latents that take part in the FactorVAE vote.

  A latent is active when its standard deviation reaches the threshold,
  sqrt(var) >= prune_std_threshold (disentanglement_lib's `prune_dims`, threshold 0.05 in its
  configuration: it compares the standard deviation, not the variance). A latent of zero
  variance is never active: it cannot be normalised.

  Args:
    global_variances: [K] variance of each latent over the data.
    prune_std_threshold: minimum standard deviation, >= 0.

  Returns:
    int64 [A] indices of the active latents, increasing.
  """
  variances = np.asarray(global_variances, np.float64)
  if variances.ndim != 1:
    raise ValueError(f"global_variances must have shape [K], got {variances.shape}.")
  if not np.isfinite(prune_std_threshold) or prune_std_threshold < 0:
    raise ValueError(f"prune_std_threshold must be finite and >= 0, got {prune_std_threshold}.")
  return np.flatnonzero((np.sqrt(variances) >= prune_std_threshold) & (variances > 0))


def factor_vae_vote_matrix(
  latents: np.ndarray, factors: np.ndarray, num_latents: int, num_factors: int
) -> np.ndarray:
  """Counts votes (latent, factor) into a matrix.

  Args:
    latents: int [V] the latent each vote chose (index among the active latents).
    factors: int [V] the factor that was fixed for that vote.
    num_latents: A, rows of the matrix.
    num_factors: F, columns.

  Returns:
    int64 [A, F], votes[a, f] = number of votes with latent a and factor f.
  """
  votes = np.zeros((num_latents, num_factors), np.int64)
  np.add.at(votes, (np.asarray(latents), np.asarray(factors)), 1)
  return votes


def factor_vae_majority_vote_accuracy(
  train_votes: np.ndarray, eval_votes: np.ndarray | None = None
) -> float:
  """Accuracy of the majority-vote classifier latent -> factor.

  Formula: predicted(a) = argmax_f train_votes[a, f] (ties and vote-less latents go to the
  lowest factor index, as disentanglement_lib's argmax);
    accuracy = sum_a eval_votes[a, predicted(a)] / sum_{a,f} eval_votes[a, f].

  Args:
    train_votes: int [A, F] training votes (`factor_vae_vote_matrix`).
    eval_votes: int [A, F] votes to score; default the training votes (training accuracy).

  Returns:
    Accuracy in [0, 1].
  """
  train_votes = np.asarray(train_votes)
  eval_votes = train_votes if eval_votes is None else np.asarray(eval_votes)
  if train_votes.ndim != 2 or train_votes.shape != eval_votes.shape or train_votes.size == 0:
    raise ValueError(
      f"need vote matrices [A, F] of one non-empty shape; got {train_votes.shape} and "
      f"{eval_votes.shape}."
    )
  if np.any(train_votes < 0) or np.any(eval_votes < 0):
    raise ValueError("vote counts must be non-negative.")
  total = eval_votes.sum()
  if total == 0:
    raise ValueError("eval_votes holds no votes.")
  predicted = np.argmax(train_votes, axis=1)
  return float(eval_votes[np.arange(len(predicted)), predicted].sum() / total)


def sample_factor_vae_votes(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  num_votes: int,
  global_variances: np.ndarray,
  active: np.ndarray,
  rng: RngLike,
  *,
  batch_size_points: int = 64,
  batch_size: int = 256,
) -> np.ndarray:
  """Draws FactorVAE votes.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K].
    num_votes: V.
    global_variances: [K] variance of each latent over the data.
    active: int [A] the latents that take part (`active_latents`), A >= 1.
    rng: `np.random.Generator` or int seed.
    batch_size_points: L >= 2, examples per vote sharing the fixed factor.
    batch_size: images encoded per call.

  Returns:
    int64 [A, F] vote matrix; rows follow `active`.
  """
  rng = as_rng(rng, required=True, what="sample_factor_vae_votes")
  num_votes = utils.check_count("num_votes", num_votes)
  size = utils.check_count("batch_size_points", batch_size_points, 2)
  active = np.asarray(active, np.int64)
  scale = np.asarray(global_variances, np.float64)[active]
  num_factors = dataset.num_factors
  votes_per_chunk = max(1, batch_size // size)
  latents, fixed = [], []
  for start in range(0, num_votes, votes_per_chunk):
    num = min(votes_per_chunk, num_votes - start)
    factor = rng.integers(num_factors, size=num)
    factors = dataset.sample_factors(num * size, rng).reshape(num, size, num_factors)
    rows = np.arange(num)
    factors[rows, :, factor] = factors[rows, 0, factor][:, None]
    codes = utils.codes_of_factors(
      dataset, representation_fn, factors.reshape(-1, num_factors), rng, batch_size=batch_size
    ).reshape(num, size, -1)
    local_variances = np.var(codes[:, :, active], axis=1, ddof=1)
    latents.append(np.argmin(local_variances / scale, axis=1))
    fixed.append(factor)
  return factor_vae_vote_matrix(
    np.concatenate(latents), np.concatenate(fixed), len(active), num_factors
  )


def compute_factor_vae(
  dataset: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  rng: RngLike,
  *,
  batch_size_points: int = 64,
  num_train: int = 10_000,
  num_eval: int = 5_000,
  num_variance_estimate: int = 10_000,
  prune_std_threshold: float = 0.05,
  batch_size: int = 256,
) -> dict[str, float | list]:
  """The FactorVAE score of a representation (see the module docstring).

  Formula: vote = argmin_{a active} Var_batch[z_a | v_k fixed] / Var_data[z_a], paired with k;
    score = majority-vote accuracy on the evaluation votes
    (`factor_vae_majority_vote_accuracy`). Variances use ddof = 1.
  Without active latents the score is 0 (disentanglement_lib's convention).

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means).
    rng: `np.random.Generator` or int seed.
    batch_size_points: examples per vote, >= 2 (disentanglement_lib: 64).
    num_train: training votes (10,000).
    num_eval: evaluation votes (5,000).
    num_variance_estimate: random examples for the global variances (10,000).
    prune_std_threshold: latents with global standard deviation below this are left out
      (disentanglement_lib's configuration: 0.05 on the standard deviation).
    batch_size: images encoded per call.

  Returns:
    dict with "factor_vae_score" (eval accuracy), "train_accuracy", "num_active_latents",
    "active_latents" (indices) and "global_variances" [K].

  References:
    Kim & Mnih, `Disentangling by Factorising <https://arxiv.org/abs/1802.05983>`_, ICML 2018.
  """
  rng = as_rng(rng, required=True, what="compute_factor_vae")
  batch_size_points = utils.check_count("batch_size_points", batch_size_points, 2)
  num_train = utils.check_count("num_train", num_train)
  num_eval = utils.check_count("num_eval", num_eval)
  num_variance_estimate = utils.check_count("num_variance_estimate", num_variance_estimate, 2)
  batch_size = utils.check_count("batch_size", batch_size)
  if not np.isfinite(prune_std_threshold) or prune_std_threshold < 0:
    raise ValueError(f"prune_std_threshold must be finite and >= 0, got {prune_std_threshold}.")

  codes, _ = utils.sample_codes_and_factors(
    dataset, representation_fn, num_variance_estimate, rng, batch_size=batch_size
  )
  global_variances = np.var(codes, axis=0, ddof=1)
  active = active_latents(global_variances, prune_std_threshold)
  result = {
    "factor_vae_score": 0.0,
    "train_accuracy": 0.0,
    "num_active_latents": int(len(active)),
    "active_latents": active.tolist(),
    "global_variances": global_variances.tolist(),
  }
  if len(active) == 0:
    return result
  kwargs = {"batch_size_points": batch_size_points, "batch_size": batch_size}
  args = (global_variances, active, rng)
  train_votes = sample_factor_vae_votes(dataset, representation_fn, num_train, *args, **kwargs)
  eval_votes = sample_factor_vae_votes(dataset, representation_fn, num_eval, *args, **kwargs)
  result["train_accuracy"] = factor_vae_majority_vote_accuracy(train_votes)
  result["factor_vae_score"] = factor_vae_majority_vote_accuracy(train_votes, eval_votes)
  return result
