"""Every objective against a direct numpy computation, its special cases and invariants."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import disentangle_jax as dj

B, K = 16, 5


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(B, K)).astype(np.float32)
  log_var = rng.uniform(-2, 0.5, size=(B, K)).astype(np.float32)
  z = (mean + np.exp(0.5 * log_var) * rng.normal(size=(B, K))).astype(np.float32)
  ll = -rng.uniform(50, 100, size=B).astype(np.float32)
  return jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var), jnp.asarray(ll)


def _variant(fn, use_jit):
  """chex's with_jit / without_jit variants: fn under jax.jit, or fn itself."""
  return jax.jit(fn) if use_jit else fn


def test_reconstruction_bernoulli_matches_scipy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32) * 3
  x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
  expected = stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64)))
  ll = dj.bernoulli_log_likelihood(jnp.asarray(logits), jnp.asarray(x))
  np.testing.assert_allclose(ll, expected.reshape(3, -1).sum(-1), rtol=1e-5)


def test_reconstruction_bernoulli_extreme_logits_and_soft_targets():
  """x l - softplus(l) stays exact where sigmoid saturates, for targets anywhere in [0, 1]."""
  logits = np.array([[-100.0, -30.0, -1e-3, 0.0, 2.0, 30.0, 100.0]] * 2, np.float32)
  x = np.array([[0.0, 1.0, 0.3, 1.0, 0.7, 0.0, 1.0], [1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.2]])
  l64 = logits.astype(np.float64)
  expected = x * -np.logaddexp(0, -l64) + (1 - x) * -np.logaddexp(0, l64)
  ll = dj.bernoulli_log_likelihood(jnp.asarray(logits), jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(ll, expected.sum(-1), rtol=1e-6)


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_reconstruction_bernoulli_gradients_match_autodiff_of_the_two_log_sigmoid_form(use_jit):
  """The hand-written JVP (x - sigmoid(l), and l for x) against autodiff of the textbook form."""
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(4, 8, 8, 1)) * 5, jnp.float32)
  x = jnp.asarray(rng.uniform(size=logits.shape), jnp.float32)
  weights = jnp.asarray(rng.normal(size=4), jnp.float32)

  def textbook(lg, t):
    per_pixel = t * jax.nn.log_sigmoid(lg) + (1 - t) * jax.nn.log_sigmoid(-lg)
    return jnp.dot(weights, per_pixel.reshape(4, -1).sum(-1))

  ours = _variant(
    jax.grad(lambda lg, t: jnp.dot(weights, dj.bernoulli_log_likelihood(lg, t)), argnums=(0, 1)),
    use_jit,
  )
  want_grads = jax.grad(textbook, argnums=(0, 1))(logits, x)
  for got, want in zip(ours(logits, x), want_grads, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Forward mode goes through the same rule.
  tangent = jnp.ones_like(logits)
  _, jvp = jax.jvp(lambda lg: dj.bernoulli_log_likelihood(lg, x), (logits,), (tangent,))
  np.testing.assert_allclose(jvp, (x - jax.nn.sigmoid(logits)).reshape(4, -1).sum(-1), rtol=1e-5)


def test_reconstruction_gaussian_matches_scipy():
  rng = np.random.default_rng(1)
  mean, x = rng.normal(size=(2, 3, 8)).astype(np.float32)
  ll = dj.gaussian_log_likelihood(jnp.asarray(mean), jnp.asarray(x), log_scale=math.log(0.3))
  np.testing.assert_allclose(ll, stats.norm.logpdf(x, mean, 0.3).sum(-1), rtol=1e-5)


def test_reconstruction_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="one shape"):
    dj.bernoulli_log_likelihood(jnp.zeros((2, 4)), jnp.zeros((2, 5)))


def test_kl_monte_carlo_kl_is_unbiased_for_the_closed_form():
  """Mean of many one-sample estimates = analytic KL within 4 standard errors."""
  mean, log_var = jnp.array([[0.5, -1.0, 2.0]]), jnp.array([[-1.0, 0.3, -2.0]])
  n = 100_000
  m, v = jnp.broadcast_to(mean, (n, 3)), jnp.broadcast_to(log_var, (n, 3))
  z = dj.gaussian_sample(jax.random.key(0), m, v)
  kl = np.asarray(dj.monte_carlo_kl(z, m, v, dj.standard_normal_log_prob(z)), np.float64)
  assert abs(kl.mean() - float(dj.gaussian_kl(mean, log_var)[0])) < 4 * kl.std() / math.sqrt(n)


