"""Reconstruction log-likelihoods log p(x|z) of the decoder's output, per example."""

import math

import jax
import jax.numpy as jnp

from disentangle_jax.objectives._checks import check_same_shape


def _sum_non_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


@jax.custom_jvp
def _bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """Per pixel log p(x|l) = x l - softplus(l), softplus(l) = max(l, 0) + log1p(exp(-|l|))."""
  return x * logits - (jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits))))


@_bernoulli_log_prob.defjvp
def _bernoulli_log_prob_jvp(primals, tangents):
  # d/dl = x - sigmoid(l), d/dx = l: one fused element-wise pass each way, nothing saved but
  # the inputs (autodiff of the formula above would keep exp(-|l|) and the branch masks).
  logits, x = primals
  dlogits, dx = tangents
  return _bernoulli_log_prob(logits, x), (x - jax.nn.sigmoid(logits)) * dlogits + logits * dx


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log p(x|z) of independent Bernoulli pixels given decoder logits.

  Formula: log p(x|z) = sum_d [x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d)]
                      = sum_d [x_d l_d - softplus(l_d)]
  (targets in [0, 1] are allowed: the cross-entropy of a continuous x, as is common for dSprites).
  The second form is one softplus per pixel instead of two log-sigmoids (this term is a large
  share of the MLP's step on CPU); its gradient is x - sigmoid(l).

  Args:
    logits: [B, ...] decoder logits l.
    x: [B, ...] targets in [0, 1], same shape.

  Returns:
    [B] log-likelihoods in nats (<= 0 for binary x).
  """
  check_same_shape(logits=logits, x=x)
  return _sum_non_batch(_bernoulli_log_prob(logits, x.astype(logits.dtype)))


def gaussian_log_likelihood(
  mean: jax.Array, x: jax.Array, *, log_scale: float | jax.Array = 0.0
) -> jax.Array:
  """log p(x|z) of independent Gaussian pixels N(x_d; mean_d, exp(log_scale)**2).

  Formula: log p(x|z)
             = -sum_d [0.5 log(2 pi) + log_scale + 0.5 (x_d - mean_d)**2 / exp(2 log_scale)]

  Args:
    mean: [B, ...] decoder means.
    x: [B, ...] targets.
    log_scale: log standard deviation, scalar or broadcastable to x (may be learned).

  Returns:
    [B] log-likelihoods in nats.
  """
  check_same_shape(mean=mean, x=x)
  log_scale = jnp.broadcast_to(log_scale, x.shape)
  per_dim = (
    0.5 * math.log(2 * math.pi) + log_scale + 0.5 * jnp.square(x - mean) * jnp.exp(-2.0 * log_scale)
  )
  return -_sum_non_batch(per_dim)
