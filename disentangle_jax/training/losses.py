"""loss_fn(params, batch, rng, step) for every objective, composed from the pure loss terms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.training.model import Networks, prior_exponents

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]]


def encode_decode(networks: Networks, params, x: jax.Array, key: jax.Array, temperature: float):
  """Posterior parameters, the sampled code and the decoder's logits for a batch."""
  z_key, c_key = jax.random.split(key)
  posterior = networks.encoder.apply(params["encoder"], x)
  z = dist.gaussian_sample(z_key, posterior.mean, posterior.log_var)
  relaxed = [
    dist.gumbel_softmax_sample(k, logits, temperature=temperature)
    for k, logits in zip(
      jax.random.split(c_key, len(posterior.logits)), posterior.logits, strict=True
    )
  ]
  logits_x = networks.decoder.apply(params["decoder"], jnp.concatenate([z, *relaxed], axis=-1))
  return posterior, z, logits_x


def log_likelihood(config: ml_collections.ConfigDict, logits_x: jax.Array, x: jax.Array):
  if config.likelihood == "bernoulli":
    return obj.bernoulli_log_likelihood(logits_x, x)
  return obj.gaussian_log_likelihood(logits_x, x)


def prior_log_prob(networks: Networks, params, z: jax.Array, scale: float) -> jax.Array:
  if networks.prior_tree is None:
    return dist.standard_normal_log_prob(z)
  return dist.lp_nested_log_prob(z, networks.prior_tree, prior_exponents(params), scale)


def make_loss_fn(
  config: ml_collections.ConfigDict, networks: Networks, dataset_size: int
) -> LossFn:
  """Returns loss_fn(params, disc_params, batch, rng, step) -> (loss, (terms, z)).

  The KL term is closed-form against N(0, I) and a one-sample Monte Carlo estimate against an
  Lp-nested prior; every objective combines with either prior.
  """
  o = config.objective
  capacity = obj.capacity_schedule(0.0, o.capacity_max, o.capacity_steps)
  continuous_capacity = obj.capacity_schedule(
    0.0, o.continuous_capacity_max, o.joint_capacity_steps
  )
  if networks.categorical_sizes:
    discrete_capacity = obj.discrete_capacity_schedule(
      0.0, o.discrete_capacity_max, o.joint_capacity_steps, networks.categorical_sizes
    )

  def loss_fn(params, disc_params: Any, batch, rng: jax.Array, step: jax.Array):
    x = batch["image"]
    posterior, z, logits_x = encode_decode(networks, params, x, rng, o.temperature)
    mean, log_var = posterior.mean, posterior.log_var
    ll = log_likelihood(config, logits_x, x)
    log_prior = prior_log_prob(networks, params, z, config.prior.scale)
    if networks.prior_tree is None:
      kl = dist.gaussian_kl(mean, log_var)
    else:
      kl = obj.monte_carlo_kl(z, mean, log_var, log_prior)

    if o.name == "beta_vae":
      loss, terms = obj.beta_vae_loss(ll, kl, beta=o.beta)
    elif o.name == "annealed_vae":
      loss, terms = obj.annealed_vae_loss(ll, kl, capacity(step), gamma=o.capacity_gamma)
    elif o.name == "beta_tcvae":
      loss, terms = obj.beta_tcvae_loss(
        ll,
        z,
        mean,
        log_var,
        log_prior,
        dataset_size=dataset_size,
        alpha=o.alpha,
        beta=o.beta,
        gamma=o.gamma,
        estimator=o.estimator,
      )
    elif o.name == "factor_vae":
      logits = networks.discriminator.apply(disc_params, z)
      loss, terms = obj.factor_vae_loss(ll, kl, logits, gamma=o.factor_gamma)
    elif o.name == "dip_vae":
      loss, terms = obj.dip_vae_loss(
        ll, kl, mean, log_var, lambda_od=o.lambda_od, lambda_d=o.lambda_d, kind=o.dip_kind
      )
    elif o.name == "joint_vae":
      kl_discrete = sum(dist.categorical_kl_to_uniform(logits) for logits in posterior.logits)
      loss, terms = obj.joint_vae_loss(
        ll,
        kl,
        kl_discrete,
        continuous_capacity(step),
        discrete_capacity(step),
        gamma_continuous=o.joint_gamma,
        gamma_discrete=o.joint_gamma,
      )
    else:
      raise ValueError(f"Unknown objective {o.name!r}.")
    if networks.prior_tree is not None:
      exponents = prior_exponents(params)
      terms.update({f"prior_p{i}": exponents[i] for i in range(exponents.shape[0])})
    return loss, (terms, z)

  return loss_fn
