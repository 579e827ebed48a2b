"""Diagonal Gaussian posteriors: log-density, reparameterised sample, KL to N(0, I)."""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Element-wise log-density of a diagonal Gaussian.

  Formula: log N(z; mean, exp(log_var))
             = -0.5 * (log(2 pi) + log_var + (z - mean)**2 / exp(log_var))

  Args:
    z: points, any shape broadcastable with `mean` and `log_var`.
    mean: means.
    log_var: log-variances.

  Returns:
    The per-coordinate log-density, the broadcast shape of the inputs. Sum the last axis for a
    diagonal Gaussian vector.
  """
  return -0.5 * (_LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var))


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """Log-density of N(0, I) summed over the last axis: [..., K] -> [...]."""
  return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def gaussian_sample(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Reparameterised sample z = mean + exp(log_var / 2) * eps, eps ~ N(0, I).

  Gradients flow to `mean` and `log_var` (Kingma & Welling, `Auto-Encoding Variational Bayes
  <https://arxiv.org/abs/1312.6114>`_, 2014).

  Args:
    key: a PRNG key.
    mean: [..., K] means.
    log_var: [..., K] log-variances.

  Returns:
    [..., K] samples.
  """
  eps = jax.random.normal(key, jnp.shape(mean), dtype=jnp.result_type(mean))
  return mean + jnp.exp(0.5 * log_var) * eps


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Closed-form KL(N(mean, diag exp(log_var)) || N(0, I)) per example.

  Formula: KL = 0.5 * sum_k (mean_k**2 + exp(log_var_k) - log_var_k - 1)

  Args:
    mean: [..., K] posterior means.
    log_var: [..., K] posterior log-variances.

  Returns:
    [...] KL in nats.
  """
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0, axis=-1)


def gaussian_kl_per_dim(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Closed-form KL to N(0, 1) of each latent dimension: [..., K] -> [..., K]."""
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0)
