"""The aggregate-posterior mixture marginals against brute force and numerical integration."""

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from disentangle_jax.distributions.gaussian_mixture import (
  auto_chunk_size,
  chunk_constant_labels,
  gaussian_mixture_log_conditionals,
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


# --- conditionals on labelled components ------------------------------------------------------

GRID = (3, 4, 5, 6)  # a full factor grid of 360 components, last factor fastest
LABEL_GROUPS = ((0,), (1,), (2, 3))


def labelled_problem(seed=0, num_points=40, grid=True):
  rng = np.random.default_rng(seed)
  n = int(np.prod(GRID))
  mean = rng.standard_normal((n, 4))
  log_var = rng.uniform(-3.0, 0.5, (n, 4))
  if grid:
    labels = np.stack(np.unravel_index(np.arange(n), GRID), axis=1)
  else:
    labels = rng.integers(0, 3, (n, 2))
  rows = rng.permutation(n)[:num_points]
  z = mean[rows] + np.exp(0.5 * log_var[rows]) * rng.standard_normal((num_points, 4))
  return z, labels[rows], mean, log_var, labels


def brute_force_conditionals(z, point_labels, mean, log_var, labels, groups):
  """[S, F, G]: brute_force on the components that share each point's label, point by point."""
  out = np.zeros((len(z), labels.shape[1], len(groups)))
  for s in range(len(z)):
    for f in range(labels.shape[1]):
      same = labels[:, f] == point_labels[s, f]
      out[s, f] = brute_force(z[s : s + 1], mean[same], log_var[same], groups)[0]
  return out


@pytest.mark.parametrize("grid", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 1, 6, 7, 30, 1000])
def test_conditionals_match_brute_force(grid, chunk_size):
  # Chunks aligned with the grid (6, 30: the last factor or two vary within a chunk), not
  # aligned (7), one component per chunk (every factor is chunk-constant) and larger than N
  # (every factor varies within the one chunk); random labels (no grid at all).
  z, point_labels, mean, log_var, labels = labelled_problem(grid=grid)
  marginal, conditional = gaussian_mixture_log_conditionals(
    np.float32(z),
    point_labels,
    np.float32(mean),
    np.float32(log_var),
    labels,
    groups=LABEL_GROUPS,
    chunk_size=chunk_size,
  )
  # float32 terms summed over <= 360 components: a few 1e-6 nats (as above).
  np.testing.assert_allclose(marginal, brute_force(z, mean, log_var, LABEL_GROUPS), atol=2e-5)
  expected = brute_force_conditionals(z, point_labels, mean, log_var, labels, LABEL_GROUPS)
  np.testing.assert_allclose(conditional, expected, atol=2e-5)


def test_conditionals_of_a_stack_are_those_of_each_model():
  z, point_labels, mean, log_var, labels = labelled_problem()
  shifts = np.array([0.0, 1.5, -2.0])[:, None, None]
  stacked = gaussian_mixture_log_conditionals(
    np.float32(z + shifts),
    point_labels,
    np.float32(mean + shifts),
    np.float32(np.stack([log_var, log_var - 1.0, log_var])),
    labels,
    groups=LABEL_GROUPS,
  )
  for m, log_var_m in enumerate([log_var, log_var - 1.0, log_var]):
    single = gaussian_mixture_log_conditionals(
      np.float32(z + shifts[m]),
      point_labels,
      np.float32(mean + shifts[m]),
      np.float32(log_var_m),
      labels,
      groups=LABEL_GROUPS,
    )
    np.testing.assert_allclose(stacked[0][m], single[0], atol=1e-5)
    np.testing.assert_allclose(stacked[1][m], single[1], atol=1e-5)


def test_conditionals_underflow_take_the_exact_path():
  # As for the marginals: one sharp component makes the one-pass sums underflow.
  z, point_labels, mean, log_var, labels = labelled_problem(seed=1)
  log_var[0] = -60.0
  marginal, conditional = gaussian_mixture_log_conditionals(
    *(np.float32(a) for a in (z,)),
    point_labels,
    np.float32(mean),
    np.float32(log_var),
    labels,
    groups=LABEL_GROUPS,
    chunk_size=30,
  )
  np.testing.assert_allclose(marginal, brute_force(z, mean, log_var, LABEL_GROUPS), atol=2e-5)
  expected = brute_force_conditionals(z, point_labels, mean, log_var, labels, LABEL_GROUPS)
  np.testing.assert_allclose(conditional, expected, atol=2e-5)


def test_chunk_choice_on_a_grid():
  labels = np.stack(np.unravel_index(np.arange(3 * 6 * 40 * 32 * 32), (3, 6, 40, 32, 32)), 1)
  # dSprites: chunks of 1024 (posX x posY) leave shape, scale and orientation chunk-constant.
  np.testing.assert_array_equal(chunk_constant_labels(labels, 1024), [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(chunk_constant_labels(labels, 32), [1, 1, 1, 1, 0])
  assert auto_chunk_size(labels) in (32, 1024)


def test_conditionals_errors():
  z, point_labels, mean, log_var, labels = labelled_problem()
  with pytest.raises(ValueError, match="occurs among no component"):
    gaussian_mixture_log_conditionals(
      z, point_labels + 10, mean, log_var, labels, groups=LABEL_GROUPS
    )
  with pytest.raises(ValueError, match=r"component_labels \[N, F\]"):
    gaussian_mixture_log_conditionals(
      z, point_labels, mean, log_var, labels[:, :2], groups=LABEL_GROUPS
    )
