"""Encoders: images [B, H, W, C] -> Gaussian posterior parameters and categorical logits."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from disentangle_jax.models import conv_lowering


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
    lowering: how the convolutions run: "auto" (on the CPU backend "onednn" for float32
      where oneDNN's kernels build, else "subpixel"; "flax" elsewhere), "onednn"
      (`conv_lowering.Conv` with oneDNN's convolutions as XLA custom calls), "subpixel"
      (`conv_lowering.Conv`: matrix products, sub-pixel gradients) or "flax" (plain
      `nn.Conv`). Same params and, up to float32 rounding, the same outputs and gradients
      every way.
    batch_chunk: with the sub-pixel kernels, examples per chunk when the network runs a chunk
      at a time (`conv_lowering.apply_in_chunks`; the backward pass keeps the small activations
      and recomputes the large ones): None picks `conv_lowering.NETWORK_CHUNK` (16) when it
      divides the batch well, 0 turns it off.
      Only the convolutions are chunked: the dense layers run faster on the whole batch.
    convs_only: return the flattened convolution features [B, 1024] instead of the posterior
      (how the chunked path runs the convolutions alone).

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019;
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, 2018 (categorical heads).
  """

  latent_dim: int
  categorical_sizes: tuple[int, ...] = ()
  kernel_sizes: tuple[int, int, int, int] = (4, 4, 2, 2)
  lowering: str = "auto"
  batch_chunk: int | None = None
  convs_only: bool = False

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
    kernels = conv_lowering.resolve_lowering(self.lowering, jnp.result_type(x, jnp.float32))
    plain = kernels == "flax"
    chunk = conv_lowering.network_chunk(x.shape[0], self.batch_chunk)
    if kernels == "subpixel" and chunk < x.shape[0] and conv_lowering.can_chunk(self):
      # Only the convolutions run a chunk at a time; the dense layers take the whole batch.
      h = conv_lowering.apply_in_chunks(self, x, chunk, batch_chunk=0, convs_only=True)
    else:
      h = self._convs(x, plain)
    if self.convs_only:
      return h
    h = nn.relu(nn.Dense(256)(h))
    return _Heads(self.latent_dim, tuple(self.categorical_sizes))(h)

  def _convs(self, x: jax.Array, plain: bool) -> jax.Array:
    """The four convolutions (ReLU after each): [B, 64, 64, C] -> flattened [B, 4*4*64]."""
    # conv_lowering.Conv applies the ReLU itself (inside oneDNN's convolution where that runs).
    conv = nn.Conv if plain else conv_lowering.Conv
    extra = {} if plain else {"lowering": self.lowering, "apply_relu": True}
    h = x
    for i, (features, k) in enumerate(zip((32, 32, 64, 64), self.kernel_sizes, strict=True)):
      layer = conv(features, (k, k), strides=(2, 2), padding="SAME", name=f"Conv_{i}", **extra)
      h = nn.relu(layer(h)) if plain else layer(h)
    return h.reshape(h.shape[0], -1)
