"""Encoders: images [B, H, W, C] -> Gaussian posterior parameters and categorical logits."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from disentangle_jax.models import layers


class EncoderOutput(NamedTuple):
  """Posterior parameters from an encoder.

  Attributes:
    mean: [B, K] means of q(z|x).
    log_var: [B, K] log variances of q(z|x).
    logits: one [B, K_i] array of unnormalised log-probabilities per categorical latent
      (JointVAE); the empty tuple when there are none.
  """

  mean: jax.Array
  log_var: jax.Array
  logits: tuple[jax.Array, ...]


def _check_images(x: jax.Array) -> None:
  if x.ndim != 4:
    raise ValueError(f"Encoders take images [B, H, W, C]; got shape {x.shape}.")


class _Heads(nn.Module):
  """Dense heads: features -> (mean, log_var) and each categorical latent's logits.

  One Dense of 2K units gives the Gaussian: its first K outputs are the mean, the last K the
  log variance. Each categorical latent i gets its own Dense of K_i units.
  """

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

  Architecture: [B, 64, 64, 1] -> flatten [B, 4096] -> Dense `hidden[0]` ReLU -> ... ->
  Dense 2K (mean, log_var) and one Dense K_i per categorical latent.

  Attributes:
    latent_dim: K, the number of continuous (Gaussian) latents.
    hidden: widths of the hidden ReLU layers.
    categorical_sizes: K_i, the number of categories of each categorical latent.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, 2018;
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, 2018 (categorical heads).
  """

  latent_dim: int
  hidden: tuple[int, ...] = (1200, 1200)
  categorical_sizes: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> EncoderOutput:
    """Encodes a batch.

    Args:
      x: [B, H, W, C] images in [0, 1].

    Returns:
      `EncoderOutput` with mean and log_var [B, K] and logits ([B, K_i], ...).
    """
    _check_images(x)
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return _Heads(self.latent_dim, tuple(self.categorical_sizes))(h)


class ConvEncoder(nn.Module):
  """disentanglement_lib's encoder: Conv 32 k4 s2, 32 k4 s2, 64 k2 s2, 64 k2 s2, Dense 256.

  Architecture: every layer ReLU, convolutions stride 2 with "SAME" padding, so the feature maps
  go 64 -> 32 -> 16 -> 8 -> 4; flatten 4*4*64 = 1024 -> Dense 256 ReLU -> Dense 2K (mean,
  log_var) and one Dense K_i per categorical latent. `kernel_sizes=(4, 4, 4, 4)` is the all-k4
  variant many reimplementations use (same shapes, more weights).

  Attributes:
    latent_dim: K, the number of continuous (Gaussian) latents.
    categorical_sizes: K_i, the number of categories of each categorical latent.
    kernel_sizes: the four convolutions' kernel sizes.
    conv: the convolution layer class: `layers.Conv` (default), `nn.Conv` or another drop-in
      with their parameters (e.g. `disentangle_jax.cpu_conv.Conv`, oneDNN's kernels on CPU).

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019;
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, 2018 (categorical heads).
  """

  latent_dim: int
  categorical_sizes: tuple[int, ...] = ()
  kernel_sizes: tuple[int, int, int, int] = (4, 4, 2, 2)
  conv: Any = layers.Conv

  @nn.compact
  def __call__(self, x: jax.Array) -> EncoderOutput:
    """Encodes a batch.

    Args:
      x: [B, 64, 64, C] images in [0, 1].

    Returns:
      `EncoderOutput` with mean and log_var [B, K] and logits ([B, K_i], ...).
    """
    _check_images(x)
    if len(self.kernel_sizes) != 4:
      raise ValueError(f"ConvEncoder needs 4 kernel sizes; got {self.kernel_sizes}.")
    h = x
    for i, (features, k) in enumerate(zip((32, 32, 64, 64), self.kernel_sizes, strict=True)):
      h = nn.relu(self.conv(features, (k, k), strides=(2, 2), padding="SAME", name=f"Conv_{i}")(h))
    h = nn.relu(nn.Dense(256)(h.reshape(h.shape[0], -1)))
    return _Heads(self.latent_dim, tuple(self.categorical_sizes))(h)
