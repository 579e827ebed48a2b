"""Chen et al.'s mutual information between latents and factors, over the whole dataset.

q(z) = (1/N) sum_n q(z|x_n) is the aggregate posterior of all N examples; q(z | v_k = v) the same
mixture over the examples whose factor k has the value v. With one z_n ~ q(z|x_n) per example,
  I(z_g; v_k) = H(z_g) - H(z_g | v_k),   H(z_g | v_k) = sum_v p(v) H(z_g | v_k = v),
entropies estimated as minus the mean log-density of samples of the mixture, each log-density
exact over all its components (`gaussian_mixture_log_conditionals`).

Two sampling designs:
- "shared" (default): S examples drawn once, without replacement, from the whole dataset; each
  of their z is scored under q(z_g) and under q(z_g | v_k = v_k(z)) for every factor, in one pass
  over the N posteriors. Conditional on v_k = v, a sample is uniform over the examples with that
  value, so the mean over all S samples of -log q(z_g | v_k(z)) estimates H(z_g | v_k), and
    I = mean_s [log q(z_sg | v_k(s)) - log q(z_sg)]
  is a mean of S paired terms, with standard error std / sqrt(S).
- "per_value" (Chen et al.'s code): H(z_g) from S of the z, and each H(z_g | v_k = v) from
  min(S, N_v) of the z of the examples with v_k = v, against those examples' posteriors:
  1 + sum_k |V_k| estimates, (1 + F) * S * N * K Gaussian terms on a full grid.
Both draw the same z (one per example, from the same random stream) and the same S examples for
H(z_g), so their marginal entropies are equal; with S >= N every z is used everywhere and the
two give the same numbers. Otherwise they are two unbiased designs for the same quantity. The
shared design costs about S * N * K terms (6x fewer than per_value on dSprites) and pairs the
terms of the difference, which removes most of the sampling noise of an uninformative latent
(whose two log-densities nearly agree).

Categorical latents (JointVAE) are discrete given x: their mutual information with each factor
is the plug-in value from counts over the whole dataset, exact for the code's joint
distribution with the factors (`discrete_factor_mutual_information`).

References:
  Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
  <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018;
  Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
  <https://arxiv.org/abs/1804.00104>`_, NeurIPS 2018 (the categorical latents).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from disentangle_jax.data.ground_truth import RngLike, as_rng
from disentangle_jax.distributions.gaussian_mixture import (
  gaussian_mixture_log_conditionals,
  gaussian_mixture_log_marginals,
  per_dimension_groups,
)
from disentangle_jax.metrics import utils

SAMPLINGS = ("shared", "per_value")


def discrete_factor_mutual_information(discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Mutual information (nats) of each categorical code with each factor, from counts.

  Formula: I(c; v) = sum_{a,b} p(a, b) log(p(a, b) / (p(a) p(b))), p the frequencies over
  the whole dataset (exact for a code that is a function of the example, e.g. the argmax).

  Args:
    discrete: int [N, C] categorical codes.
    factors: int [N, F].

  Returns:
    float64 [C, F].
  """
  return utils.discrete_mutual_info(discrete, factors)


def _check_posteriors(mean, log_var, factors, stacked: bool):
  rank = 3 if stacked else 2
  if (
    mean.ndim != rank
    or mean.shape != log_var.shape
    or factors.ndim != 2
    or factors.shape[0] != mean.shape[-2]
  ):
    shape = "[M, N, K]" if stacked else "[N, K]"
    raise ValueError(
      f"Chen et al.'s MI needs mean, log_var {shape} and factors [N, F]; got {mean.shape}, "
      f"{log_var.shape}, {factors.shape}."
    )


