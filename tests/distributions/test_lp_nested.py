"""Lp-nested distributions against closed forms, scipy, quadrature and exact sampling laws."""

import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from disentangle_jax.distributions import lp_nested as lpn
from tests import quadrature

ISA_DEFAULT = [2.0, [(2.1, 6)] * 3]  # the ISA-VAE reference default, n = 18


def _isa_log_surface_closed_form(p0: float, subspaces) -> float:
  """log S_f(1) of an ISA layout written with Gamma functions (Beta products telescoped).

  S = 2**n / p0**(L-1) * prod_i Gamma(n_i/p0) / Gamma(n/p0)
      * prod_i Gamma(1/p_i)**n_i / (p_i**(n_i-1) Gamma(n_i/p_i)).
  """
  n = sum(ni for _, ni in subspaces)
  out = n * math.log(2) - (len(subspaces) - 1) * math.log(p0) - special.gammaln(n / p0)
  for pi, ni in subspaces:
    out += special.gammaln(ni / p0)
    out += ni * special.gammaln(1 / pi) - (ni - 1) * math.log(pi) - special.gammaln(ni / pi)
  return out


def _log_prob_fn(spec, scale=1.0):
  tree, exponents = lpn.parse_lp_nested(spec)
  exponents = np.asarray(exponents)
  fn = jax.jit(lambda z: lpn.lp_nested_log_prob(z, tree, exponents, scale))
  return lambda z: fn(jnp.asarray(z))


def _variant(fn, use_jit):
  """chex's with_jit / without_jit variants: fn under jax.jit, or fn itself."""
  return jax.jit(fn) if use_jit else fn


# The tree specification: structure, pre-order exponents and clear errors.
def test_parse_isa_layout_structure():
  tree, exponents = lpn.parse_lp_nested([2.1, [(2.2, 4)] * 3])
  assert tree.num_leaves == 12
  assert exponents == (2.1, 2.2, 2.2, 2.2)
  assert tree.subspace_slices() == ((0, 4), (4, 8), (8, 12))
  assert tree.nodes[0].child_sizes == (4, 4, 4)


def test_parse_general_tree_numbers_leaves_depth_first():
  tree, exponents = lpn.parse_lp_nested([1.5, [2, (3.0, [1, (0.7, 2)]), 1]])
  assert exponents == (1.5, 3.0, 0.7)
  assert tree.num_leaves == 6
  assert tree.nodes[0].child_sizes == (1, 1, 3, 1)
  assert (tree.nodes[2].leaf_start, tree.nodes[2].leaf_stop) == (3, 5)


def test_parse_isa_layout_helper_matches_literal():
  assert lpn.isa_layout(2.0, [(2.1, 6)] * 3) == [2.0, [(2.1, 6)] * 3]


@pytest.mark.parametrize(
  "spec, message",
  [
    pytest.param(3, "expected a node", id="not_a_node"),
    pytest.param([2.0, [1], 1], "expected a node", id="three_entries"),
    pytest.param([2.0, []], "non-empty", id="empty_children"),
    pytest.param([2.0, [(2.0, 0)]], "positive integer", id="zero_leaves"),
    pytest.param([2.0, [(-1.0, 3)]], "must be > 0", id="negative_exponent"),
    pytest.param([0.0, [3]], "must be > 0", id="zero_exponent"),
    pytest.param(["2", [3]], "must be a number", id="string_exponent"),
    pytest.param([float("nan"), [3]], "must be a number", id="nan_exponent"),
    pytest.param([2.0, [2.5]], "expected a node", id="float_leaf_count"),
  ],
)
def test_parse_malformed_tree_is_a_clear_error(spec, message):
  with pytest.raises(ValueError, match=message):
    lpn.parse_lp_nested(spec)


def test_parse_wrong_latent_size_is_an_error_at_construction():
  with pytest.raises(ValueError, match="18 leaves, but the latent size is 10"):
    lpn.LpNested.from_spec(ISA_DEFAULT, event_size=10)


