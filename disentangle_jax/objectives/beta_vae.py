"""VAE, beta-VAE, capacity-annealed beta-VAE and the InfoMax parametrisation of beta.

Objectives take per-example terms ([B] arrays) and return (loss, terms): a scalar loss to
minimise (the negative objective averaged over the batch) and a dict of scalar batch means for
logging.
"""

import jax
import jax.numpy as jnp

from disentangle_jax.objectives._checks import check_same_shape

Terms = dict[str, jax.Array]


def beta_vae_loss(
  log_likelihood: jax.Array, kl: jax.Array, *, beta: float | jax.Array = 1.0
) -> tuple[jax.Array, Terms]:
  """Negative beta-VAE objective; beta = 1 is the VAE's negative ELBO.

  Formula: loss = mean_i [-log p(x_i|z_i) + beta * KL_i]

  Args:
    log_likelihood: [B] reconstruction log-likelihoods log p(x|z).
    kl: [B] KL(q(z|x) || p(z)), closed-form or Monte Carlo.
    beta: KL weight.

  Returns:
    (loss, {"log_likelihood", "kl", "elbo"}).

  References:
    Higgins et al., `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework <https://openreview.net/forum?id=Sy2fzU9gl>`_, ICLR 2017.
  """
  check_same_shape(log_likelihood=log_likelihood, kl=kl)
  loss = jnp.mean(-log_likelihood + beta * kl)
  return loss, _elbo_terms(log_likelihood, kl)


def vae_loss(log_likelihood: jax.Array, kl: jax.Array) -> tuple[jax.Array, Terms]:
  """Negative ELBO, mean_i [-log p(x_i|z_i) + KL_i] (Kingma & Welling 2014)."""
  return beta_vae_loss(log_likelihood, kl, beta=1.0)


def annealed_vae_loss(
  log_likelihood: jax.Array,
  kl: jax.Array,
  capacity: float | jax.Array,
  *,
  gamma: float | jax.Array = 1000.0,
) -> tuple[jax.Array, Terms]:
  """Capacity-annealed beta-VAE: the batch KL is pulled towards a growing capacity C(t).

  Formula: loss = mean_i[-log p(x_i|z_i)] + gamma * |mean_i KL_i - C(t)|
  (the batch-mean KL is compared with C, as in the paper's set-up; C(t) from
  `capacity_schedule`; dSprites: C_max = 25 nats, gamma = 1000, 100k steps).

  Args:
    log_likelihood: [B] log p(x|z).
    kl: [B] KL(q(z|x) || p(z)).
    capacity: scalar C(t) in nats.
    gamma: weight of the capacity constraint.

  Returns:
    (loss, {"log_likelihood", "kl", "elbo", "capacity"}).

  References:
    Burgess et al., `Understanding disentangling in beta-VAE <https://arxiv.org/abs/1804.03599>`_,
    2018.
  """
  check_same_shape(log_likelihood=log_likelihood, kl=kl)
  loss = -jnp.mean(log_likelihood) + gamma * jnp.abs(jnp.mean(kl) - capacity)
  terms = _elbo_terms(log_likelihood, kl)
  terms["capacity"] = jnp.asarray(capacity, loss.dtype)
  return loss, terms


def beta_from_infomax_lambda(lam: float | jax.Array) -> float | jax.Array:
  """beta = 1 / (1 + lambda): the beta-VAE that maximises lambda I(x; z) - KL(q(z) || p(z)).

  Writing the ELBO's KL as I(x; z) + KL(q(z) || p(z)), the objective E[log p(x|z)] -
  beta KL with beta = 1/(1 + lambda) equals, up to the factor beta, the InfoMax objective with
  information weight lambda; lambda > 0 gives beta < 1, lambda in (-1, 0) gives beta > 1.
  """
  if not isinstance(lam, jax.Array) and lam <= -1:
    raise ValueError(f"InfoMax lambda must be > -1 (so that beta > 0), got {lam}.")
  return 1.0 / (1.0 + lam)


def _elbo_terms(log_likelihood: jax.Array, kl: jax.Array) -> Terms:
  ll, kl = jnp.mean(log_likelihood), jnp.mean(kl)
  return {"log_likelihood": ll, "kl": kl, "elbo": ll - kl}
