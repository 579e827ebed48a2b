"""Decoders: codes [B, D] -> logits [B, *output_shape] (Bernoulli logits or Gaussian means)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from disentangle_jax.models import layers


def _check_code(code: jax.Array) -> None:
  if code.ndim != 2:
    raise ValueError(f"Decoders take codes [B, D]; got shape {code.shape}.")


class MLPDecoder(nn.Module):
  """Chen et al.'s dSprites decoder: Dense 1200 tanh x 3, Dense prod(output_shape), reshape.

  Architecture: [B, D] -> Dense `hidden[0]` tanh -> ... -> Dense prod(output_shape) (no
  activation: logits) -> [B, *output_shape].

  Attributes:
    output_shape: shape of one observation, e.g. (64, 64, 1).
    hidden: widths of the hidden tanh layers.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, 2018.
  """

  output_shape: tuple[int, ...] = (64, 64, 1)
  hidden: tuple[int, ...] = (1200, 1200, 1200)

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    """Decodes a batch of codes.

    Args:
      code: [B, D] latent code; D = K, or K + sum_i K_i with JointVAE's relaxed one-hots appended.

    Returns:
      [B, *output_shape] logits.
    """
    _check_code(code)
    h = code
    for width in self.hidden:
      h = nn.tanh(nn.Dense(width)(h))
    h = nn.Dense(math.prod(self.output_shape))(h)
    return h.reshape(code.shape[0], *self.output_shape)


class ConvDecoder(nn.Module):
  """disentanglement_lib's decoder: Dense 256, Dense 1024 -> 4x4x64, deconvs 64, 32, 32, C.

  Architecture: [B, D] -> Dense 256 ReLU -> Dense 1024 ReLU -> reshape [B, 4, 4, 64] ->
  ConvTranspose 64, 32, 32 (k4 s2 "SAME", ReLU) -> ConvTranspose C (k4 s2 "SAME", logits).
  Each stride-2 transposed convolution doubles the size: 4 -> 8 -> 16 -> 32 -> 64.

  Attributes:
    output_shape: (64, 64, C); only the channel count is free.
    conv_transpose: the transposed convolution layer class: `layers.ConvTranspose` (default),
      `nn.ConvTranspose` or another drop-in with their parameters (e.g.
      `disentangle_jax.cpu_conv.ConvTranspose`).

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
  """

  output_shape: tuple[int, int, int] = (64, 64, 1)
  conv_transpose: Any = layers.ConvTranspose

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    """Decodes a batch of codes.

    Args:
      code: [B, D] latent code; D = K, or K + sum_i K_i with JointVAE's relaxed one-hots appended.

    Returns:
      [B, 64, 64, C] logits.
    """
    _check_code(code)
    if len(self.output_shape) != 3 or tuple(self.output_shape[:2]) != (64, 64):
      raise ValueError(
        f"ConvDecoder produces [B, 64, 64, C]; got output_shape {self.output_shape}."
      )
    h = nn.relu(nn.Dense(256)(code))
    h = nn.relu(nn.Dense(1024)(h)).reshape(code.shape[0], 4, 4, 64)
    for i, features in enumerate((64, 32, 32, self.output_shape[-1])):
      layer = self.conv_transpose(
        features, (4, 4), strides=(2, 2), padding="SAME", name=f"ConvTranspose_{i}"
      )
      h = layer(h) if i == 3 else nn.relu(layer(h))
    return h
