"""Lp-nested distributions against closed forms, scipy, quadrature and exact sampling laws."""

import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
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


class ParseTest(parameterized.TestCase):
  """The tree specification: structure, pre-order exponents and clear errors."""

  def test_isa_layout_structure(self):
    tree, exponents = lpn.parse_lp_nested([2.1, [(2.2, 4)] * 3])
    self.assertEqual(tree.num_leaves, 12)
    self.assertEqual(exponents, (2.1, 2.2, 2.2, 2.2))
    self.assertEqual(tree.subspace_slices(), ((0, 4), (4, 8), (8, 12)))
    self.assertEqual(tree.nodes[0].child_sizes, (4, 4, 4))

  def test_general_tree_numbers_leaves_depth_first(self):
    tree, exponents = lpn.parse_lp_nested([1.5, [2, (3.0, [1, (0.7, 2)]), 1]])
    self.assertEqual(exponents, (1.5, 3.0, 0.7))
    self.assertEqual(tree.num_leaves, 6)
    self.assertEqual(tree.nodes[0].child_sizes, (1, 1, 3, 1))
    self.assertEqual((tree.nodes[2].leaf_start, tree.nodes[2].leaf_stop), (3, 5))

  def test_isa_layout_helper_matches_literal(self):
    self.assertEqual(lpn.isa_layout(2.0, [(2.1, 6)] * 3), [2.0, [(2.1, 6)] * 3])

  @parameterized.named_parameters(
    ("not_a_node", 3, "expected a node"),
    ("three_entries", [2.0, [1], 1], "expected a node"),
    ("empty_children", [2.0, []], "non-empty"),
    ("zero_leaves", [2.0, [(2.0, 0)]], "positive integer"),
    ("negative_exponent", [2.0, [(-1.0, 3)]], "must be > 0"),
    ("zero_exponent", [0.0, [3]], "must be > 0"),
    ("string_exponent", ["2", [3]], "must be a number"),
    ("nan_exponent", [float("nan"), [3]], "must be a number"),
    ("float_leaf_count", [2.0, [2.5]], "expected a node"),
  )
  def test_malformed_tree_is_a_clear_error(self, spec, message):
    with self.assertRaisesRegex(ValueError, message):
      lpn.parse_lp_nested(spec)

  def test_wrong_latent_size_is_an_error_at_construction(self):
    with self.assertRaisesRegex(ValueError, "18 leaves, but the latent size is 10"):
      lpn.LpNested.from_spec(ISA_DEFAULT, event_size=10)

  def test_wrong_shapes_are_errors(self):
    tree, exponents = lpn.parse_lp_nested(ISA_DEFAULT)
    with self.assertRaisesRegex(ValueError, "last axis must have size 18"):
      lpn.lp_nested_log_prob(jnp.zeros((4, 10)), tree, jnp.asarray(exponents))
    with self.assertRaisesRegex(ValueError, r"exponents must have shape \(4,\)"):
      lpn.lp_nested_log_prob(jnp.zeros((4, 18)), tree, jnp.ones(3))


