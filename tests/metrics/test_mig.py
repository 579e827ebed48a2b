"""MIG: both estimators against direct computations, and the meaning of the score."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from disentangle_jax.metrics import mig as mig_lib
from disentangle_jax.metrics import utils
from tests.metrics import toy

SIZES = (3, 4, 5)  # a full grid of 60 examples


def encode_with(transform, sigma=0.01):
  """encode_fn: mean = transform(scaled factors), log_var = log sigma^2."""

  def encode_fn(images):
    mean = transform(np.asarray(images, np.float64).reshape(len(images), -1))
    return mean, np.full(mean.shape, 2 * np.log(sigma))

  return encode_fn


def test_gap_of_a_hand_worked_matrix():
  mi = np.array([[0.9, 0.1], [0.3, -0.2], [0.5, -0.1]])
  entropies = np.array([1.8, 0.5])
  mig, gaps = mig_lib.mutual_information_gap(mi, entropies)
  # factor 0: (0.9 - 0.5) / 1.8; factor 1: negatives clamp to 0, so (0.1 - 0) / 0.5.
  np.testing.assert_allclose(gaps, [0.4 / 1.8, 0.2])
  assert mig == pytest.approx((0.4 / 1.8 + 0.2) / 2)
  with pytest.raises(ValueError, match="positive"):
    mig_lib.mutual_information_gap(mi, np.array([1.0, 0.0]))
  with pytest.raises(ValueError, match=r"\[G >= 2, F\]"):
    mig_lib.mutual_information_gap(mi[:1], entropies)


def test_chen_mutual_information_matches_brute_force():
  # With num_samples >= N every z is used, so the estimate is a deterministic function of the
  # z draws: recompute it with scipy in float64 from the same draws.
  dataset = toy.FactorImages(SIZES)
  rng = np.random.default_rng(3)
  mean = rng.standard_normal((dataset.num_examples, 3)).astype(np.float32)
  log_var = rng.uniform(-2, 0, mean.shape).astype(np.float32)
  factors = dataset.index_to_factors(np.arange(dataset.num_examples))
  out = mig_lib.chen_mutual_information(mean, log_var, factors, 7, num_samples=1000, chunk_size=16)

  noise = np.random.default_rng(7).standard_normal(mean.shape, dtype=np.float32)
  z = (mean + np.exp(0.5 * log_var) * noise).astype(np.float64)

  def entropy(rows):
    log_p = stats.norm.logpdf(z[rows][:, None], mean[rows][None], np.exp(0.5 * log_var[rows])[None])
    return -np.mean(logsumexp(log_p, axis=1) - np.log(len(rows)), axis=0)

  marginal = entropy(np.arange(len(z)))
  conditional = np.stack(
    [
      np.mean([entropy(np.flatnonzero(factors[:, k] == v)) for v in range(size)], axis=0)
      for k, size in enumerate(SIZES)
    ],
    axis=1,
  )
  np.testing.assert_allclose(out["marginal_entropy"], marginal, atol=1e-5)
  np.testing.assert_allclose(out["mutual_information"], marginal[:, None] - conditional, atol=2e-5)


def test_chen_mig_of_the_factors_themselves_is_near_one():
  # z_j = v_j / (|V_j| - 1) + N(0, 0.01^2): each latent holds all of its factor's entropy
  # (log |V_j|) and nothing of the others' (independent factors on a full grid), so every gap is
  # ~ log|V_j| / log|V_j| = 1.
  dataset = toy.FactorImages(SIZES)
  out = mig_lib.compute_mig_chen(dataset, encode_with(lambda x: x), 0)
  assert out["scored_factors"] == list(dataset.factor_names)
  mi = np.array(out["mutual_information"])
  np.testing.assert_allclose(np.diag(mi), np.log(SIZES), atol=0.01)
  assert out["mig"] > 0.95


def test_chen_mig_of_an_uninformative_code_is_near_zero():
  rng = np.random.default_rng(0)
  dataset = toy.FactorImages(SIZES)
  out = mig_lib.compute_mig_chen(
    dataset, lambda images: (rng.standard_normal((len(images), 3)), np.zeros((len(images), 3))), 0
  )
  assert out["mig"] < 0.05


def test_chen_mig_drops_under_a_rotation_but_the_subspace_mig_does_not():
  # Rotating latents 0 and 1 by 45 degrees splits factors 0 and 1 across both: their per-latent
  # gaps collapse. Taking the rotated pair as one subspace, it holds both factors; the subspace
  # (0, 1) and the latent 2 are two variables and factor 2's gap is untouched.
  dataset = toy.FactorImages(SIZES)
  rotation = toy.rotation(3)
  good = mig_lib.compute_mig_chen(dataset, encode_with(lambda x: x), 0)
  rotated = mig_lib.compute_mig_chen(dataset, encode_with(lambda x: x @ rotation), 0)
  assert rotated["mig_per_factor"]["f0"] < good["mig_per_factor"]["f0"] - 0.3
  assert rotated["mig_per_factor"]["f1"] < good["mig_per_factor"]["f1"] - 0.3
  subspace = mig_lib.compute_mig_chen(
    dataset, encode_with(lambda x: x @ rotation), 0, subspaces=[(0, 1), (2,)]
  )
  assert subspace["variables"] == "subspaces"
  mi = np.array(subspace["mutual_information"])
  np.testing.assert_allclose(mi[0, :2], np.log(SIZES[:2]), atol=0.02)  # the pair holds both
  assert subspace["mig_per_factor"]["f2"] == pytest.approx(good["mig_per_factor"]["f2"], abs=0.02)


def test_chen_mi_is_invariant_to_rescaling_and_permuting_latents():
  # Scaling a latent's posterior (mean and std) by c shifts every log-density by -log c, so the
  # marginal and conditional entropies move together and MI is unchanged (up to float32). A
  # permutation of latents permutes the rows of MI; the z noise is drawn in column order, so
  # that holds up to the estimator's sampling noise.
  dataset = toy.FactorImages(SIZES)
  rng = np.random.default_rng(1)
  mean = rng.standard_normal((dataset.num_examples, 3))
  log_var = rng.uniform(-2, 0, mean.shape)
  factors = dataset.index_to_factors(np.arange(dataset.num_examples))
  base = mig_lib.chen_mutual_information(mean, log_var, factors, 5, num_samples=1000)
  scale = np.array([10.0, 0.1, 3.0])
  scaled = mig_lib.chen_mutual_information(
    mean * scale, log_var + 2 * np.log(scale), factors, 5, num_samples=1000
  )
  np.testing.assert_allclose(scaled["mutual_information"], base["mutual_information"], atol=2e-4)
  perm = [2, 0, 1]
  good = mig_lib.compute_mig_chen(dataset, encode_with(lambda x: x), 0)
  permuted = mig_lib.compute_mig_chen(dataset, encode_with(lambda x: x[:, perm]), 0)
  np.testing.assert_allclose(
    permuted["mutual_information"], np.array(good["mutual_information"])[perm], atol=0.01
  )
  assert permuted["mig"] == pytest.approx(good["mig"], abs=0.01)


def test_default_factors_leave_shape_out_on_dsprites_only():
  from disentangle_jax.data import DSprites

  assert mig_lib.default_mig_factors(DSprites.__new__(DSprites)) == (
    "scale",
    "orientation",
    "posX",
    "posY",
  )
  assert mig_lib.default_mig_factors(toy.FactorImages(SIZES)) == ("f0", "f1", "f2")
  with pytest.raises(ValueError, match="subset"):
    mig_lib.compute_mig_chen(toy.FactorImages(SIZES), None, 0, scored_factors=["shape"])


# ------------------------------------------------------------------ disentanglement_lib's MIG


def test_dlib_mig_matches_counting_by_hand():
  rng = np.random.default_rng(4)
  codes = rng.standard_normal((500, 3))
  factors = np.stack([rng.integers(0, 3, 500), (codes[:, 1] > 0).astype(int)], axis=1)
  mig, gaps, mi, entropies = mig_lib.mig_from_codes(codes, factors, num_bins=5)

  def plug_in_mi(a, b):
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return np.sum(joint[nz] * np.log(joint[nz] / outer[nz]))

  # Bins by hand: 5 equal-width bins over each latent's [min, max], the max in the last bin.
  lo, hi = codes.min(0), codes.max(0)
  bins = np.minimum(np.floor((codes - lo) / (hi - lo) * 5), 4).astype(int)
  expected = np.array([[plug_in_mi(bins[:, j], factors[:, k]) for k in range(2)] for j in range(3)])
  np.testing.assert_allclose(mi, expected, atol=1e-12)
  h = np.array([plug_in_mi(factors[:, k], factors[:, k]) for k in range(2)])
  np.testing.assert_allclose(entropies, h, atol=1e-12)
  top = -np.sort(-expected, axis=0)
  np.testing.assert_allclose(gaps, (top[0] - top[1]) / h, atol=1e-12)
  assert mig == pytest.approx(np.mean(gaps))


def test_dlib_mig_meaning():
  dataset = toy.FactorImages((3, 6, 10, 8))
  good = mig_lib.compute_mig_dlib(dataset, toy.factor_code(noise=0.01), 0, num_train=4000)
  # Plug-in MI of independent variables is biased up by about (bins-1)(|V|-1)/(2N) <= 0.02 nats.
  assert good["mig"] > 0.9
  noise = mig_lib.compute_mig_dlib(dataset, toy.random_code(4), 0, num_train=4000)
  assert noise["mig"] < 0.05
  rotated = mig_lib.compute_mig_dlib(
    dataset, toy.factor_code(noise=0.01, mixing=toy.rotation(4)), 0, num_train=4000
  )
  assert rotated["mig"] < good["mig"] - 0.3
  # Binning is per latent over its own range: rescaling and permuting latents change nothing
  # (powers of two keep the arithmetic exact, the same seed gives the same noise).
  code = toy.factor_code(noise=0.01)
  scale = np.array([2.0, 0.5, 4.0, 1.0])
  moved = mig_lib.compute_mig_dlib(
    dataset, lambda x: code(x)[:, [2, 0, 3, 1]] * scale, 0, num_train=4000
  )
  assert moved["mig"] == pytest.approx(good["mig"], abs=1e-12)
  assert set(good["mig_per_factor"]) == set(dataset.factor_names)


def test_utils_shape_errors():
  with pytest.raises(ValueError, match=r"codes \[N, K\]"):
    utils.histogram_discretize(np.zeros(5))
  with pytest.raises(ValueError, match=r"\[B, K\]"):
    utils.represent(lambda x: np.zeros(len(x)), np.zeros((3, 1, 1, 2)))
