"""KL divergences of the Gaussian posterior to a prior, per example."""

import jax
import jax.numpy as jnp

from disentangle_jax.distributions.gaussian import gaussian_kl, gaussian_log_prob
from disentangle_jax.objectives._checks import check_batch, check_same_shape


def posterior_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """log q(z|x) of a diagonal Gaussian posterior: [B, K] -> [B]."""
  check_same_shape(z=z, mean=mean, log_var=log_var)
  return jnp.sum(gaussian_log_prob(z, mean, log_var), axis=-1)


def monte_carlo_kl(
  z: jax.Array, mean: jax.Array, log_var: jax.Array, log_prior: jax.Array
) -> jax.Array:
  """One-sample Monte Carlo KL(q(z|x) || p(z)) against any prior.

  Formula: KL ~= log q(z|x) - log p(z), z ~ q(z|x), an unbiased estimate whose gradient is the
  reparameterised one. Used for priors without a closed form (the Lp-nested / ISA prior).

  Args:
    z: [B, K] reparameterised samples of q(z|x).
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    log_prior: [B] log p(z) of the prior at z.

  Returns:
    [B] KL estimates in nats (single samples can be negative).

  References:
    Kingma & Welling, `Auto-Encoding Variational Bayes <https://arxiv.org/abs/1312.6114>`_, 2014.
  """
  check_batch("log_prior", log_prior, z.shape[0])
  return posterior_log_prob(z, mean, log_var) - log_prior


__all__ = ["gaussian_kl", "monte_carlo_kl", "posterior_log_prob"]