class DensityTest(chex.TestCase):
  """The log-density against closed forms and scipy."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.5, 1.0, 2.0, 3.7)
  def test_one_node_is_product_of_generalised_normals(self, p):
    scale = 1.7
    z = jax.random.normal(jax.random.key(0), (5, 4)) * 2.0
    tree, _ = lpn.parse_lp_nested([p, [4]])
    log_p = self.variant(lambda z, e: lpn.lp_nested_log_prob(z, tree, e, scale))(z, jnp.array([p]))
    expected = stats.gennorm.logpdf(np.asarray(z, np.float64), p, scale=scale ** (1 / p)).sum(-1)
    np.testing.assert_allclose(log_p, expected, rtol=2e-5, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_p2_everywhere_is_gaussian(self):
    """p = 2 at every node: s = 2 gives N(0, I) and s = 1 gives N(0, I/2), any tree shape."""
    spec = [2.0, [(2.0, 3), 1, (2.0, [(2.0, 2), 2])]]
    tree, exponents = lpn.parse_lp_nested(spec)
    z = jax.random.normal(jax.random.key(1), (7, 8)) * 1.5
    fn = self.variant(lambda z, s: lpn.lp_nested_log_prob(z, tree, jnp.asarray(exponents), s))
    z64 = np.asarray(z, np.float64)
    np.testing.assert_allclose(fn(z, 2.0), stats.norm.logpdf(z64).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(
      fn(z, 1.0), stats.norm.logpdf(z64, scale=math.sqrt(0.5)).sum(-1), rtol=1e-5
    )

  @parameterized.parameters(
    (2.0, [(2.1, 6)] * 3),
    (2.1, [(2.2, 4)] * 3),
    (0.8, [(1.3, 2), (4.0, 5), (0.6, 1)]),
    (3.5, [(1.0, 3), (2.0, 7)]),
  )
  def test_isa_surface_closed_form(self, p0, subspaces):
    tree, exponents = lpn.parse_lp_nested([p0, subspaces])
    log_s = lpn.lp_nested_log_surface(tree, jnp.asarray(exponents, jnp.float32))
    np.testing.assert_allclose(log_s, _isa_log_surface_closed_form(p0, subspaces), rtol=1e-5)

  @parameterized.named_parameters(
    ("three_subspaces", [0.5, [(0.1, 12), (0.12, 9), (0.125, 20)]]),
    ("two_large_subspaces", [0.05, [(0.1, 30), (0.11, 20)]]),
    ("one_node", [0.1, [40]]),
    ("three_levels", [0.06, [(0.1, [10, (0.05, 8)]), (0.12, 16)]]),
    ("isa_10x10", [0.4, [(0.6, 10)] * 10]),
  )
  def test_log_surface_matches_scipy_betaln_in_float64(self, spec):
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
    self.assertGreater(np.mean(np.asarray(larger) >= 8), 0.5)  # mostly the series regime
    with jax.enable_x64(True):
      log_s = lpn.lp_nested_log_surface(tree, jnp.asarray(exponents))
      self.assertEqual(log_s.dtype, jnp.float64)
    np.testing.assert_allclose(float(log_s), math.fsum(terms), rtol=1e-12)

  def test_lp_nested_function_by_hand(self):
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


class NormalisationTest(parameterized.TestCase):
  """The density integrates to 1: quadrature in 1-3 dimensions, importance sampling above."""

  @parameterized.parameters(0.6, 1.0, 2.0, 4.5)
  def test_1d_integrates_to_one(self, p):
    from scipy import integrate

    fn = _log_prob_fn([p, [1]], scale=1.3)
    with jax.enable_x64(True):
      total, err = integrate.quad(lambda x: math.exp(float(fn(np.array([x])))), -np.inf, np.inf)
    self.assertLess(err, 1e-7)
    self.assertAlmostEqual(total, 1.0, delta=1e-6)

  @parameterized.parameters(
    ([1.3, [2]], 0.7),
    ([0.9, [(2.5, 2)]], 1.0),
    ([2.6, [1, (1.2, 1)]], 2.0),
    ([1.5, [(3.0, 2), 1]], 1.0),
    ([1.2, [1, (2.5, [(0.8, 1), 1])]], 1.5),
  )
  def test_2d_and_3d_integrate_to_one(self, spec, scale):
    """Tensor Gauss-Legendre; the rule's own error is bounded by comparing two refinements."""
    fn = _log_prob_fn(spec, scale)
    dim = lpn.parse_lp_nested(spec)[0].num_leaves
    nodes = (24, 32) if dim == 3 else (48, 64)
    with jax.enable_x64(True):
      coarse, fine = (quadrature.integrate_symmetric(fn, dim, n) for n in nodes)
    quadrature_error = abs(fine - coarse)
    self.assertLess(quadrature_error, 1e-4)
    self.assertAlmostEqual(fine, 1.0, delta=1e-4 + 2 * quadrature_error)

  @parameterized.parameters(
    (ISA_DEFAULT, 1.0),
    ([1.5, [(3.0, 4), (1.2, 4), (2.0, 4)]], 1.0),
    ([1.1, [(1.4, 5), (2.5, [3, (1.5, 2)]), 5]], 2.0),
    ([2.2, [(1.8, 10), (2.4, 10)]], 0.5),
  )
  def test_high_dimensional_integrates_to_one(self, spec, scale):
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
      log_p = np.asarray(
        lpn.lp_nested_log_prob(jnp.asarray(x), tree, jnp.asarray(exponents), scale)
      )
    w = np.exp(log_p - log_q)
    mean, se = w.mean(), w.std() / math.sqrt(w.size)
    self.assertLess(se, 0.02)
    self.assertLess(abs(mean - 1.0), 4 * se)


