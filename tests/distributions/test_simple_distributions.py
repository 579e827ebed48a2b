"""Gaussian, p-generalised normal and Gumbel-softmax against scipy and exact laws."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from scipy import integrate, stats

from disentangle_jax import distributions as dist


class GaussianTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_matches_scipy(self):
    rng = np.random.default_rng(0)
    z, mean, log_var = rng.normal(size=(3, 5, 4)).astype(np.float32)
    log_p = self.variant(dist.gaussian_log_prob)(z, mean, log_var)
    expected = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var.astype(np.float64)))
    np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
      self.variant(dist.standard_normal_log_prob)(z), stats.norm.logpdf(z).sum(-1), rtol=1e-6
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_matches_numerical_integration(self):
    mean = np.array([[0.3, -1.2, 2.0]], np.float32)
    log_var = np.array([[-1.0, 0.4, -3.0]], np.float32)
    expected = 0.0
    for m, lv in zip(mean[0], log_var[0], strict=True):
      q = stats.norm(m, math.exp(0.5 * lv))
      integrand = lambda x, q=q: q.pdf(x) * (q.logpdf(x) - stats.norm.logpdf(x))
      expected += integrate.quad(integrand, m - 40, m + 40, points=[m], limit=200)[0]
    kl = self.variant(dist.gaussian_kl)(mean, log_var)
    np.testing.assert_allclose(kl, [expected], rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(dist.gaussian_kl_per_dim(mean, log_var), -1), kl, rtol=1e-6)

  def test_reparameterised_sample(self):
    """Mean and variance within 4 standard errors; dz/dmean = 1, dz/dlog_var = eps/2 exp(lv/2)."""
    n = 200_000
    mean, log_var = jnp.full((n, 1), 1.5), jnp.full((n, 1), math.log(0.25))
    z = np.asarray(dist.gaussian_sample(jax.random.key(0), mean, log_var))
    self.assertLess(abs(z.mean() - 1.5), 4 * 0.5 / math.sqrt(n))
    # Var of the sample variance of a normal is 2 sigma**4 / (n - 1).
    self.assertLess(abs(z.var() - 0.25), 4 * math.sqrt(2 * 0.25**2 / (n - 1)))
    grad_mean = jax.grad(lambda m: jnp.sum(dist.gaussian_sample(jax.random.key(1), m, log_var[:3])))
    np.testing.assert_allclose(grad_mean(mean[:3]), 1.0)


class GeneralizedNormalTest(parameterized.TestCase):
  @parameterized.product(p=[0.5, 1.0, 2.0, 3.5], scale=[0.4, 2.0])
  def test_log_prob_matches_scipy_gennorm(self, p, scale):
    x = np.linspace(-4, 4, 17).astype(np.float32)
    log_p = dist.generalized_normal_log_prob(x, p, scale)
    expected = stats.gennorm.logpdf(x.astype(np.float64), p, scale=scale ** (1 / p))
    np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=1e-5)

  @parameterized.parameters(0.5, 1.0, 2.5, 6.0)
  def test_sampler_ks(self, p):
    x = dist.generalized_normal_sample(jax.random.key(2), p, 1.5, sample_shape=(10_000,))
    law = stats.gennorm(p, scale=1.5 ** (1 / p))
    self.assertGreater(stats.kstest(np.asarray(x, np.float64), law.cdf).pvalue, 1e-3)

  def test_finite_gradients_at_zero(self):
    for p in (0.5, 1.0, 2.0, 5.0):
      grads = jax.grad(dist.generalized_normal_log_prob, argnums=(0, 1))(0.0, p)
      chex.assert_tree_all_finite(grads)

  def test_non_positive_parameters_are_errors(self):
    with self.assertRaisesRegex(ValueError, "p must be > 0"):
      dist.generalized_normal_log_prob(jnp.zeros(3), -1.0)
    with self.assertRaisesRegex(ValueError, "scale must be > 0"):
      dist.generalized_normal_sample(jax.random.key(0), 2.0, 0.0)


class GumbelSoftmaxTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_samples_lie_on_the_simplex(self):
    logits = jax.random.normal(jax.random.key(0), (64, 5))
    y = self.variant(dist.gumbel_softmax_sample)(jax.random.key(1), logits, temperature=0.67)
    np.testing.assert_allclose(jnp.sum(y, -1), 1.0, rtol=1e-5)
    self.assertTrue(bool(jnp.all(y >= 0)))

  def test_low_temperature_draws_follow_the_categorical(self):
    """At tau -> 0 the argmax of a sample is Categorical(softmax(logits)); chi-square test."""
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    n = 20_000
    y = dist.gumbel_softmax_sample(
      jax.random.key(3), jnp.broadcast_to(logits, (n, 4)), temperature=0.05
    )
    counts = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=4)
    self.assertGreater(stats.chisquare(counts, n * np.array([0.5, 0.3, 0.15, 0.05])).pvalue, 1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_to_uniform_matches_scipy(self):
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    alpha = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = [stats.entropy(a, np.full(3, 1 / 3)) for a in alpha]
    # atol: a few float32 ulps of log 3, the size of the two terms that cancel at uniform logits.
    atol = 4 * np.finfo(np.float32).eps * math.log(3)
    kl = self.variant(dist.categorical_kl_to_uniform)(logits)
    np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=atol)

  def test_mode_one_hot(self):
    np.testing.assert_array_equal(
      dist.categorical_mode_one_hot(jnp.array([[0.1, 2.0, -1.0]])), [[0.0, 1.0, 0.0]]
    )
