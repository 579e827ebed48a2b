"""The p-generalised normal distribution (exponential power distribution)."""

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln


def _check_positive(name: str, value) -> None:
  try:
    bad = bool(jnp.any(jnp.asarray(value) <= 0))
  except jax.errors.ConcretizationTypeError:  # a traced value: cannot be checked eagerly
    return
  if bad:
    raise ValueError(f"{name} must be > 0, got {value}.")


def safe_abs_pow(x: jax.Array, p: jax.Array) -> jax.Array:
  """|x|**p with value 0 and zero (sub)gradients, in x and in p, at x = 0.

  The plain expression has an infinite or NaN gradient at 0 for p <= 1 (|x|**(p-1) * sign(x)) and
  a NaN gradient in p (|x|**p * log|x|). Both limits at x = 0 are 0 for p > 0 in the sense of a
  subgradient, which is what this function returns.
  """
  ax = jnp.abs(x)
  nonzero = ax > 0
  return jnp.where(nonzero, jnp.where(nonzero, ax, 1.0) ** p, 0.0)


def generalized_normal_log_prob(x: jax.Array, p: float | jax.Array, scale: float | jax.Array = 1.0):
  """Element-wise log-density of the p-generalised normal distribution.

  Formula: log p(x) = log p - log 2 - (1/p) log s - lnGamma(1/p) - |x|**p / s
  (s is a scale in units of |x|**p: it equals scipy.stats.gennorm(beta=p, scale=s**(1/p))).
  p = 2, s = 2 is N(0, 1); p = 1, s = b is Laplace(0, b).

  Args:
    x: points, any shape.
    p: exponent p > 0, broadcastable with x.
    scale: s > 0, broadcastable with x.

  Returns:
    Log-density of each element of x.

  References:
    Sinz & Bethge, `Lp-Nested Symmetric Distributions
    <https://jmlr.org/papers/v11/sinz10a.html>`_, JMLR 2010.
  """
  _check_positive("p", p)
  _check_positive("scale", scale)
  p = jnp.asarray(p, jnp.result_type(x, float))
  log_norm = jnp.log(p) - jnp.log(2.0) - jnp.log(scale) / p - gammaln(1.0 / p)
  return log_norm - safe_abs_pow(x, p) / scale


def generalized_normal_sample(
  key: jax.Array,
  p: float | jax.Array,
  scale: float | jax.Array = 1.0,
  *,
  sample_shape: tuple[int, ...] = (),
  dtype=jnp.float32,
) -> jax.Array:
  """Exact sampler of the p-generalised normal distribution.

  Formula: |x| = g**(1/p), g ~ Gamma(1/p, scale s), with a random sign.

  Args:
    key: a PRNG key.
    p: exponent p > 0 (scalar or array broadcastable to sample_shape).
    scale: s > 0.
    sample_shape: shape of the returned sample.
    dtype: floating dtype.

  Returns:
    Samples of shape `sample_shape` (broadcast with p and scale).
  """
  _check_positive("p", p)
  _check_positive("scale", scale)
  p = jnp.asarray(p, dtype)
  shape = jnp.broadcast_shapes(tuple(sample_shape), jnp.shape(p), jnp.shape(scale))
  gamma_key, sign_key = jax.random.split(key)
  # log-space gamma draw: for large p, 1/p is small and Gamma(1/p) underflows in float32.
  log_g = jax.random.loggamma(gamma_key, jnp.broadcast_to(1.0 / p, shape), dtype=dtype)
  magnitude = jnp.exp((log_g + jnp.log(scale)) / p)
  sign = jax.random.rademacher(sign_key, shape, dtype=dtype)
  return sign * magnitude
