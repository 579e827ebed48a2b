"""ELBO decomposition estimators against brute force on tiny datasets and exact invariants."""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.objectives import decomposition


def _posteriors(seed: int, n: int, k: int):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(n, k))
  log_var = rng.uniform(-1.5, 0.5, size=(n, k))
  z = mean + np.exp(0.5 * log_var) * rng.normal(size=(n, k))
  return z, mean, log_var


def _brute_force_log_q(z, mean, log_var):
  """Exact log q(z_i) and log q(z_ik) of the uniform mixture of all posteriors, with scipy."""
  log_l = stats.norm.logpdf(z[:, None, :], mean[None], np.exp(0.5 * log_var[None]))  # [S, N, K]
  n = mean.shape[0]
  joint = special.logsumexp(log_l.sum(-1), axis=1) - math.log(n)
  return joint, special.logsumexp(log_l, axis=1) - math.log(n)


@functools.partial(jax.jit, static_argnums=3)
def _mws_terms(z, mean, log_var, dataset_size):
  l_ijk = obj.pairwise_gaussian_log_density(z, mean, log_var)
  floor = math.log(dataset_size * z.shape[0])
  joint, dims = jax.nn.logsumexp(l_ijk.sum(-1), axis=1), jax.nn.logsumexp(l_ijk, axis=1)
  library = obj.log_aggregate_posterior(
    z, mean, log_var, dataset_size=dataset_size, estimator="mws"
  )
  return joint - floor, dims - floor, library


def _mws_joint_and_dims(z, mean, log_var, dataset_size):
  """MWS log q(z_i) [B] and per-dimension log q(z_ik) [B, K] by hand, checked against the
  library's joint and summed per-dimension estimates."""
  joint, dims, (log_qz, log_prod) = _mws_terms(
    *(jnp.asarray(a) for a in (z, mean, log_var)), dataset_size
  )
  np.testing.assert_allclose(log_qz, joint, rtol=1e-12)
  np.testing.assert_allclose(log_prod, dims.sum(-1), rtol=1e-12)
  return np.asarray(joint), np.asarray(dims)


def test_pairwise_density_matches_scipy():
  z, mean, log_var = _posteriors(0, 6, 3)
  log_l = obj.pairwise_gaussian_log_density(
    *(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var))
  )
  chex.assert_shape(log_l, (6, 6, 3))
  for i, j in itertools.product(range(6), range(6)):
    expected = stats.norm.logpdf(z[i], mean[j], np.exp(0.5 * log_var[j]))
    np.testing.assert_allclose(log_l[i, j], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch, n", [(2, 2), (3, 5), (8, 8), (64, 737_280), (2048, 737_280)])
def test_mss_weights_rows_sum_to_one(batch, n):
  w = np.exp(np.asarray(obj.mss_log_weights(batch, n), np.float64))
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)


def test_mss_weights_entries_as_defined():
  """W_ii = 1/N, W_i,i+1 (cyclic) = (N-M)/(NM), else 1/M, with M = B-1; written as loops."""
  batch, n = 5, 11
  m = batch - 1
  expected = np.full((batch, batch), 1 / m)
  for i in range(batch):
    expected[i, i] = 1 / n
    expected[i, (i + 1) % batch] = (n - m) / (n * m)
  np.testing.assert_allclose(np.exp(obj.mss_log_weights(batch, n)), expected, rtol=1e-6)


def test_mss_weights_bad_sizes_are_errors():
  with pytest.raises(ValueError, match="at least 2"):
    obj.mss_log_weights(1, 10)
  with pytest.raises(ValueError, match="must be >= batch_size"):
    obj.mss_log_weights(10, 5)


def test_minibatch_mws_on_the_whole_dataset_is_exact_up_to_its_log_n_weight():
  """Batch = dataset: MWS's 1/(N B) weight gives exactly log q(z_i) - log N (Chen et al.)."""
  z, mean, log_var = _posteriors(1, 7, 3)
  exact_joint, exact_dims = _brute_force_log_q(z, mean, log_var)
  log_qz, log_prod = obj.log_aggregate_posterior(
    *(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), dataset_size=7, estimator="mws"
  )
  np.testing.assert_allclose(log_qz, exact_joint - math.log(7), rtol=1e-5)
  np.testing.assert_allclose(log_prod, (exact_dims - math.log(7)).sum(-1), rtol=1e-5)


