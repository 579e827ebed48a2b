"""The aggregate-posterior mixture marginals against brute force and numerical integration."""

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from disentangle_jax.distributions.gaussian_mixture import (
  gaussian_mixture_log_marginals,
  per_dimension_groups,
)


def brute_force(z, mean, log_var, groups):
  """log (1/N) sum_n prod_{j in g} N(z_sj; mean_nj, var_nj) in float64, all terms at once."""
  log_p = stats.norm.logpdf(z[:, None, :], mean[None], np.exp(0.5 * log_var)[None])
  return np.stack(
    [logsumexp(log_p[:, :, list(g)].sum(-1), axis=1) - np.log(len(mean)) for g in groups], -1
  )


def problem(seed=0, n=301, k=5, s=40):
  rng = np.random.default_rng(seed)
  mean = rng.standard_normal((n, k))
  log_var = rng.uniform(-4.0, 1.0, (n, k))
  z = 1.5 * rng.standard_normal((s, k))
  return z, mean, log_var


GROUPS = ((0,), (1,), (2, 3), (0, 1, 2, 3, 4))


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 301, 5000])
def test_matches_brute_force_for_any_chunking(chunk_size):
  # Chunks that divide N, that do not (padded last chunk), and larger than N.
  z, mean, log_var = problem()
  out = gaussian_mixture_log_marginals(
    *(np.float32(a) for a in (z, mean, log_var)), groups=GROUPS, chunk_size=chunk_size
  )
  # float32 terms (relative 6e-8 each) summed over 301 components: a few 1e-6 nats.
  np.testing.assert_allclose(out, brute_force(z, mean, log_var, GROUPS), atol=2e-5)


def test_underflowing_points_take_the_exact_path():
  # One component with variance e^-60 sets the shift so high that every other term underflows
  # in the one-pass sum: the result must still be exact (the two-pass fallback).
  z, mean, log_var = problem(seed=1)
  log_var[0] = -60.0
  out = gaussian_mixture_log_marginals(
    *(np.float32(a) for a in (z, mean, log_var)), groups=GROUPS, chunk_size=64
  )
  np.testing.assert_allclose(out, brute_force(z, mean, log_var, GROUPS), atol=2e-5)


def test_entropy_of_a_mixture_matches_quadrature():
  # H(q) of a 1-D mixture, estimated as -mean log q(z_s) over the mixture's own samples (Chen et
  # al.'s estimator), against the integral -int q log q. Tolerance: 4 standard errors.
  rng = np.random.default_rng(2)
  centres, log_vars = np.array([-2.0, 0.0, 0.5, 3.0]), np.log([0.3, 1.0, 0.05, 0.5])
  copies = 2000
  mean = np.repeat(centres, copies)[:, None]
  log_var = np.repeat(log_vars, copies)[:, None]
  z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
  log_q = np.asarray(
    gaussian_mixture_log_marginals(
      *(np.float32(a) for a in (z, mean, log_var)), groups=((0,),), chunk_size=512
    )
  )[:, 0]

  def q(x):
    return np.mean(stats.norm.pdf(x, centres, np.exp(0.5 * log_vars)))

  exact = -integrate.quad(lambda x: q(x) * np.log(q(x)), -12, 12, points=centres, limit=200)[0]
  estimate, stderr = -log_q.mean(), log_q.std() / np.sqrt(len(log_q))
  assert abs(estimate - exact) < 4 * stderr, (estimate, exact, stderr)


def test_per_dimension_groups_and_errors():
  assert per_dimension_groups(3) == ((0,), (1,), (2,))
  z, mean, log_var = problem(n=10, k=3, s=4)
  with pytest.raises(ValueError, match="out of range"):
    gaussian_mixture_log_marginals(z, mean, log_var, groups=((0, 3),))
  with pytest.raises(ValueError, match="non-empty"):
    gaussian_mixture_log_marginals(z, mean, log_var, groups=((),))
  with pytest.raises(ValueError, match=r"z \[S, K\]"):
    gaussian_mixture_log_marginals(z[:, :2], mean, log_var, groups=((0,),))
