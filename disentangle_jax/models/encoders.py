"""Encoders: images [B, 64, 64, C] -> Gaussian posterior (and categorical logits)."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class EncoderOutput(NamedTuple):
  """mean, log_var: [B, K]; logits: one [B, K_i] array per categorical latent (may be empty)."""

  mean: jax.Array
  log_var: jax.Array
  logits: tuple[jax.Array, ...]


class _Heads(nn.Module):
  """Dense heads from features to (mean, log_var) and to each categorical latent's logits."""

  latent_dim: int
  categorical_sizes: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, features: jax.Array) -> EncoderOutput:
    mean, log_var = jnp.split(nn.Dense(2 * self.latent_dim, name="gaussian")(features), 2, -1)
    logits = tuple(
      nn.Dense(size, name=f"categorical_{i}")(features)
      for i, size in enumerate(self.categorical_sizes)
    )
    return EncoderOutput(mean, log_var, logits)


class MLPEncoder(nn.Module):
  """Chen et al.'s dSprites encoder: flatten, Dense 1200 ReLU, Dense 1200 ReLU, heads.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, 2018.
  """

  latent_dim: int
  hidden: tuple[int, ...] = (1200, 1200)
  categorical_sizes: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> EncoderOutput:
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return _Heads(self.latent_dim, self.categorical_sizes)(h)


class ConvEncoder(nn.Module):
  """disentanglement_lib's encoder: Conv 32 k4 s2, 32 k4 s2, 64 k2 s2, 64 k2 s2, Dense 256.

  All ReLU, "SAME" padding: 64 -> 32 -> 16 -> 8 -> 4, then 4*4*64 = 1024 features.
  `kernel_sizes=(4, 4, 4, 4)` is the all-k4 variant many reimplementations use.

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
  """

  latent_dim: int
  categorical_sizes: tuple[int, ...] = ()
  kernel_sizes: tuple[int, int, int, int] = (4, 4, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array) -> EncoderOutput:
    h = x
    for features, k in zip((32, 32, 64, 64), self.kernel_sizes, strict=True):
      h = nn.relu(nn.Conv(features, (k, k), strides=(2, 2), padding="SAME")(h))
    h = nn.relu(nn.Dense(256)(h.reshape(h.shape[0], -1)))
    return _Heads(self.latent_dim, self.categorical_sizes)(h)
