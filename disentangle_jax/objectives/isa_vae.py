"""ISA-VAE: a Gaussian posterior against a structured Lp-nested (ISA) prior."""

import jax

from disentangle_jax.objectives.beta_vae import beta_vae_loss
from disentangle_jax.objectives.kl import monte_carlo_kl


def isa_vae_loss(
  log_likelihood: jax.Array,
  z: jax.Array,
  mean: jax.Array,
  log_var: jax.Array,
  log_prior: jax.Array,
  *,
  beta: float | jax.Array = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative ISA-VAE objective: the KL to the Lp-nested prior by a Monte Carlo sample.

  Formula: loss = mean_i [-log p(x_i|z_i) + beta (log q(z_i|x_i) - log p_ISA(z_i))]
  with log p_ISA from `lp_nested_log_prob` (its exponents may be learned: the gradient reaches
  them through `log_prior`). For the combination with the beta-TCVAE decomposition, pass the
  same `log_prior` to `beta_tcvae_loss`.

  Args:
    log_likelihood: [B] log p(x|z).
    z: [B, K] reparameterised samples of q(z|x).
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    log_prior: [B] log p_ISA(z).
    beta: KL weight.

  Returns:
    (loss, {"log_likelihood", "kl", "elbo"}).

  References:
    Stuehmer, Turner & Nowozin, `Independent Subspace Analysis for Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1909.05063>`_, AISTATS 2020.
  """
  return beta_vae_loss(log_likelihood, monte_carlo_kl(z, mean, log_var, log_prior), beta=beta)