def test_beta_vae_by_hand():
  _, _, _, ll = _batch()
  kl = jnp.linspace(1.0, 20.0, B)
  loss, terms = dj.beta_vae_loss(ll, kl, beta=4.0)
  np.testing.assert_allclose(loss, np.mean(-np.asarray(ll) + 4.0 * np.asarray(kl)), rtol=1e-6)
  np.testing.assert_allclose(terms["elbo"], np.mean(np.asarray(ll) - np.asarray(kl)), rtol=1e-6)
  np.testing.assert_allclose(dj.vae_loss(ll, kl)[0], dj.beta_vae_loss(ll, kl, beta=1.0)[0])


def test_annealed_vae_by_hand():
  _, _, _, ll = _batch()
  kl = jnp.linspace(1.0, 20.0, B)
  for capacity in (0.0, 5.0, 30.0):
    loss, terms = dj.annealed_vae_loss(ll, kl, capacity, gamma=1000.0)
    expected = -np.mean(ll) + 1000.0 * abs(np.mean(kl) - capacity)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(terms["capacity"]) == capacity


def test_infomax_beta():
  assert dj.beta_from_infomax_lambda(0.0) == 1.0
  # Equal to 7 decimal places (unittest's assertAlmostEqual default).
  assert round(dj.beta_from_infomax_lambda(3.0) - 0.25, 7) == 0
  assert round(dj.beta_from_infomax_lambda(-0.75) - 4.0, 7) == 0
  with pytest.raises(ValueError, match="must be > -1"):
    dj.beta_from_infomax_lambda(-1.0)


def test_beta_tcvae_unit_weights_is_the_vae_with_monte_carlo_kl():
  z, mean, log_var, ll = _batch()
  log_prior = dj.standard_normal_log_prob(z)
  loss, terms = dj.beta_tcvae_loss(
    ll, z, mean, log_var, log_prior, dataset_size=1000, alpha=1.0, beta=1.0, gamma=1.0
  )
  mc_kl = dj.monte_carlo_kl(z, mean, log_var, log_prior)
  np.testing.assert_allclose(loss, dj.vae_loss(ll, mc_kl)[0], rtol=1e-5)
  # The loss is linear in each weight, with the term's batch mean as slope.
  for weight in ("alpha", "beta", "gamma"):
    kwargs = dict(alpha=1.0, beta=1.0, gamma=1.0)

    def f(w, weight=weight, kwargs=kwargs):
      return dj.beta_tcvae_loss(
        ll, z, mean, log_var, log_prior, dataset_size=1000, **{**kwargs, weight: w}
      )[0]

    name = {"alpha": "mi", "beta": "tc", "gamma": "dwkl"}[weight]
    np.testing.assert_allclose(jax.grad(f)(3.0), terms[name], rtol=1e-4)


def test_joint_vae_by_hand():
  _, _, _, ll = _batch()
  kl_c, kl_d = jnp.linspace(1.0, 10.0, B), jnp.linspace(0.1, 1.0, B)
  loss, terms = dj.joint_vae_loss(
    ll, kl_c, kl_d, 12.0, 0.5, gamma_continuous=150.0, gamma_discrete=30.0
  )
  expected = -np.mean(ll) + 150 * abs(np.mean(kl_c) - 12) + 30 * abs(np.mean(kl_d) - 0.5)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(terms["kl"], np.mean(kl_c) + np.mean(kl_d), rtol=1e-6)


def test_isa_vae_with_gaussian_lp_prior_is_the_beta_vae():
  """p = 2 everywhere, s = 2: the ISA prior is N(0, I), so the loss is the MC beta-VAE's."""
  z, mean, log_var, ll = _batch()
  prior = dj.LpNested.from_spec([2.0, [(2.0, 2), (2.0, 3)]], scale=2.0, event_size=K)
  loss, _ = dj.isa_vae_loss(ll, z, mean, log_var, prior.log_prob(z), beta=3.0)
  mc_kl = dj.monte_carlo_kl(z, mean, log_var, dj.standard_normal_log_prob(z))
  np.testing.assert_allclose(loss, dj.beta_vae_loss(ll, mc_kl, beta=3.0)[0], rtol=1e-5)

  def loss_of_exponents(e):
    log_p = dj.lp_nested_log_prob(z, prior.tree, e, prior.scale)
    return dj.isa_vae_loss(ll, z, mean, log_var, log_p)[0]

  grads = jax.grad(loss_of_exponents)(prior.exponents)
  chex.assert_tree_all_finite(grads)
  assert float(jnp.max(jnp.abs(grads))) > 0.0


