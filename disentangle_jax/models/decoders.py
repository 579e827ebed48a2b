"""Decoders: codes [B, D] -> logits (or means) [B, *output_shape]."""

from __future__ import annotations

import math

import flax.linen as nn
import jax


class MLPDecoder(nn.Module):
  """Chen et al.'s dSprites decoder: Dense 1200 tanh x 3, Dense prod(output_shape).

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, 2018.
  """

  output_shape: tuple[int, ...] = (64, 64, 1)
  hidden: tuple[int, ...] = (1200, 1200, 1200)

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    h = code
    for width in self.hidden:
      h = nn.tanh(nn.Dense(width)(h))
    h = nn.Dense(math.prod(self.output_shape))(h)
    return h.reshape(code.shape[0], *self.output_shape)


class ConvDecoder(nn.Module):
  """disentanglement_lib's decoder: Dense 256, Dense 1024 -> 4x4x64, deconvs 64, 32, 32, C.

  ReLU after every layer but the last; transposed convolutions k4 s2 "SAME":
  4 -> 8 -> 16 -> 32 -> 64.

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
  """

  output_shape: tuple[int, int, int] = (64, 64, 1)

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(256)(code))
    h = nn.relu(nn.Dense(1024)(h)).reshape(code.shape[0], 4, 4, 64)
    for features in (64, 32, 32):
      h = nn.relu(nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")(h))
    return nn.ConvTranspose(self.output_shape[-1], (4, 4), strides=(2, 2), padding="SAME")(h)
