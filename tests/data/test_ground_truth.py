"""Tests of the ground-truth interface, the table-backed datasets, the variants and the factory."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disentangle_jax import data
from disentangle_jax.data import dsprites, ground_truth, table, variants

# dSprites rendered on demand (no cache on disk), shared by the interface and variant tests.
DSPRITES = dsprites.DSprites(source="render")


def test_index_strides_by_hand():
  """Strides are products of the later sizes: (3, 6, 40, 32, 32) -> 245760, 40960, 1024, 32, 1."""
  np.testing.assert_array_equal(
    ground_truth.factor_strides((3, 6, 40, 32, 32)), [245760, 40960, 1024, 32, 1]
  )
  np.testing.assert_array_equal(ground_truth.factor_strides((7,)), [1])


@settings(max_examples=50, deadline=None)
@given(
  sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5),
  data_=st.data(),
)
def test_index_roundtrip_any_grid(sizes, data_):
  """For any grid, index -> factors -> index is the identity and factors stay in range."""
  total = int(np.prod(sizes))
  indices = np.array(data_.draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=20)))
  factors = ground_truth.index_to_factors(indices, sizes)
  assert ((factors >= 0) & (factors < np.array(sizes))).all()
  np.testing.assert_array_equal(ground_truth.factors_to_index(factors, sizes), indices)


def test_index_last_factor_fastest():
  """Consecutive indices change the last factor first (row-major order, like np.unravel_index)."""
  factors = ground_truth.index_to_factors(np.arange(24), (2, 3, 4))
  np.testing.assert_array_equal(factors, np.stack(np.unravel_index(np.arange(24), (2, 3, 4)), 1))


def test_interface_dataset_attributes():
  """DSprites exposes names, sizes, num_examples and observation shape of the published set."""
  assert DSPRITES.factor_names == ("shape", "scale", "orientation", "posX", "posY")
  assert DSPRITES.factor_sizes == (3, 6, 40, 32, 32)
  assert DSPRITES.num_examples == 737_280
  assert DSPRITES.observation_shape == (64, 64, 1)


def test_interface_methods_validate_inputs():
  """Bad indices, factors and rngs raise ValueError/TypeError naming the problem."""
  with pytest.raises(ValueError, match="index 737280 is out of range"):
    DSPRITES.index_to_factors(np.array([0, 737_280]))
  with pytest.raises(ValueError, match="'posY' = -1"):
    DSPRITES.factors_to_index(np.array([[0, 0, 0, 0, -1]]))
  with pytest.raises(ValueError, match="integer"):
    DSPRITES.factors_to_index(np.zeros((1, 5)))
  with pytest.raises(ValueError, match="random"):
    DSPRITES.sample_factors(3, None)
  with pytest.raises(TypeError, match="Generator"):
    DSPRITES.sample_factors(3, "seed")


def test_interface_sample_factors_uniform_and_seeded():
  """Factors are independent and uniform (chi-square on each marginal); equal seeds agree."""
  factors = DSPRITES.sample_factors(60_000, np.random.default_rng(5))
  for column, size in enumerate(DSPRITES.factor_sizes):
    counts = np.bincount(factors[:, column], minlength=size)
    expected = len(factors) / size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < size + 5 * np.sqrt(2 * size), (column, chi2)  # ~5 sigma
  np.testing.assert_array_equal(DSPRITES.sample_factors(7, 11), DSPRITES.sample_factors(7, 11))


def test_interface_sample_returns_matching_pairs():
  """sample gives factors and the observations of exactly those factors."""
  factors, observations = DSPRITES.sample(8, np.random.default_rng(2))
  np.testing.assert_array_equal(observations, DSPRITES.observations_from_factors(factors))
  np.testing.assert_array_equal(
    DSPRITES.observations_from_indices(DSPRITES.factors_to_index(factors)), observations
  )


def _toy_images(labels):
  """A stored image encodes its own row's labels, so a lookup can be checked exactly."""
  images = np.zeros((len(labels), 64, 64, 1), np.float32)
  images[:, 0, : labels.shape[1], 0] = labels / 10
  return images


def test_table_lookup_with_shuffled_rows():
  """Rows stored in any order are found by their factors."""
  labels = np.stack(np.unravel_index(np.arange(24), (2, 3, 4)), 1)
  rng = np.random.default_rng(0)
  order = rng.permutation(24)
  stored = labels[order]
  images = _toy_images(stored)
  gt = table.TableGroundTruth(stored, ("a", "b", "c"), lambda r: images[r], (64, 64, 1))
  assert gt.factor_sizes == (2, 3, 4) and gt.examples_per_combination == (1, 1)
  query = gt.sample_factors(50, rng)
  np.testing.assert_allclose(
    gt.observations_from_factors(query)[:, 0, :3, 0], query / 10, atol=1e-6
  )