def test_factor_vae_permute_dims_permutes_each_column_independently():
  z = jax.random.normal(jax.random.key(0), (64, 10))
  permuted = dj.permute_dims(jax.random.key(1), z)
  np.testing.assert_array_equal(np.sort(permuted, 0), np.sort(z, 0))  # same multiset per column
  orders = {tuple(np.argsort(np.argsort(permuted[:, k]))) for k in range(10)}
  assert len(orders) > 1  # not one shared permutation (chance 1/64! per pair)
  assert not np.array_equal(permuted, z)


def test_factor_vae_tc_and_losses_by_hand():
  _, _, _, ll = _batch()
  kl = jnp.linspace(1.0, 20.0, B)
  logits = jax.random.normal(jax.random.key(2), (B, 2))
  loss, terms = dj.factor_vae_loss(ll, kl, logits, gamma=35.0)
  tc = np.asarray(logits[:, 0] - logits[:, 1])
  np.testing.assert_allclose(loss, np.mean(-np.asarray(ll) + kl + 35.0 * tc), rtol=1e-5)
  np.testing.assert_allclose(terms["tc"], tc.mean(), rtol=1e-5, atol=1e-6)

  permuted_logits = jax.random.normal(jax.random.key(3), (B, 2))
  d_loss, d_terms = dj.factor_vae_discriminator_loss(logits, permuted_logits)
  log_softmax = lambda a: a - special.logsumexp(a, axis=1, keepdims=True)
  expected = -0.5 * (
    np.mean(log_softmax(np.asarray(logits))[:, 0])
    + np.mean(log_softmax(np.asarray(permuted_logits))[:, 1])
  )
  np.testing.assert_allclose(d_loss, expected, rtol=1e-5)
  accuracy = 0.5 * (
    np.mean(logits[:, 0] > logits[:, 1]) + np.mean(permuted_logits[:, 1] > permuted_logits[:, 0])
  )
  np.testing.assert_allclose(d_terms["discriminator_accuracy"], accuracy, rtol=1e-6)


def test_factor_vae_logit_shape_is_checked():
  with pytest.raises(ValueError, match=r"shape \[B, 2\]"):
    dj.discriminator_total_correlation(jnp.zeros((4, 3)))


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_vae_regulariser_by_hand(kind):
  _, mean, log_var, _ = _batch()
  cov = np.cov(np.asarray(mean, np.float64), rowvar=False, bias=True)
  if kind == "ii":
    cov = cov + np.diag(np.exp(np.asarray(log_var, np.float64)).mean(0))
  np.testing.assert_allclose(
    dj.aggregate_posterior_covariance(mean, log_var, kind=kind), cov, rtol=1e-4, atol=1e-5
  )
  lambda_od = 5.0
  lambda_d = 50.0 if kind == "i" else 5.0  # the documented defaults
  off = sum(cov[i, j] ** 2 for i in range(K) for j in range(K) if i != j)
  diag = sum((cov[i, i] - 1) ** 2 for i in range(K))
  reg = dj.dip_regularizer(mean, log_var, lambda_od=lambda_od, kind=kind)
  np.testing.assert_allclose(reg, lambda_od * off + lambda_d * diag, rtol=1e-4)


def test_dip_vae_identity_covariance_costs_nothing():
  """Whitened means with unit covariance: the type I penalty is 0."""
  x = np.random.default_rng(0).normal(size=(500, 3))
  x = (x - x.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False, bias=True))).T
  reg = dj.dip_regularizer(jnp.asarray(x, jnp.float32), jnp.zeros((500, 3)), lambda_od=10.0)
  np.testing.assert_allclose(reg, 0.0, atol=1e-8 + 1e-4)