def test_minibatch_mss_is_unbiased_over_all_batches():
  """Averaged over every ordered batch holding example a, exp(MSS estimate) = q(z_a) exactly.

  Tiny dataset (N = 5, B = 3, 60 ordered batches): a brute-force check of the stratified
  weights, joint and per dimension.
  """
  n, batch = 5, 3
  z, mean, log_var = _posteriors(2, n, 2)
  exact_joint, exact_dims = _brute_force_log_q(z, mean, log_var)
  sums_joint, sums_dims, counts = np.zeros(n), np.zeros((n, 2)), np.zeros(n)
  estimate = jax.jit(
    lambda z, m, v: decomposition.log_aggregate_posterior(z, m, v, dataset_size=n)[0]
  )
  for order in itertools.permutations(range(n), batch):
    idx = np.asarray(order)
    with jax.enable_x64(True):
      args = [jnp.asarray(a[idx]) for a in (z, mean, log_var)]
      log_qz = estimate(*args)
      log_w = obj.mss_log_weights(batch, n)
      l_ijk = obj.pairwise_gaussian_log_density(*args)
      log_qzk = jax.nn.logsumexp(log_w[:, :, None] + l_ijk, axis=1)
    sums_joint[idx] += np.exp(np.asarray(log_qz))
    sums_dims[idx] += np.exp(np.asarray(log_qzk))
    counts[idx] += 1
  np.testing.assert_allclose(sums_joint / counts, np.exp(exact_joint), rtol=1e-10)
  np.testing.assert_allclose(sums_dims / counts[:, None], np.exp(exact_dims), rtol=1e-10)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_minibatch_terms_add_up_to_the_monte_carlo_kl(estimator):
  z, mean, log_var = (jnp.asarray(a, jnp.float32) for a in _posteriors(3, 16, 5))
  log_prior = jnp.sum(jax.scipy.stats.norm.logpdf(z), -1)
  terms = obj.elbo_decomposition(
    z, mean, log_var, log_prior, dataset_size=1000, estimator=estimator
  )
  mc_kl = obj.monte_carlo_kl(z, mean, log_var, log_prior)
  np.testing.assert_allclose(terms.mi + terms.tc + terms.dwkl, mc_kl, rtol=1e-5, atol=1e-4)


def test_minibatch_identical_posteriors_tc_mss_zero_mws_biased():
  """All posteriors equal (and factorised): true TC = 0. MSS gives 0; MWS gives (K-1) log N."""
  k, batch, n = 4, 8, 1000
  z = jax.random.normal(jax.random.key(0), (batch, k))
  mean, log_var = jnp.zeros((batch, k)), jnp.zeros((batch, k))
  prior = jnp.zeros(batch)
  mss = obj.elbo_decomposition(z, mean, log_var, prior, dataset_size=n, estimator="mss")
  mws = obj.elbo_decomposition(z, mean, log_var, prior, dataset_size=n, estimator="mws")
  np.testing.assert_allclose(mss.tc, 0.0, atol=1e-5)
  np.testing.assert_allclose(mws.tc, (k - 1) * math.log(n), rtol=1e-5)


def test_minibatch_mws_estimates_lie_between_own_term_and_log_b_below_exact():
  """Invariant behind the MWS bias: the batch is a subset of the dataset that holds example i,
  so log q(z_i|x_i) - log(N B) <= MWS estimate <= exact log q(z_i) - log B, joint and per
  dimension, for any data and any batch."""
  n, batch, k = 40, 6, 3
  z, mean, log_var = _posteriors(4, n, k)
  exact_joint, exact_dims = _brute_force_log_q(z, mean, log_var)
  own = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var))  # [N, K]
  rng = np.random.default_rng(0)
  for _ in range(20):
    idx = rng.choice(n, batch, replace=False)
    with jax.enable_x64(True):
      log_qz, log_qzk = _mws_joint_and_dims(z[idx], mean[idx], log_var[idx], n)
    floor = math.log(n * batch)
    np.testing.assert_array_less(own[idx].sum(-1) - floor - 1e-9, log_qz)
    np.testing.assert_array_less(log_qz, exact_joint[idx] - math.log(batch) + 1e-9)
    np.testing.assert_array_less(own[idx] - floor - 1e-9, log_qzk)
    np.testing.assert_array_less(log_qzk, exact_dims[idx] - math.log(batch) + 1e-9)


