"""A tiny ground-truth dataset whose observations are its factors, and codes built from them.

The metrics see a model only through a representation function, so a test can hand them codes
with a known structure: the factors themselves (a perfectly disentangled code), a rotation of
them (entangled), pure noise (no information), permuted or rescaled latents.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from disentangle_jax.data.ground_truth import GroundTruthData, check_factors


class FactorImages(GroundTruthData):
  """Observation of factors v = the image [1, 1, F] holding v_i / (size_i - 1) in [0, 1]."""

  def __init__(self, factor_sizes: Sequence[int] = (3, 6, 10, 8)):
    self.factor_sizes = tuple(int(s) for s in factor_sizes)
    self.factor_names = tuple(f"f{i}" for i in range(len(self.factor_sizes)))
    self.observation_shape = (1, 1, len(self.factor_sizes))

  def observations_from_factors(self, factors, rng=None):
    factors = check_factors(factors, self.factor_sizes, self.factor_names)
    scaled = factors / np.maximum(np.asarray(self.factor_sizes) - 1, 1)
    return scaled.astype(np.float32).reshape(len(factors), 1, 1, -1)


def factor_code(
  *,
  noise: float = 0.0,
  mixing: np.ndarray | None = None,
  extra_noise_dims: int = 0,
  seed: int = 0,
):
  """A representation function: codes = scaled factors @ mixing + noise, plus pure-noise dims.

  Args:
    noise: standard deviation of Gaussian noise added to every code.
    mixing: [F, K] matrix applied to the scaled factors (identity when None).
    extra_noise_dims: latents appended that carry only N(0, 1) noise.
    seed: seed of the noise stream (the function is deterministic given its call sequence).
  """
  rng = np.random.default_rng(seed)

  def representation_fn(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    codes = x if mixing is None else x @ mixing
    codes = codes + noise * rng.standard_normal(codes.shape)
    if extra_noise_dims:
      codes = np.concatenate([codes, rng.standard_normal((len(x), extra_noise_dims))], axis=1)
    return codes

  return representation_fn


def random_code(num_latents: int, seed: int = 0):
  """A representation function ignoring its input: N(0, 1) codes of `num_latents` dims."""
  rng = np.random.default_rng(seed)
  return lambda images: rng.standard_normal((len(images), num_latents))


def rotation(dim: int, angle: float = np.pi / 4) -> np.ndarray:
  """[dim, dim] orthogonal matrix rotating each consecutive pair of axes by `angle` (mixes them)."""
  out = np.eye(dim)
  c, s = np.cos(angle), np.sin(angle)
  for i in range(0, dim - 1, 2):
    out[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
  return out
