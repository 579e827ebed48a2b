"""beta-TCVAE: separate weights on index-code MI, total correlation and dimension-wise KL."""

import jax
import jax.numpy as jnp

from disentangle_jax.objectives._checks import check_batch
from disentangle_jax.objectives.decomposition import elbo_decomposition


def beta_tcvae_loss(
  log_likelihood: jax.Array,
  z: jax.Array,
  mean: jax.Array,
  log_var: jax.Array,
  log_prior: jax.Array,
  *,
  dataset_size: int,
  alpha: float | jax.Array = 1.0,
  beta: float | jax.Array = 6.0,
  gamma: float | jax.Array = 1.0,
  estimator: str = "mss",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative beta-TCVAE objective.

  Formula: loss = mean_i [-log p(x_i|z_i) + alpha MI_i + beta TC_i + gamma DWKL_i],
  terms from `elbo_decomposition` (alpha = beta = gamma = 1 is the VAE, up to the estimator).
  With `log_prior` from an Lp-nested prior this is the ISA-VAE combined with beta-TCVAE (the
  last term is then KL(prod_k q(z_k) || p(z))).

  Args:
    log_likelihood: [B] log p(x|z).
    z: [B, K] samples of q(z|x).
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    log_prior: [B] log p(z) under the prior.
    dataset_size: N, size of the training set (used by the estimators' weights).
    alpha: weight of the index-code mutual information.
    beta: weight of the total correlation.
    gamma: weight of the dimension-wise KL.
    estimator: "mss" or "mws".

  Returns:
    (loss, {"log_likelihood", "kl", "elbo", "mi", "tc", "dwkl"}); "kl" is the Monte Carlo KL.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018.
  """
  check_batch("log_likelihood", log_likelihood, z.shape[0])
  mi, tc, dwkl = elbo_decomposition(
    z, mean, log_var, log_prior, dataset_size=dataset_size, estimator=estimator
  )
  loss = jnp.mean(-log_likelihood + alpha * mi + beta * tc + gamma * dwkl)
  kl = mi + tc + dwkl
  ll = jnp.mean(log_likelihood)
  terms = {"log_likelihood": ll, "kl": jnp.mean(kl), "elbo": ll - jnp.mean(kl)}
  terms.update(mi=jnp.mean(mi), tc=jnp.mean(tc), dwkl=jnp.mean(dwkl))
  return loss, terms
