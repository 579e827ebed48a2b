"""The training loss of every objective, composed from the pure loss terms of `objectives`.

`make_loss_fn(config, networks, dataset_size)` runs the model once (`forward`) and hands the
result to the configured objective, picked by name from `OBJECTIVES`. Each entry is a small
function (forward outputs, hyperparameters, settings, step) -> (loss, terms): the place to look
for what a model optimises. Hyperparameters (`hp`) are the float settings of the objective's
config section, as arrays (one value per model in a sweep); `settings` is the whole section
(strings, schedule lengths).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.training import config as config_lib
from disentangle_jax.training.model import Networks, prior_exponents

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]]
"""loss_fn(params, disc_params, hparams, batch, rng, step) -> (loss, (terms, z))."""


class Forward(NamedTuple):
  """One pass of the model over a batch, everything an objective may need.

  Attributes:
    log_likelihood: [B] log p(x|z) at one sample z per example.
    kl: [B] KL(q(z|x) || p(z)): closed form against N(0, I), one-sample Monte Carlo against an
      Lp-nested prior.
    z: [B, K] the sampled Gaussian latents.
    mean, log_var: [B, K] the Gaussian posterior.
    log_prior: [B] log p(z).
    logits: one [B, K_i] array per discrete latent (JointVAE), else ().
    discriminator_logits: [B, 2] FactorVAE's discriminator on z, else None.
    dataset_size: N, for beta-TCVAE's estimators.
  """

  log_likelihood: jax.Array
  kl: jax.Array
  z: jax.Array
  mean: jax.Array
  log_var: jax.Array
  log_prior: jax.Array
  logits: tuple[jax.Array, ...]
  discriminator_logits: jax.Array | None
  dataset_size: int


def beta_vae(f: Forward, hp, settings, step):
  del settings, step
  return obj.beta_vae_loss(f.log_likelihood, f.kl, beta=hp["beta"])


def annealed_vae(f: Forward, hp, settings, step):
  capacity = obj.capacity_schedule(0.0, hp["capacity_max"], settings.capacity_steps)(step)
  return obj.annealed_vae_loss(f.log_likelihood, f.kl, capacity, gamma=hp["gamma"])


def beta_tcvae(f: Forward, hp, settings, step):
  del step
  return obj.beta_tcvae_loss(
    f.log_likelihood,
    f.z,
    f.mean,
    f.log_var,
    f.log_prior,
    dataset_size=f.dataset_size,
    alpha=hp["alpha"],
    beta=hp["beta"],
    gamma=hp["gamma"],
    estimator=settings.estimator,
  )


def factor_vae(f: Forward, hp, settings, step):
  del settings, step
  return obj.factor_vae_loss(f.log_likelihood, f.kl, f.discriminator_logits, gamma=hp["gamma"])


def dip_vae(f: Forward, hp, settings, step):
  del step
  return obj.dip_vae_loss(
    f.log_likelihood,
    f.kl,
    f.mean,
    f.log_var,
    lambda_od=hp["lambda_od"],
    lambda_d=hp.get("lambda_d"),
    kind=settings.kind,
  )


def joint_vae(f: Forward, hp, settings, step):
  kl_discrete = sum(dist.categorical_kl_to_uniform(logits) for logits in f.logits)
  steps, sizes = settings.capacity_steps, [logits.shape[-1] for logits in f.logits]
  return obj.joint_vae_loss(
    f.log_likelihood,
    f.kl,
    kl_discrete,
    obj.capacity_schedule(0.0, hp["continuous_capacity_max"], steps)(step),
    obj.discrete_capacity_schedule(0.0, hp["discrete_capacity_max"], steps, sizes)(step),
    gamma_continuous=hp["gamma"],
    gamma_discrete=hp["gamma"],
  )


Objective = Callable[[Forward, Mapping[str, jax.Array], Any, jax.Array], tuple[jax.Array, dict]]
OBJECTIVES: dict[str, Objective] = {
  "beta_vae": beta_vae,
  "annealed_vae": annealed_vae,
  "beta_tcvae": beta_tcvae,
  "factor_vae": factor_vae,
  "dip_vae": dip_vae,
  "joint_vae": joint_vae,
}


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


def log_likelihood(likelihood: str, logits_x: jax.Array, x: jax.Array) -> jax.Array:
  """[B] log p(x|z): Bernoulli with logits, or a unit-variance Gaussian with means."""
  if likelihood == "bernoulli":
    return obj.bernoulli_log_likelihood(logits_x, x)
  return obj.gaussian_log_likelihood(logits_x, x)


def prior_log_prob(networks: Networks, params, z: jax.Array) -> jax.Array:
  """[B] log p(z) under the standard normal or the Lp-nested prior with the current exponents."""
  if networks.prior is None:
    return dist.standard_normal_log_prob(z)
  return dist.lp_nested_log_prob(
    z, networks.prior.tree, prior_exponents(params), networks.prior.scale
  )


def forward(
  config: ml_collections.ConfigDict,
  networks: Networks,
  params,
  disc_params,
  x: jax.Array,
  rng: jax.Array,
  dataset_size: int,
) -> Forward:
  """Runs the model on a batch: posterior, one sample, reconstruction, KL, prior density."""
  posterior, z, logits_x = encode_decode(networks, params, x, rng, config.model.temperature)
  log_prior = prior_log_prob(networks, params, z)
  if networks.prior is None:
    kl = dist.gaussian_kl(posterior.mean, posterior.log_var)
  else:
    kl = obj.monte_carlo_kl(z, posterior.mean, posterior.log_var, log_prior)
  disc_logits = None
  if networks.discriminator is not None:
    disc_logits = networks.discriminator.apply(disc_params, z)
  return Forward(
    log_likelihood(config.likelihood, logits_x, x),
    kl,
    z,
    posterior.mean,
    posterior.log_var,
    log_prior,
    posterior.logits,
    disc_logits,
    dataset_size,
  )


def make_loss_fn(
  config: ml_collections.ConfigDict, networks: Networks, dataset_size: int
) -> LossFn:
  """Returns loss_fn(params, disc_params, hparams, batch, rng, step) -> (loss, (terms, z)).

  `hparams` are the objective's hyperparameters (`config.objective_hparams`), scalars or
  arrays; every objective combines with either prior. With an Lp-nested prior the terms include
  the current exponents (prior_p0, prior_p1, ...).
  """
  objective = OBJECTIVES[config.objective.name]
  settings = config_lib.objective_settings(config)

  def loss_fn(params, disc_params, hparams, batch, rng: jax.Array, step: jax.Array):
    f = forward(config, networks, params, disc_params, batch["image"], rng, dataset_size)
    loss, terms = objective(f, hparams, settings, step)
    if networks.prior is not None:
      exponents = prior_exponents(params)
      terms.update({f"prior_p{i}": exponents[i] for i in range(exponents.shape[0])})
    return loss, (terms, f.z)

  return loss_fn
