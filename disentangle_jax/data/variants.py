"""Colour and noisy dSprites, as disentanglement_lib defines them.

Both turn a binary single-channel observation x (1 on the shape, 0 elsewhere) into RGB, with
randomness drawn per observation at sampling time (not part of the factors):

  color-dSprites:  obs = x * colour,            colour ~ U[0.5, 1]^3 per observation
  noisy-dSprites:  obs = min(x + noise, 1),     noise ~ U[0, 1] per pixel and channel

so the shape stays white on a noise background.

References:
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
  Matthey et al., `dSprites: Disentanglement testing Sprites dataset
  <https://github.com/deepmind/dsprites-dataset>`_, 2017.
"""

from __future__ import annotations

import numpy as np

from disentangle_jax.data import dsprites, ground_truth


class _RGBVariant(ground_truth.GroundTruthData):
  """Wraps a binary single-channel ground-truth dataset and makes its observations RGB."""

  def __init__(self, base: ground_truth.GroundTruthData | None = None, **dsprites_kwargs):
    if base is None:
      base = dsprites.DSprites(**dsprites_kwargs)
    elif dsprites_kwargs:
      raise ValueError(f"pass either base or DSprites arguments, not both: {dsprites_kwargs}.")
    if base.observation_shape[-1] != 1:
      raise ValueError(
        f"{type(self).__name__} needs single-channel observations, base has "
        f"{base.observation_shape}."
      )
    self.base = base
    self.factor_names = base.factor_names
    self.factor_sizes = base.factor_sizes
    self.observation_shape = (*base.observation_shape[:-1], 3)

  def _base_observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The base's float32 [B, H, W, 1]; broadcasting against 3 channels makes it RGB."""
    return self.base.observations_from_factors(factors, rng)


class ColorDSprites(_RGBVariant):
  """dSprites with the shape in a random colour: float32 [B, 64, 64, 3].

  Each observation's white pixels are multiplied by an RGB colour whose channels are drawn
  uniformly from [0.5, 1], independently per observation and at sampling time.

  Args:
    base: binary single-channel dataset to colour; default `DSprites(**dsprites_kwargs)`.
    **dsprites_kwargs: arguments of `DSprites` (source, cache_dir, verify_cache).
  """

  def observations_from_factors(
    self, factors: np.ndarray, rng: ground_truth.RngLike = None
  ) -> np.ndarray:
    """Coloured observations.

    Args:
      factors: integer array [B, F].
      rng: `np.random.Generator` or int seed for the colours (required).

    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    rng = ground_truth.as_rng(rng, required=True, what="ColorDSprites observations")
    binary = self._base_observations(factors, rng)
    colour = rng.uniform(0.5, 1.0, size=(binary.shape[0], 1, 1, 3)).astype(np.float32)
    return binary * colour


class NoisyDSprites(_RGBVariant):
  """dSprites on a uniform-noise background: float32 [B, 64, 64, 3].

  Each pixel and channel gets noise ~ U[0, 1], drawn at sampling time; obs = min(x + noise, 1),
  so shape pixels stay 1.

  Args:
    base: binary single-channel dataset; default `DSprites(**dsprites_kwargs)`.
    **dsprites_kwargs: arguments of `DSprites` (source, cache_dir, verify_cache).
  """

  def observations_from_factors(
    self, factors: np.ndarray, rng: ground_truth.RngLike = None
  ) -> np.ndarray:
    """Noisy observations.

    Args:
      factors: integer array [B, F].
      rng: `np.random.Generator` or int seed for the noise (required).

    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    rng = ground_truth.as_rng(rng, required=True, what="NoisyDSprites observations")
    binary = self._base_observations(factors, rng)
    # In place: the noise array is the largest thing here (B x 64 x 64 x 3 floats).
    observations = rng.random((*binary.shape[:-1], 3), dtype=np.float32)
    observations += binary
    return np.minimum(observations, 1.0, out=observations)
