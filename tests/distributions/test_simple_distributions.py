"""Gaussian, p-generalised normal and Gumbel-softmax against scipy and exact laws."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from disentangle_jax import distributions as dist


def _variant(fn, use_jit):
  """chex's with_jit / without_jit variants: fn under jax.jit, or fn itself."""
  return jax.jit(fn) if use_jit else fn


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_gaussian_log_prob_matches_scipy(use_jit):
  rng = np.random.default_rng(0)
  z, mean, log_var = rng.normal(size=(3, 5, 4)).astype(np.float32)
  log_p = _variant(dist.gaussian_log_prob, use_jit)(z, mean, log_var)
  expected = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var.astype(np.float64)))
  np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    _variant(dist.standard_normal_log_prob, use_jit)(z), stats.norm.logpdf(z).sum(-1), rtol=1e-6
  )


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_gaussian_kl_matches_numerical_integration(use_jit):
  mean = np.array([[0.3, -1.2, 2.0]], np.float32)
  log_var = np.array([[-1.0, 0.4, -3.0]], np.float32)
  expected = 0.0
  for m, lv in zip(mean[0], log_var[0], strict=True):
    q = stats.norm(m, math.exp(0.5 * lv))
    integrand = lambda x, q=q: q.pdf(x) * (q.logpdf(x) - stats.norm.logpdf(x))
    expected += integrate.quad(integrand, m - 40, m + 40, points=[m], limit=200)[0]
  kl = _variant(dist.gaussian_kl, use_jit)(mean, log_var)
  np.testing.assert_allclose(kl, [expected], rtol=1e-5)
  np.testing.assert_allclose(jnp.sum(dist.gaussian_kl_per_dim(mean, log_var), -1), kl, rtol=1e-6)


def test_gaussian_reparameterised_sample():
  """Mean and variance within 4 standard errors; dz/dmean = 1, dz/dlog_var = eps/2 exp(lv/2)."""
  n = 200_000
  mean, log_var = jnp.full((n, 1), 1.5), jnp.full((n, 1), math.log(0.25))
  z = np.asarray(dist.gaussian_sample(jax.random.key(0), mean, log_var))
  assert abs(z.mean() - 1.5) < 4 * 0.5 / math.sqrt(n)
  # Var of the sample variance of a normal is 2 sigma**4 / (n - 1).
  assert abs(z.var() - 0.25) < 4 * math.sqrt(2 * 0.25**2 / (n - 1))
  grad_mean = jax.grad(lambda m: jnp.sum(dist.gaussian_sample(jax.random.key(1), m, log_var[:3])))
  np.testing.assert_allclose(grad_mean(mean[:3]), 1.0)


@pytest.mark.parametrize("scale", [0.4, 2.0])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.5])
def test_generalized_normal_log_prob_matches_scipy_gennorm(p, scale):
  x = np.linspace(-4, 4, 17).astype(np.float32)
  log_p = dist.generalized_normal_log_prob(x, p, scale)
  expected = stats.gennorm.logpdf(x.astype(np.float64), p, scale=scale ** (1 / p))
  np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.5, 6.0])
def test_generalized_normal_sampler_ks(p):
  x = dist.generalized_normal_sample(jax.random.key(2), p, 1.5, sample_shape=(10_000,))
  law = stats.gennorm(p, scale=1.5 ** (1 / p))
  assert stats.kstest(np.asarray(x, np.float64), law.cdf).pvalue > 1e-3


def test_generalized_normal_finite_gradients_at_zero():
  for p in (0.5, 1.0, 2.0, 5.0):
    grads = jax.grad(dist.generalized_normal_log_prob, argnums=(0, 1))(0.0, p)
    chex.assert_tree_all_finite(grads)


def test_generalized_normal_non_positive_parameters_are_errors():
  with pytest.raises(ValueError, match="p must be > 0"):
    dist.generalized_normal_log_prob(jnp.zeros(3), -1.0)
  with pytest.raises(ValueError, match="scale must be > 0"):
    dist.generalized_normal_sample(jax.random.key(0), 2.0, 0.0)


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_gumbel_softmax_samples_lie_on_the_simplex(use_jit):
  logits = jax.random.normal(jax.random.key(0), (64, 5))
  y = _variant(dist.gumbel_softmax_sample, use_jit)(jax.random.key(1), logits, temperature=0.67)
  np.testing.assert_allclose(jnp.sum(y, -1), 1.0, rtol=1e-5)
  assert bool(jnp.all(y >= 0))


def test_gumbel_softmax_low_temperature_draws_follow_the_categorical():
  """At tau -> 0 the argmax of a sample is Categorical(softmax(logits)); chi-square test."""
  logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
  n = 20_000
  y = dist.gumbel_softmax_sample(
    jax.random.key(3), jnp.broadcast_to(logits, (n, 4)), temperature=0.05
  )
  counts = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=4)
  assert stats.chisquare(counts, n * np.array([0.5, 0.3, 0.15, 0.05])).pvalue > 1e-3


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_gumbel_softmax_kl_to_uniform_matches_scipy(use_jit):
  logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
  alpha = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expected = [stats.entropy(a, np.full(3, 1 / 3)) for a in alpha]
  # atol: a few float32 ulps of log 3, the size of the two terms that cancel at uniform logits.
  atol = 4 * np.finfo(np.float32).eps * math.log(3)
  kl = _variant(dist.categorical_kl_to_uniform, use_jit)(logits)
  np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=atol)


def test_gumbel_softmax_mode_one_hot():
  np.testing.assert_array_equal(
    dist.categorical_mode_one_hot(jnp.array([[0.1, 2.0, -1.0]])), [[0.0, 1.0, 0.0]]
  )