class SamplerTest(parameterized.TestCase):
  """The exact sampler: radial law, subspace independence and marginals against the density."""

  @parameterized.parameters(
    (ISA_DEFAULT, 1.0),
    ([0.7, [(1.5, 3), (4.0, [2, (0.9, 3)]), 2]], 2.5),
    ([5.0, [(0.5, 4), (2.0, 2)]], 0.3),
  )
  def test_radial_law(self, spec, scale):
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
    self.assertLess(abs(power.mean() - expected_mean), 4 * se)
    self.assertGreater(stats.kstest(power, stats.gamma(n / p0, scale=scale).cdf).pvalue, 1e-3)

  def test_subspaces_are_independent_with_gamma_norms(self):
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
      self.assertGreater(stats.kstest(v_p0, law.cdf).pvalue, 1e-3)
      powers.append(v_p0)
    # Independence: rank correlations vanish (|rho| < 4 / sqrt(N) under independence).
    for i in range(3):
      for j in range(i):
        self.assertLess(abs(stats.spearmanr(powers[i], powers[j])[0]), 4 / math.sqrt(20_000))

  @parameterized.parameters(0, 2)
  def test_marginals_match_density(self, coordinate):
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
    self.assertAlmostEqual(cdf_abs[-1], 1.0, delta=1e-3)
    tree, exponents = lpn.parse_lp_nested(spec)
    z = lpn.lp_nested_sample(
      jax.random.key(5), tree, jnp.asarray(exponents), scale, sample_shape=(10_000,)
    )
    samples = np.abs(np.asarray(z[:, coordinate], np.float64))
    cdf = lambda a: np.interp(a, grid, cdf_abs)
    self.assertGreater(stats.kstest(samples, cdf).pvalue, 1e-3)
    # Signs are symmetric: the count of positives is Binomial(N, 1/2).
    self.assertLess(abs(np.mean(z[:, coordinate] > 0) - 0.5), 4 * 0.5 / math.sqrt(10_000))

  def test_p2_s2_samples_are_standard_normal(self):
    tree, exponents = lpn.parse_lp_nested([2.0, [(2.0, 3), (2.0, 2)]])
    z = lpn.lp_nested_sample(
      jax.random.key(6), tree, jnp.asarray(exponents), 2.0, sample_shape=(10_000,)
    )
    for k in range(5):
      self.assertGreater(stats.kstest(np.asarray(z[:, k]), stats.norm.cdf).pvalue, 1e-3)

  def test_sample_shape_and_distribution_object(self):
    prior = lpn.LpNested.from_spec(ISA_DEFAULT, event_size=18)
    z = prior.sample(seed=jax.random.key(0), sample_shape=(3, 5))
    chex.assert_shape(z, (3, 5, 18))
    chex.assert_shape(prior.log_prob(z), (3, 5))
    chex.assert_tree_all_finite(z)


