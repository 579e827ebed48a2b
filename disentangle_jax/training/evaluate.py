"""End-of-run evaluation: reconstruction log-likelihood, KL, ELBO decomposition, active units."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.data.ground_truth import GroundTruthData
from disentangle_jax.training.losses import encode_decode, log_likelihood, prior_log_prob
from disentangle_jax.training.model import Networks


def evaluate(
  config: ml_collections.ConfigDict, networks: Networks, params, dataset: GroundTruthData
) -> dict[str, float]:
  """Scores a model on `config.eval.num_examples` examples drawn with a fixed seed.

  Returns (nats, averaged over the examples): "log_likelihood" E_q[log p(x|z)] with one z per
  image (the ISA-VAE paper's reconstruction measure), "kl" to the prior, "elbo", the
  whole-sample ELBO decomposition "mi", "tc", "dwkl" (their sum is the KL), and
  "active_units", the number of latents with Var_x[E[z|x]] > 0.01.
  """
  rng = np.random.default_rng(config.seed + 1)
  num = min(config.eval.num_examples, dataset.num_examples)
  indices = np.sort(rng.choice(dataset.num_examples, size=num, replace=False))

  @functools.partial(jax.jit)
  def score(x, key):
    posterior, z, logits_x = encode_decode(networks, params, x, key, config.objective.temperature)
    ll = log_likelihood(config, logits_x, x)
    if networks.prior_tree is None:
      kl = dist.gaussian_kl(posterior.mean, posterior.log_var)
    else:
      log_p = prior_log_prob(networks, params, z, config.prior.scale)
      kl = obj.monte_carlo_kl(z, posterior.mean, posterior.log_var, log_p)
    return ll, kl, posterior.mean, posterior.log_var

  outputs = []
  key = jax.random.key(config.seed + 2)
  for start in range(0, num, config.eval.batch_size):
    chunk = indices[start : start + config.eval.batch_size]
    x = jnp.asarray(dataset.observations_from_indices(chunk, rng))
    outputs.append(score(x, jax.random.fold_in(key, start)))
  ll, kl, mean, log_var = (jnp.concatenate(parts) for parts in zip(*outputs, strict=True))

  log_prior_fn = None
  if networks.prior_tree is not None:
    exponents = dist.exponents_from_unconstrained(params["prior"]["raw_exponents"])
    log_prior_fn = lambda z: dist.lp_nested_log_prob(
      z, networks.prior_tree, exponents, config.prior.scale
    )
  decomposition = obj.dataset_elbo_decomposition(
    jax.random.key(config.seed + 3),
    mean,
    log_var,
    num_samples=min(num, 10_000),
    log_prior_fn=log_prior_fn,
  )
  results = {
    "num_examples": num,
    "log_likelihood": float(jnp.mean(ll)),
    "kl": float(jnp.mean(kl)),
    "elbo": float(jnp.mean(ll - kl)),
    "mi": float(decomposition["mi"]),
    "tc": float(decomposition["tc"]),
    "dwkl": float(decomposition["dwkl"]),
    "active_units": int(jnp.sum(jnp.var(mean, axis=0) > 0.01)),
  }
  if networks.prior_tree is not None:
    results["prior_exponents"] = [float(e) for e in exponents]
  return results