@pytest.mark.parametrize(
  "design, bias_fn",
  [
    # All posteriors equal: every sum is representative, each estimate is log N low.
    pytest.param("identical", lambda k, n, b: (k - 1) * math.log(n), id="identical"),
    # Far apart in every dimension: only the own term counts anywhere, each estimate log B low.
    pytest.param("separated", lambda k, n, b: (k - 1) * math.log(b), id="separated"),
    # Joint separated (log B low) but each marginal value shared by a fixed fraction of the
    # dataset and of the batch (log N low per dimension): the largest bias.
    pytest.param("latin", lambda k, n, b: k * math.log(n) - math.log(b), id="marginals_shared"),
  ],
)
def test_minibatch_mws_tc_bias_depends_on_posterior_overlap(design, bias_fn):
  """Mean MWS TC minus the exact TC (brute force over the dataset) in the three limits."""
  k, m = 3, 5
  if design == "latin":  # dataset: all m**k value tuples; batch: (a, a+1, a+2) mod m
    dataset = np.array(list(itertools.product(range(m), repeat=k)), np.float64)
    batch_rows = [
      int(np.flatnonzero((dataset == (np.arange(k) + a) % m).all(1))[0]) for a in range(m)
    ]
  else:  # dataset of 60; batch: 6 of its members
    dataset = np.stack([np.random.default_rng(d).permutation(60) for d in range(k)], 1) * 1.0
    batch_rows = [3, 10, 17, 25, 41, 59]
  if design == "identical":
    dataset = np.zeros_like(dataset)
  mean = 100.0 * dataset  # 100 posterior stds between distinct values: no overlap
  log_var = np.zeros_like(mean)
  n, b = len(mean), len(batch_rows)
  z = mean[batch_rows] + np.random.default_rng(5).normal(size=(b, k)) * 0.1
  exact_joint, exact_dims = _brute_force_log_q(z, mean, log_var)
  with jax.enable_x64(True):
    log_qz, log_qzk = _mws_joint_and_dims(z, mean[batch_rows], log_var[batch_rows], n)
  bias = np.mean((log_qz - log_qzk.sum(-1)) - (exact_joint - exact_dims.sum(-1)))
  np.testing.assert_allclose(bias, bias_fn(k, n, b), rtol=1e-9)


def test_minibatch_unknown_estimator_is_an_error():
  z = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="Unknown estimator 'mcmc'"):
    obj.elbo_decomposition(z, z, z, jnp.zeros(4), dataset_size=10, estimator="mcmc")


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_dataset_chunked_log_marginals_match_brute_force(chunk_size):
  """Chunk sizes that do and do not divide N: the scan's padding must not leak in."""
  z, mean, log_var = _posteriors(4, 50, 3)
  exact_joint, exact_dims = _brute_force_log_q(z, mean, log_var)
  joint, dims = decomposition._dataset_log_marginals(
    *(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), min(chunk_size, 50)
  )
  np.testing.assert_allclose(joint, exact_joint, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dims, exact_dims, rtol=1e-5, atol=1e-5)


def test_dataset_terms_add_up_to_the_analytic_kl():
  _, mean, log_var = _posteriors(5, 300, 4)
  mean, log_var = jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32)
  out = obj.dataset_elbo_decomposition(jax.random.key(0), mean, log_var, num_samples=500)
  analytic = float(jnp.mean(dist.gaussian_kl(mean, log_var)))
  np.testing.assert_allclose(out["mi"] + out["tc"] + out["dwkl"], analytic, rtol=1e-5)
  np.testing.assert_allclose(out["analytic_kl"], analytic, rtol=1e-5)
  # Index-code MI is at most log N.
  assert float(out["mi"]) <= math.log(300) + 1e-3


def test_dataset_identical_posteriors_have_no_mi_and_no_tc():
  """q(z|x) = N(0, I) for every x: q(z) = N(0, I), so MI = TC = DWKL = 0.

  TC is 0 exactly (q(z) factorises sample by sample); MI and DWKL are Monte Carlo estimates of
  0 whose standard error is std(log N(z; 0, I)) / sqrt(S), checked at 4 standard errors.
  """
  num, k, s = 200, 3, 4000
  mean, log_var = jnp.zeros((num, k)), jnp.zeros((num, k))
  out = obj.dataset_elbo_decomposition(jax.random.key(1), mean, log_var, num_samples=s)
  np.testing.assert_allclose(out["tc"], 0.0, atol=1e-4)
  se = math.sqrt(k / 2) / math.sqrt(s)  # Var[log N(z;0,I)] = K/2
  assert abs(float(out["mi"])) < 4 * se
  assert abs(float(out["dwkl"])) < 4 * se
