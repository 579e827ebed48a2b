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

from collections.abc import Sequence

import numpy as np

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng
from disentangle_jax.distributions.gaussian_mixture import per_dimension_groups
from disentangle_jax.metrics import utils
from disentangle_jax.metrics.chen import chen_mutual_information as chen_mutual_information
from disentangle_jax.metrics.chen import discrete_factor_mutual_information
from disentangle_jax.metrics.encoding import EncodeFn as EncodeFn
from disentangle_jax.metrics.encoding import Encoding, as_encoding, encode_all

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

  `encoding.encode_all` without the categorical codes (an encoder may still return them); the
  first batch is checked before the rest is encoded.

  Args:
    dataset: the ground-truth dataset (all `num_examples` examples are encoded).
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K][, discrete]).
    rng: generator for datasets with random observations (colour, noise); ignored otherwise.
    batch_size: images per call.
    log_every_seconds: interval of the progress line.

  Returns:
    (mean float32 [N, K], log_var float32 [N, K], factors int64 [N, F]).
  """
  encoded = encode_all(
    dataset, encode_fn, rng, batch_size=batch_size, log_every_seconds=log_every_seconds
  )
  return encoded.mean, encoded.log_var, encoded.factors


def compute_mig_chen(
  dataset: GroundTruthData,
  encode_fn: EncodeFn | None,
  rng: RngLike,
  *,
  scored_factors: Sequence[str] | None = None,
  subspaces: Sequence[Sequence[int]] | None = None,
  num_samples: int = 10_000,
  batch_size: int = 2048,
  chunk_size: int | None = None,
  sampling: str = "shared",
  encoded: Encoding | tuple | None = None,
) -> dict:
  """Chen et al.'s MIG over the whole dataset (see `chen.chen_mutual_information`).

  The factor entropies are H(v_k) = log |V_k|, exact for a full grid of factors. With
  `subspaces` (e.g. an ISA layout's `tree.subspace_slices()` as ranges of latents) each subspace
  is one variable, the ISA-VAE paper's subspace MIG. Categorical codes of the encoding
  (JointVAE) are more variables, their MI with each factor from counts over the dataset; the gap
  is taken over all variables.

  Args:
    dataset: the ground-truth dataset; every example is encoded.
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K][, discrete]); unused when
      `encoded` is given.
    rng: `np.random.Generator` or int seed.
    scored_factors: names of the factors MIG averages over; default `default_mig_factors`
      (all but shape on dSprites). MI is computed for every factor regardless.
    subspaces: groups of latent indices, one variable each; default one per latent.
    num_samples: samples per entropy estimate.
    batch_size: images per encoder call.
    chunk_size: posteriors per step of the log-sum-exp; None picks one.
    sampling: "shared" (one pass over the posteriors, default) or "per_value" (Chen et al.'s
      code: one estimate per factor value); see `chen`.
    encoded: an `Encoding` or (mean, log_var, factors[, discrete]) from `encode_all` /
      `encode_dataset`, to skip encoding again.

  Returns:
    dict with "mig", "mig_per_factor" {name: gap}, "scored_factors", "mutual_information"
    [V][F] and "factor_entropies" [F] (nats), "variable_names" [V] (V = groups, then the
    categorical codes), "num_examples", "num_samples", "sampling", "variables" ("latents" or
    "subspaces") and "groups"; with shared sampling also "mutual_information_stderr" [V][F]
    (0 for the exact categorical rows).

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
  if encoded is None:
    if encode_fn is None:
      raise ValueError("compute_mig_chen needs encode_fn or encoded.")
    encoded = encode_all(dataset, encode_fn, rng, batch_size=batch_size)
  encoded = as_encoding(encoded)
  mean, log_var, factors = encoded.mean, encoded.log_var, encoded.factors
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
    sampling=sampling,
  )
  mi = result["mutual_information"]
  stderr = result.get("mutual_information_stderr")
  variable_names = [f"z{g[0]}" if len(g) == 1 else f"z{g[0]}-{g[-1]}" for g in map(tuple, groups)]
  if encoded.discrete is not None:
    discrete_mi = discrete_factor_mutual_information(encoded.discrete, factors)
    mi = np.concatenate([mi, discrete_mi])
    if stderr is not None:
      stderr = np.concatenate([stderr, np.zeros_like(discrete_mi)])
    variable_names += [f"c{i}" for i in range(encoded.num_discrete)]
  columns = [names.index(name) for name in scored]
  entropies = np.log(np.asarray(dataset.factor_sizes, np.float64))
  mig, gaps = mutual_information_gap(mi[:, columns], entropies[columns])
  out = {
    "mig": mig,
    "mig_per_factor": dict(zip(scored, map(float, gaps), strict=True)),
    "scored_factors": list(scored),
    "mutual_information": mi.tolist(),
    "factor_entropies": entropies.tolist(),
    "variable_names": variable_names,
    "num_examples": int(len(mean)),
    "num_samples": int(result["num_samples"]),
    "sampling": sampling,
    "variables": "latents" if subspaces is None else "subspaces",
    "groups": [list(map(int, g)) for g in groups],
  }
  if stderr is not None:
    out["mutual_information_stderr"] = stderr.tolist()
  return out


# ---------------------------------------------------------------------- disentanglement_lib


def mig_from_codes(
  codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20, num_discrete: int = 0
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
  """disentanglement_lib's MIG from sampled codes and factors.

  Formula: c = histogram_discretize(codes, num_bins); I_jk = plug-in I(c_j; v_k);
    H_k = plug-in H(v_k); MIG = mean_k (I sorted over j: I[0, k] - I[1, k]) / H_k.

  Args:
    codes: [N, K] continuous codes (K >= 2), the last `num_discrete` categorical (not binned).
    factors: int [N, F].
    num_bins: equal-width bins per latent.
    num_discrete: trailing categorical columns of `codes`.

  Returns:
    (MIG, per-factor gaps [F], MI [K, F], factor entropies [F]); nats.
  """
  binned = utils.histogram_discretize(codes, num_bins=num_bins, num_discrete=num_discrete)
  mi = utils.discrete_mutual_info(binned, factors)
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
  num_discrete: int = 0,
) -> dict:
  """disentanglement_lib's MIG: `num_train` random examples, binned mean codes, all factors.

  Args:
    dataset: the ground-truth dataset.
    representation_fn: images [B, H, W, C] -> codes [B, K] (the posterior means), or a
      `CodeTable`.
    rng: `np.random.Generator` or int seed.
    num_train: examples drawn.
    num_bins: equal-width bins per latent.
    batch_size: images per encoder call.
    num_discrete: trailing code columns that are categorical codes (kept, not binned).

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
  mig, gaps, mi, entropies = mig_from_codes(
    codes, factors, num_bins=num_bins, num_discrete=num_discrete
  )
  return {
    "mig": mig,
    "mig_per_factor": dict(zip(dataset.factor_names, map(float, gaps), strict=True)),
    "mutual_information": mi.tolist(),
    "factor_entropies": entropies.tolist(),
  }