def test_dip_vae_unknown_kind_is_an_error():
  with pytest.raises(ValueError, match="Unknown DIP-VAE kind 'iii'"):
    dj.dip_regularizer(jnp.zeros((4, 2)), jnp.zeros((4, 2)), lambda_od=1.0, kind="iii")


def test_schedule_capacity_is_linear_then_constant():
  schedule = dj.capacity_schedule(0.0, 25.0, 100_000)
  for step, value in ((0, 0.0), (50_000, 12.5), (100_000, 25.0), (300_000, 25.0)):
    np.testing.assert_allclose(schedule(step), value, rtol=1e-6)


def test_schedule_discrete_capacity_is_clamped_to_the_categoricals_information():
  schedule = dj.discrete_capacity_schedule(0.0, 5.0, 100, [3, 2])
  np.testing.assert_allclose(schedule(10), 0.5, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), math.log(3) + math.log(2), rtol=1e-6)
  with pytest.raises(ValueError, match="category_sizes"):
    dj.discrete_capacity_schedule(0.0, 1.0, 10, [1])


def test_schedule_warmup():
  np.testing.assert_allclose(dj.kl_warmup_schedule(4.0, 10)(5), 2.0)


def _all_objectives():
  """(name, fn, args) of every objective on one batch, for the transformation tests."""
  z, mean, log_var, ll = _batch(3)
  kl = dj.gaussian_kl(mean, log_var)
  prior = dj.standard_normal_log_prob(z)
  logits = jnp.stack([z[:, 0], z[:, 1]], -1)
  return [
    ("vae", lambda ll, kl: dj.vae_loss(ll, kl), (ll, kl)),
    ("beta_vae", lambda ll, kl: dj.beta_vae_loss(ll, kl, beta=4.0), (ll, kl)),
    ("annealed", lambda ll, kl: dj.annealed_vae_loss(ll, kl, 3.0, gamma=10.0), (ll, kl)),
    (
      "beta_tcvae_mss",
      lambda *a: dj.beta_tcvae_loss(*a, dataset_size=100, beta=6.0),
      (ll, z, mean, log_var, prior),
    ),
    (
      "beta_tcvae_mws",
      lambda *a: dj.beta_tcvae_loss(*a, dataset_size=100, estimator="mws"),
      (ll, z, mean, log_var, prior),
    ),
    ("factor_vae", lambda ll, kl, lg: dj.factor_vae_loss(ll, kl, lg, gamma=10.0), (ll, kl, logits)),
    (
      "dip_i",
      lambda ll, kl, m, v: dj.dip_vae_loss(ll, kl, m, v, lambda_od=10.0),
      (ll, kl, mean, log_var),
    ),
    (
      "dip_ii",
      lambda ll, kl, m, v: dj.dip_vae_loss(ll, kl, m, v, lambda_od=10.0, kind="ii"),
      (ll, kl, mean, log_var),
    ),
    ("joint", lambda ll, a, b: dj.joint_vae_loss(ll, a, b, 5.0, 0.5), (ll, kl, kl / 10)),
    ("isa", lambda *a: dj.isa_vae_loss(*a, beta=2.0), (ll, z, mean, log_var, prior)),
  ]


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_transformation_jit_and_grad(use_jit):
  """Every objective: same value with and without jit, and a finite gradient."""
  for name, fn, args in _all_objectives():
    loss, terms = _variant(fn, use_jit)(*args)
    ref_loss, ref_terms = fn(*args)
    chex.assert_shape(loss, (), custom_message=name)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=name)
    chex.assert_trees_all_close(terms, ref_terms, rtol=1e-5, atol=1e-5, custom_message=name)
    grads = jax.grad(lambda *a, fn=fn: fn(*a)[0], argnums=tuple(range(len(args))))(*args)
    chex.assert_tree_all_finite(grads, custom_message=name)


def test_transformation_vmap_over_a_hyperparameter_sweep():
  """One compiled program evaluates the beta-TCVAE loss for several betas at once."""
  z, mean, log_var, ll = _batch(4)
  prior = dj.standard_normal_log_prob(z)
  fn = lambda beta: dj.beta_tcvae_loss(ll, z, mean, log_var, prior, dataset_size=100, beta=beta)[0]
  betas = jnp.array([1.0, 4.0, 8.0])
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(betas), [fn(b) for b in betas], rtol=1e-5)