def chen_mutual_information_stack(
  mean: np.ndarray,
  log_var: np.ndarray,
  factors: np.ndarray,
  rng: RngLike,
  *,
  groups: Sequence[Sequence[int]] | None = None,
  num_samples: int = 10_000,
  chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
  """Chen et al.'s MI for a stack of M models at once (shared sampling; see the module doc).

  The M models are scored in one compiled program: the kernel is vmapped over models. All
  models use the same S examples (so the samples' factor labels are shared), each its own z.

  Formula: z_ms = mean_m[n_s] + exp(log_var_m[n_s] / 2) * eps_ms for S examples n_s;
    I_m(z_g; v_k) = mean_s [log q_m(z_msg | v_k(n_s)) - log q_m(z_msg)].

  Args:
    mean: [M, N, K] posterior means of every example, per model.
    log_var: [M, N, K] posterior log-variances.
    factors: int [N, F] factor values of the examples (shared by the models).
    rng: `np.random.Generator` or int seed (the examples and the z draws).
    groups: latent index groups, one variable each (ISA subspaces); default one per latent.
    num_samples: S, the examples scored (all of them when S >= N).
    chunk_size: posteriors per scan step; None picks one (`auto_chunk_size`).

  Returns:
    dict with "mutual_information" [M, G, F], "mutual_information_stderr" [M, G, F],
    "marginal_entropy" [M, G], "conditional_entropy" [M, G, F] (nats) and "num_samples".

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018.
  """
  rng = as_rng(rng, required=True, what="chen_mutual_information_stack")
  mean = np.asarray(mean, np.float32)
  log_var = np.asarray(log_var, np.float32)
  factors = np.asarray(factors)
  _check_posteriors(mean, log_var, factors, stacked=True)
  num_models, num, num_latents = mean.shape
  groups = per_dimension_groups(num_latents) if groups is None else tuple(map(tuple, groups))
  num_samples = utils.check_count("num_samples", num_samples)
  # One z per example, drawn as "per_value" draws them, then S examples: both designs score the
  # same z, and the marginal entropies of the two designs are equal.
  noise = rng.standard_normal(mean.shape, dtype=np.float32)
  rows = rng.permutation(num)[: min(num_samples, num)]
  z = mean[:, rows] + np.exp(0.5 * log_var[:, rows]) * noise[:, rows]
  marginal, conditional = gaussian_mixture_log_conditionals(
    jnp.asarray(z),
    factors[rows],
    jnp.asarray(mean),
    jnp.asarray(log_var),
    factors,
    groups=groups,
    chunk_size=chunk_size,
  )
  marginal = np.asarray(marginal, np.float64)  # [M, S, G]
  conditional = np.asarray(conditional, np.float64)  # [M, S, F, G]
  paired = conditional - marginal[:, :, None, :]
  spread = paired.std(axis=1, ddof=1) if len(rows) > 1 else np.zeros_like(paired[:, 0])
  stderr = spread / np.sqrt(len(rows))
  return {
    "mutual_information": np.swapaxes(paired.mean(axis=1), 1, 2),
    "mutual_information_stderr": np.swapaxes(stderr, 1, 2),
    "marginal_entropy": -marginal.mean(axis=1),
    "conditional_entropy": np.swapaxes(-conditional.mean(axis=1), 1, 2),
    "num_samples": len(rows),
  }


def _entropy(z, mean, log_var, groups, rng, num_samples, chunk_size):
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
  chunk_size: int | None = None,
  factor_names: Sequence[str] | None = None,
  sampling: str = "shared",
) -> dict[str, np.ndarray]:
  """Mutual information between each latent (or group) and each factor, Chen et al.'s way.

  Formula: I(z_g; v_k) = H(z_g) - H(z_g | v_k), H(z_g | v_k) = sum_v p(v) H(z_g | v_k = v),
  entropies of the aggregate posterior (and of its restriction to v_k = v) estimated from
  samples z ~ q(z|x_n), one per example, log-densities exact over all posteriors. See the
  module docstring for the two sampling designs.

  Args:
    mean: [N, K] posterior means of every example.
    log_var: [N, K] posterior log-variances.
    factors: int [N, F] factor values of the examples.
    rng: `np.random.Generator` or int seed (the z draws and the subsets of samples).
    groups: latent index groups treated as one variable each (ISA subspaces); default, one
      group per latent.
    num_samples: S, samples per entropy estimate (Chen et al.: 10,000).
    chunk_size: posteriors per step of the compiled log-sum-exp; None picks one.
    factor_names: names for the progress log.
    sampling: "shared" (one pass, paired terms) or "per_value" (Chen et al.'s code).

  Returns:
    dict with "mutual_information" [G, F], "marginal_entropy" [G] and "conditional_entropy"
    [G, F] in nats, "num_samples", and for "shared" "mutual_information_stderr" [G, F].

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018.
  """
  rng = as_rng(rng, required=True, what="chen_mutual_information")
  mean = np.asarray(mean, np.float32)
  log_var = np.asarray(log_var, np.float32)
  factors = np.asarray(factors)
  _check_posteriors(mean, log_var, factors, stacked=False)
  if sampling not in SAMPLINGS:
    raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}.")
  if sampling == "shared":
    out = chen_mutual_information_stack(
      mean[None],
      log_var[None],
      factors,
      rng,
      groups=groups,
      num_samples=num_samples,
      chunk_size=chunk_size,
    )
    return {key: value if key == "num_samples" else value[0] for key, value in out.items()}

  num, num_latents = mean.shape
  groups = per_dimension_groups(num_latents) if groups is None else tuple(map(tuple, groups))
  chunk_size = 1024 if chunk_size is None else chunk_size
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
    "num_samples": min(num_samples, num),
  }