def test_parse_wrong_shapes_are_errors():
  tree, exponents = lpn.parse_lp_nested(ISA_DEFAULT)
  with pytest.raises(ValueError, match="last axis must have size 18"):
    lpn.lp_nested_log_prob(jnp.zeros((4, 10)), tree, jnp.asarray(exponents))
  with pytest.raises(ValueError, match=r"exponents must have shape \(4,\)"):
    lpn.lp_nested_log_prob(jnp.zeros((4, 18)), tree, jnp.ones(3))


# The log-density against closed forms and scipy.
@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.7])
def test_density_one_node_is_product_of_generalised_normals(use_jit, p):
  scale = 1.7
  z = jax.random.normal(jax.random.key(0), (5, 4)) * 2.0
  tree, _ = lpn.parse_lp_nested([p, [4]])
  log_p = _variant(lambda z, e: lpn.lp_nested_log_prob(z, tree, e, scale), use_jit)(
    z, jnp.array([p])
  )
  expected = stats.gennorm.logpdf(np.asarray(z, np.float64), p, scale=scale ** (1 / p)).sum(-1)
  np.testing.assert_allclose(log_p, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_density_p2_everywhere_is_gaussian(use_jit):
  """p = 2 at every node: s = 2 gives N(0, I) and s = 1 gives N(0, I/2), any tree shape."""
  spec = [2.0, [(2.0, 3), 1, (2.0, [(2.0, 2), 2])]]
  tree, exponents = lpn.parse_lp_nested(spec)
  z = jax.random.normal(jax.random.key(1), (7, 8)) * 1.5
  fn = _variant(lambda z, s: lpn.lp_nested_log_prob(z, tree, jnp.asarray(exponents), s), use_jit)
  z64 = np.asarray(z, np.float64)
  np.testing.assert_allclose(fn(z, 2.0), stats.norm.logpdf(z64).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(
    fn(z, 1.0), stats.norm.logpdf(z64, scale=math.sqrt(0.5)).sum(-1), rtol=1e-5
  )


@pytest.mark.parametrize(
  "p0, subspaces",
  [
    (2.0, [(2.1, 6)] * 3),
    (2.1, [(2.2, 4)] * 3),
    (0.8, [(1.3, 2), (4.0, 5), (0.6, 1)]),
    (3.5, [(1.0, 3), (2.0, 7)]),
  ],
)
def test_density_isa_surface_closed_form(p0, subspaces):
  tree, exponents = lpn.parse_lp_nested([p0, subspaces])
  log_s = lpn.lp_nested_log_surface(tree, jnp.asarray(exponents, jnp.float32))
  np.testing.assert_allclose(log_s, _isa_log_surface_closed_form(p0, subspaces), rtol=1e-5)


@pytest.mark.parametrize(
  "spec",
  [
    pytest.param([0.5, [(0.1, 12), (0.12, 9), (0.125, 20)]], id="three_subspaces"),
    pytest.param([0.05, [(0.1, 30), (0.11, 20)]], id="two_large_subspaces"),
    pytest.param([0.1, [40]], id="one_node"),
    pytest.param([0.06, [(0.1, [10, (0.05, 8)]), (0.12, 16)]], id="three_levels"),
    pytest.param([0.4, [(0.6, 10)] * 10], id="isa_10x10"),
  ],
)
def test_density_log_surface_matches_scipy_betaln_in_float64(spec):
  """Beta arguments whose larger one is >= 8, where jax.scipy.special.betaln uses a
  float32-grade series (off by 1.3e-7..2.3e-5 absolute, >= 9e-11 relative, on these trees):
  the product formula with scipy's betaln, summed exactly, is matched to 1e-12 relative
  (measured <= 1e-15)."""
  tree, exponents = lpn.parse_lp_nested(spec)
  terms, larger = [tree.num_leaves * math.log(2)], []
  for node, p in zip(tree.nodes, exponents, strict=True):
    sizes = np.asarray(node.child_sizes, np.float64)
    if len(sizes) > 1:
      a, b = np.cumsum(sizes)[:-1] / p, sizes[1:] / p
      larger += list(np.maximum(a, b))
      terms += [-(len(sizes) - 1) * math.log(p), *special.betaln(a, b)]
  assert np.mean(np.asarray(larger) >= 8) > 0.5  # mostly the series regime
  with jax.enable_x64(True):
    log_s = lpn.lp_nested_log_surface(tree, jnp.asarray(exponents))
    assert log_s.dtype == jnp.float64
  np.testing.assert_allclose(float(log_s), math.fsum(terms), rtol=1e-12)


def test_density_lp_nested_function_by_hand():
  """f of a three-level tree, written out with plain numpy."""
  spec = [1.5, [1, (3.0, [1, (0.7, 2)])]]
  tree, exponents = lpn.parse_lp_nested(spec)
  z = np.array([0.3, -1.2, 0.4, -2.0])
  inner = (0.4**0.7 + 2.0**0.7) ** (1 / 0.7)
  middle = (1.2**3 + inner**3) ** (1 / 3)
  expected = (0.3**1.5 + middle**1.5) ** (1 / 1.5)
  with jax.enable_x64(True):
    f = lpn.lp_nested_function(jnp.asarray(z), tree, jnp.asarray(exponents))
  np.testing.assert_allclose(f, expected, rtol=1e-12)


# The density integrates to 1: quadrature in 1-3 dimensions, importance sampling above.
@pytest.mark.parametrize("p", [0.6, 1.0, 2.0, 4.5])
def test_normalisation_1d_integrates_to_one(p):
  from scipy import integrate

  fn = _log_prob_fn([p, [1]], scale=1.3)
  with jax.enable_x64(True):
    total, err = integrate.quad(lambda x: math.exp(float(fn(np.array([x])))), -np.inf, np.inf)
  assert err < 1e-7
  assert abs(total - 1.0) <= 1e-6


@pytest.mark.parametrize(
  "spec, scale",
  [
    ([1.3, [2]], 0.7),
    ([0.9, [(2.5, 2)]], 1.0),
    ([2.6, [1, (1.2, 1)]], 2.0),
    ([1.5, [(3.0, 2), 1]], 1.0),
    ([1.2, [1, (2.5, [(0.8, 1), 1])]], 1.5),
  ],
)
def test_normalisation_2d_and_3d_integrate_to_one(spec, scale):
  """Tensor Gauss-Legendre; the rule's own error is bounded by comparing two refinements."""
  fn = _log_prob_fn(spec, scale)
  dim = lpn.parse_lp_nested(spec)[0].num_leaves
  nodes = (24, 32) if dim == 3 else (48, 64)
  with jax.enable_x64(True):
    coarse, fine = (quadrature.integrate_symmetric(fn, dim, n) for n in nodes)
  quadrature_error = abs(fine - coarse)
  assert quadrature_error < 1e-4
  assert abs(fine - 1.0) <= 1e-4 + 2 * quadrature_error


@pytest.mark.parametrize(
  "spec, scale",
  [
    (ISA_DEFAULT, 1.0),
    ([1.5, [(3.0, 4), (1.2, 4), (2.0, 4)]], 1.0),
    ([1.1, [(1.4, 5), (2.5, [3, (1.5, 2)]), 5]], 2.0),
    ([2.2, [(1.8, 10), (2.4, 10)]], 0.5),
  ],
)
def test_normalisation_high_dimensional_integrates_to_one(spec, scale):
  """Importance sampling: E_q[p/q] = 1 for a heavy-tailed product Student-t proposal q.

  The proposal's tails (polynomial) dominate the target's (exponential in f(z)), so the
  weights are bounded and the standard error computed from them is valid; the test asks
  for agreement within 4 standard errors and for a standard error below 2%.
  """
  tree, exponents = lpn.parse_lp_nested(spec)
  n = tree.num_leaves
  rng = np.random.default_rng(0)
  # The proposal's scale is taken per coordinate from exact samples: any proposal is unbiased.
  samples = lpn.lp_nested_sample(
    jax.random.key(2), tree, jnp.asarray(exponents), scale, sample_shape=(20_000,)
  )
  sigma = 1.1 * np.std(np.asarray(samples, np.float64), axis=0)
  df = 6.0
  x = rng.standard_t(df, size=(400_000, n)) * sigma
  log_q = np.sum(stats.t.logpdf(x, df, scale=sigma), axis=-1)
  with jax.enable_x64(True):
    log_p = np.asarray(lpn.lp_nested_log_prob(jnp.asarray(x), tree, jnp.asarray(exponents), scale))
  w = np.exp(log_p - log_q)
  mean, se = w.mean(), w.std() / math.sqrt(w.size)
  assert se < 0.02
  assert abs(mean - 1.0) < 4 * se


# The exact sampler: radial law, subspace independence and marginals against the density.
@pytest.mark.parametrize(
  "spec, scale",
  [
    (ISA_DEFAULT, 1.0),
    ([0.7, [(1.5, 3), (4.0, [2, (0.9, 3)]), 2]], 2.5),
    ([5.0, [(0.5, 4), (2.0, 2)]], 0.3),
  ],
)
def test_sampler_radial_law(spec, scale):
  """f(z)**p0 ~ Gamma(n/p0, scale s): mean n s / p0 (within 4 SE) and a KS test."""
  tree, exponents = lpn.parse_lp_nested(spec)
  n, p0, num = tree.num_leaves, exponents[0], 20_000
  z = lpn.lp_nested_sample(
    jax.random.key(3), tree, jnp.asarray(exponents), scale, sample_shape=(num,)
  )
  with jax.enable_x64(True):
    power = np.asarray(
      lpn.lp_nested_power(jnp.asarray(z, jnp.float64), tree, jnp.asarray(exponents))
    )
  expected_mean = n * scale / p0
  se = math.sqrt(n / p0) * scale / math.sqrt(num)
  assert abs(power.mean() - expected_mean) < 4 * se
  assert stats.kstest(power, stats.gamma(n / p0, scale=scale).cdf).pvalue > 1e-3


def test_sampler_subspaces_are_independent_with_gamma_norms():
  """Each subspace's v_i**p0 ~ Gamma(n_i/p0, s), independently of the others."""
  spec, scale = [1.6, [(1.2, 3), (2.5, 5), (0.8, 2)]], 1.4
  tree, exponents = lpn.parse_lp_nested(spec)
  z = np.asarray(
    lpn.lp_nested_sample(
      jax.random.key(4), tree, jnp.asarray(exponents), scale, sample_shape=(20_000,)
    ),
    np.float64,
  )
  p0 = exponents[0]
  powers = []
  for (start, stop), p in zip(tree.subspace_slices(), exponents[1:], strict=True):
    v_p0 = np.sum(np.abs(z[:, start:stop]) ** p, axis=1) ** (p0 / p)
    law = stats.gamma((stop - start) / p0, scale=scale)
    assert stats.kstest(v_p0, law.cdf).pvalue > 1e-3
    powers.append(v_p0)
  # Independence: rank correlations vanish (|rho| < 4 / sqrt(N) under independence).
  for i in range(3):
    for j in range(i):
      assert abs(stats.spearmanr(powers[i], powers[j])[0]) < 4 / math.sqrt(20_000)


@pytest.mark.parametrize("coordinate", [0, 2])
def test_sampler_marginals_match_density(coordinate):
  """KS test of sampled z_c against the marginal CDF integrated numerically from the density."""
  spec, scale = [1.5, [(3.0, 2), 1]], 1.0
  fn = _log_prob_fn(spec, scale)
  nodes, weights = quadrature.half_line_rule(24, upper=25.0)
  others = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
  pair_weights = np.outer(weights, weights).ravel() * 4  # both signs of the other two
  grid = np.linspace(0.0, 12.0, 1201)
  points = np.insert(np.tile(others, (grid.size, 1)), coordinate, np.repeat(grid, len(others)), 1)
  with jax.enable_x64(True):
    density = np.exp(np.asarray(fn(points))).reshape(grid.size, len(others))
  marginal = density @ pair_weights
  # CDF of |z_c| by the trapezoid rule; the density of |z_c| is 2 x the marginal.
  cdf_abs = np.concatenate([[0.0], np.cumsum(np.diff(grid) * (marginal[1:] + marginal[:-1]))])
  assert abs(cdf_abs[-1] - 1.0) <= 1e-3
  tree, exponents = lpn.parse_lp_nested(spec)
  z = lpn.lp_nested_sample(
    jax.random.key(5), tree, jnp.asarray(exponents), scale, sample_shape=(10_000,)
  )
  samples = np.abs(np.asarray(z[:, coordinate], np.float64))
  cdf = lambda a: np.interp(a, grid, cdf_abs)
  assert stats.kstest(samples, cdf).pvalue > 1e-3
  # Signs are symmetric: the count of positives is Binomial(N, 1/2).
  assert abs(np.mean(z[:, coordinate] > 0) - 0.5) < 4 * 0.5 / math.sqrt(10_000)


def test_sampler_p2_s2_samples_are_standard_normal():
  tree, exponents = lpn.parse_lp_nested([2.0, [(2.0, 3), (2.0, 2)]])
  z = lpn.lp_nested_sample(
    jax.random.key(6), tree, jnp.asarray(exponents), 2.0, sample_shape=(10_000,)
  )
  for k in range(5):
    assert stats.kstest(np.asarray(z[:, k]), stats.norm.cdf).pvalue > 1e-3


def test_sampler_sample_shape_and_distribution_object():
  prior = lpn.LpNested.from_spec(ISA_DEFAULT, event_size=18)
  z = prior.sample(seed=jax.random.key(0), sample_shape=(3, 5))
  chex.assert_shape(z, (3, 5, 18))
  chex.assert_shape(prior.log_prob(z), (3, 5))
  chex.assert_tree_all_finite(z)


# Log-density and gradients in z and in every exponent are finite and correct.
@pytest.mark.parametrize("p1", [0.5, 1.3, 5.0])
@pytest.mark.parametrize("p0", [0.5, 1.0, 2.0, 5.0])
def test_gradient_finite_at_zero_and_on_axes(p0, p1):
  tree, _ = lpn.parse_lp_nested([p0, [(p1, 3), (2.0, 2), 1]])
  exponents = jnp.array([p0, p1, 2.0])
  fn = lambda z, e: lpn.lp_nested_log_prob(z, tree, e, 1.0)
  points = jnp.array(
    [
      [0.0] * 6,  # the origin
      [0.0, 0.0, 0.0, 0.7, -0.2, 1.1],  # a whole subspace at 0
      [0.5, 0.0, -0.3, 0.0, 0.0, 0.0],  # coordinate hyperplanes
    ]
  )
  for z in points:
    values = [fn(z, exponents), *jax.grad(fn, argnums=(0, 1))(z, exponents)]
    chex.assert_tree_all_finite(values)


@pytest.mark.parametrize(
  "spec",
  [
    [1.5, [(3.0, 2), (0.8, 2), 1]],
    [2.1, [(2.2, 4)] * 3],
  ],
)
def test_gradients_match_finite_differences(spec):
  tree, exponents = lpn.parse_lp_nested(spec)
  with jax.enable_x64(True):
    z = jax.random.normal(jax.random.key(7), (tree.num_leaves,), jnp.float64) + 0.1
    e = jnp.asarray(exponents, jnp.float64)
    fn = lambda z, e, s: lpn.lp_nested_log_prob(z, tree, e, s)
    jax.test_util.check_grads(fn, (z, e, 1.3), order=1, modes=["rev"], eps=1e-6)


def test_gradient_unconstrained_exponents_round_trip_and_stay_positive():
  p = jnp.array([0.5, 1.0, 2.1, 5.0])
  raw = lpn.exponents_to_unconstrained(p)
  np.testing.assert_allclose(lpn.exponents_from_unconstrained(raw), p, rtol=1e-5)
  assert bool(jnp.all(lpn.exponents_from_unconstrained(jnp.array([-50.0, 0.0])) > 0))
  with pytest.raises(ValueError, match="must all be > 0"):
    lpn.exponents_to_unconstrained([1.0, -0.5])


# Same values with and without jit, under vmap, and as a pytree through jit.
@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_transformation_vmap_matches_batch(use_jit):
  tree, exponents = lpn.parse_lp_nested(ISA_DEFAULT)
  e = jnp.asarray(exponents)
  z = jax.random.normal(jax.random.key(8), (6, 18))
  batched = _variant(lambda z: lpn.lp_nested_log_prob(z, tree, e), use_jit)(z)
  mapped = _variant(jax.vmap(lambda z: lpn.lp_nested_log_prob(z, tree, e)), use_jit)(z)
  np.testing.assert_allclose(batched, mapped, rtol=1e-6)
  # vmap over exponents too: one prior per seed of a sweep.
  many_e = jnp.stack([e, e * 1.1, e * 0.9])
  per_prior = _variant(jax.vmap(lambda e: lpn.lp_nested_log_prob(z, tree, e)), use_jit)(many_e)
  chex.assert_shape(per_prior, (3, 6))
  np.testing.assert_allclose(per_prior[0], batched, rtol=1e-6)


@pytest.mark.parametrize("x64", [False, True])
def test_transformation_from_spec_follows_the_default_float_dtype(x64):
  """Exponents, scale, densities and samples are float32 by default, float64 with x64."""
  with jax.enable_x64(x64):
    prior = lpn.LpNested.from_spec(ISA_DEFAULT, scale=2.0)
    want = jnp.float64 if x64 else jnp.float32
    assert (prior.exponents.dtype, prior.scale.dtype) == (want, want)
    # eval_shape: dtypes without compiling the sampler (seconds on this CPU).
    log_p = jax.eval_shape(prior.log_prob, jnp.zeros((3, 18)))
    sample = jax.eval_shape(lambda k: prior.sample(seed=k, sample_shape=(2,)), jax.random.key(0))
    assert (log_p.dtype, sample.dtype) == (want, want)


@pytest.mark.parametrize("which", ["log_prob", "function", "power", "distribution"])
def test_transformation_float64_numpy_input_does_not_warn(which):
  """float64 numpy z (and exponents) under the default 32-bit mode: no warning from inside the
  library, float32 results equal to those for float32 input; integer z is not truncating."""
  tree, exponents = lpn.parse_lp_nested(ISA_DEFAULT)
  fns = {
    "log_prob": lambda z: lpn.lp_nested_log_prob(z, tree, np.asarray(exponents), 2.0),
    "function": lambda z: lpn.lp_nested_function(z, tree, np.asarray(exponents)),
    "power": lambda z: lpn.lp_nested_power(z, tree, np.asarray(exponents)),
    "distribution": lpn.LpNested.from_spec(ISA_DEFAULT).log_prob,
  }
  z = np.random.default_rng(0).normal(size=(5, 18)) * 2
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = fns[which](z)
    from_ints = fns[which](np.round(z).astype(np.int64))
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, fns[which](jnp.asarray(z, jnp.float32)))
  np.testing.assert_allclose(from_ints, fns[which](np.round(z).astype(np.float32)), rtol=1e-6)


def test_transformation_distribution_is_a_pytree():
  prior = lpn.LpNested.from_spec(ISA_DEFAULT)
  z = jnp.ones((2, 18))
  np.testing.assert_allclose(
    jax.jit(lambda d, z: d.log_prob(z))(prior, z), prior.log_prob(z), rtol=1e-6
  )
  grads = jax.grad(lambda d: jnp.sum(d.log_prob(z)))(prior)
  chex.assert_shape(grads.exponents, (4,))