def test_table_duplicates_are_drawn_with_rng():
  """With several rows per combination, each is drawn with the rng; rng is then required."""
  labels = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3)
  instance = np.repeat(np.arange(3), 4)
  gt = table.TableGroundTruth(labels, ("a", "b"), lambda r: instance[r], (1,))
  assert gt.examples_per_combination == (3, 3)
  rows = gt.rows_from_factors(np.zeros((3000, 2), np.int64), np.random.default_rng(1))
  np.testing.assert_array_equal(labels[rows], 0)
  counts = np.bincount(instance[rows], minlength=3)
  assert (np.abs(counts - 1000) < 150).all(), counts
  with pytest.raises(ValueError, match="random"):
    gt.rows_from_factors(np.zeros((1, 2), np.int64))


def test_table_incomplete_grid_is_reported():
  """A missing factor combination is a ValueError naming one of them."""
  labels = np.array([[0, 0], [0, 1], [1, 0]])
  with pytest.raises(ValueError, match=r"1 of 4 combinations .* a=1, b=1"):
    table.TableGroundTruth(labels, ("a", "b"), lambda r: r, (1,))


def test_variants_color_dsprites():
  """Colour: shape pixels get one RGB colour in [0.5, 1]^3 per observation, background stays 0."""
  color = variants.ColorDSprites(DSPRITES)
  factors = DSPRITES.sample_factors(200, 0)
  obs = color.observations_from_factors(factors, np.random.default_rng(1))
  binary = DSPRITES.binary_images(factors).astype(bool)
  assert obs.shape == (200, 64, 64, 3) and obs.dtype == np.float32
  assert (obs[~binary] == 0).all()
  per_image = [obs[i][binary[i]] for i in range(200)]
  assert all((p == p[0]).all() for p in per_image)  # one colour per observation
  colours = np.stack([p[0] for p in per_image])
  assert colours.min() >= 0.5 and colours.max() <= 1.0
  assert colours.std(axis=0).min() > 0.1  # uniform on [0.5, 1] has std 0.144
  assert np.abs(np.corrcoef(colours.T) - np.eye(3)).max() < 0.25  # channels independent


def test_variants_noisy_dsprites():
  """Noise: shape pixels are 1, background is U[0, 1] per pixel and channel."""
  noisy = variants.NoisyDSprites(DSPRITES)
  factors = DSPRITES.sample_factors(50, 0)
  obs = noisy.observations_from_factors(factors, np.random.default_rng(2))
  binary = DSPRITES.binary_images(factors).astype(bool)
  assert obs.shape == (50, 64, 64, 3)
  assert (obs[binary] == 1).all()
  background = obs[~binary]
  assert background.min() >= 0 and background.max() < 1
  np.testing.assert_allclose(background.mean(), 0.5, atol=0.01)
  np.testing.assert_allclose(background.var(), 1 / 12, atol=0.002)
  assert abs(np.corrcoef(background[:, 0], background[:, 1])[0, 1]) < 0.02


@pytest.mark.parametrize("cls", [variants.ColorDSprites, variants.NoisyDSprites])
def test_variants_randomness_is_explicit(cls):
  """Same rng seed -> same observations; different seeds differ; no rng is an error."""
  dataset = cls(DSPRITES)
  factors = DSPRITES.sample_factors(4, 0)
  first = dataset.observations_from_factors(factors, np.random.default_rng(9))
  np.testing.assert_array_equal(first, dataset.observations_from_factors(factors, 9))
  assert (first != dataset.observations_from_factors(factors, 10)).any()
  with pytest.raises(ValueError, match="random"):
    dataset.observations_from_factors(factors)
  assert dataset.observation_shape == (64, 64, 3)
  assert dataset.factor_sizes == DSPRITES.factor_sizes


def test_factory_names():
  """The factory lists the generated, file and tfds datasets."""
  assert set(data.DATASET_NAMES) == {
    "dsprites",
    "color_dsprites",
    "noisy_dsprites",
    "dsprites_npz",
    "tfds:dsprites",
    "tfds:shapes3d",
    "tfds:smallnorb",
  }


def test_factory_builds_by_name():
  """get_dataset passes keyword arguments on to the dataset."""
  assert isinstance(data.get_dataset("dsprites", source="render"), data.DSprites)
  noisy = data.get_dataset("noisy_dsprites", source="render")
  assert isinstance(noisy, data.NoisyDSprites) and noisy.base.source == "render"


def test_factory_unknown_name_lists_valid_ones():
  """An unknown name is a ValueError listing every valid name."""
  with pytest.raises(ValueError, match="unknown dataset 'mnist'") as info:
    data.get_dataset("mnist")
  for name in data.DATASET_NAMES:
    assert name in str(info.value)