class GradientTest(parameterized.TestCase):
  """Log-density and gradients in z and in every exponent are finite and correct."""

  @parameterized.product(p0=[0.5, 1.0, 2.0, 5.0], p1=[0.5, 1.3, 5.0])
  def test_finite_at_zero_and_on_axes(self, p0, p1):
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

  @parameterized.parameters(
    ([1.5, [(3.0, 2), (0.8, 2), 1]],),
    ([2.1, [(2.2, 4)] * 3],),
  )
  def test_gradients_match_finite_differences(self, spec):
    tree, exponents = lpn.parse_lp_nested(spec)
    with jax.enable_x64(True):
      z = jax.random.normal(jax.random.key(7), (tree.num_leaves,), jnp.float64) + 0.1
      e = jnp.asarray(exponents, jnp.float64)
      fn = lambda z, e, s: lpn.lp_nested_log_prob(z, tree, e, s)
      jax.test_util.check_grads(fn, (z, e, 1.3), order=1, modes=["rev"], eps=1e-6)

  def test_unconstrained_exponents_round_trip_and_stay_positive(self):
    p = jnp.array([0.5, 1.0, 2.1, 5.0])
    raw = lpn.exponents_to_unconstrained(p)
    np.testing.assert_allclose(lpn.exponents_from_unconstrained(raw), p, rtol=1e-5)
    self.assertTrue(bool(jnp.all(lpn.exponents_from_unconstrained(jnp.array([-50.0, 0.0])) > 0)))
    with self.assertRaisesRegex(ValueError, "must all be > 0"):
      lpn.exponents_to_unconstrained([1.0, -0.5])


class TransformationTest(chex.TestCase):
  """Same values with and without jit, under vmap, and as a pytree through jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap_matches_batch(self):
    tree, exponents = lpn.parse_lp_nested(ISA_DEFAULT)
    e = jnp.asarray(exponents)
    z = jax.random.normal(jax.random.key(8), (6, 18))
    batched = self.variant(lambda z: lpn.lp_nested_log_prob(z, tree, e))(z)
    mapped = self.variant(jax.vmap(lambda z: lpn.lp_nested_log_prob(z, tree, e)))(z)
    np.testing.assert_allclose(batched, mapped, rtol=1e-6)
    # vmap over exponents too: one prior per seed of a sweep.
    many_e = jnp.stack([e, e * 1.1, e * 0.9])
    per_prior = self.variant(jax.vmap(lambda e: lpn.lp_nested_log_prob(z, tree, e)))(many_e)
    chex.assert_shape(per_prior, (3, 6))
    np.testing.assert_allclose(per_prior[0], batched, rtol=1e-6)

  @parameterized.parameters(False, True)
  def test_from_spec_follows_the_default_float_dtype(self, x64):
    """Exponents, scale, densities and samples are float32 by default, float64 with x64."""
    with jax.enable_x64(x64):
      prior = lpn.LpNested.from_spec(ISA_DEFAULT, scale=2.0)
      want = jnp.float64 if x64 else jnp.float32
      self.assertEqual((prior.exponents.dtype, prior.scale.dtype), (want, want))
      # eval_shape: dtypes without compiling the sampler (seconds on this CPU).
      log_p = jax.eval_shape(prior.log_prob, jnp.zeros((3, 18)))
      sample = jax.eval_shape(lambda k: prior.sample(seed=k, sample_shape=(2,)), jax.random.key(0))
      self.assertEqual((log_p.dtype, sample.dtype), (want, want))

  @parameterized.parameters("log_prob", "function", "power", "distribution")
  def test_float64_numpy_input_does_not_warn(self, which):
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
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_array_equal(out, fns[which](jnp.asarray(z, jnp.float32)))
    np.testing.assert_allclose(from_ints, fns[which](np.round(z).astype(np.float32)), rtol=1e-6)

  def test_distribution_is_a_pytree(self):
    prior = lpn.LpNested.from_spec(ISA_DEFAULT)
    z = jnp.ones((2, 18))
    np.testing.assert_allclose(
      jax.jit(lambda d, z: d.log_prob(z))(prior, z), prior.log_prob(z), rtol=1e-6
    )
    grads = jax.grad(lambda d: jnp.sum(d.log_prob(z)))(prior)
    chex.assert_shape(grads.exponents, (4,))
