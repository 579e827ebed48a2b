"""Decoders: codes [B, D] -> logits [B, *output_shape] (Bernoulli logits or Gaussian means)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from disentangle_jax.models import conv_lowering


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
    lowering: how the transposed convolutions run: "auto" (on the CPU backend "onednn" for float32
      where oneDNN's kernels build, else "subpixel"; "flax" elsewhere), "onednn"
      (`conv_lowering.ConvTranspose` with oneDNN's convolutions as XLA custom calls), "subpixel"
      (`conv_lowering.ConvTranspose`: matrix products, sub-pixel gradients) or "flax" (plain
      `nn.ConvTranspose`). Same params and, up to float32 rounding, the same outputs and gradients
      every way.
    batch_chunk: with the sub-pixel kernels, examples per chunk when the network runs a chunk
      at a time (`conv_lowering.apply_in_chunks`; the backward pass keeps the small activations
      and recomputes the large ones): None picks `conv_lowering.NETWORK_CHUNK` (16) when it
      divides the batch well, 0 turns it off.
      Only the transposed convolutions are chunked: the dense layers run faster on the whole
      batch.
    from_features: take the [B, 4, 4, 64] output of the dense layers instead of codes (how the
      chunked path runs the transposed convolutions alone).

  References:
    Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
  """

  output_shape: tuple[int, int, int] = (64, 64, 1)
  lowering: str = "auto"
  batch_chunk: int | None = None
  from_features: bool = False

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    """Decodes a batch of codes.

    Args:
      code: [B, D] latent code; D = K, or K + sum_i K_i with JointVAE's relaxed one-hots appended.

    Returns:
      [B, 64, 64, C] logits.
    """
    if self.from_features:
      return self._deconvs(code)
    _check_code(code)
    if len(self.output_shape) != 3 or tuple(self.output_shape[:2]) != (64, 64):
      raise ValueError(
        f"ConvDecoder produces [B, 64, 64, C]; got output_shape {self.output_shape}."
      )
    h = nn.relu(nn.Dense(256)(code))
    h = nn.relu(nn.Dense(1024)(h)).reshape(code.shape[0], 4, 4, 64)
    chunk = conv_lowering.network_chunk(code.shape[0], self.batch_chunk)
    kernels = conv_lowering.resolve_lowering(self.lowering, h.dtype)
    if kernels == "subpixel" and chunk < code.shape[0] and conv_lowering.can_chunk(self):
      # Only the transposed convolutions run a chunk at a time; the dense layers take the
      # whole batch.
      return conv_lowering.apply_in_chunks(self, h, chunk, batch_chunk=0, from_features=True)
    return self._deconvs(h)

  def _deconvs(self, h: jax.Array) -> jax.Array:
    """The four transposed convolutions: [B, 4, 4, 64] -> [B, 64, 64, C] logits."""
    plain = conv_lowering.resolve_lowering(self.lowering, h.dtype) == "flax"
    deconv = nn.ConvTranspose if plain else conv_lowering.ConvTranspose
    # conv_lowering.ConvTranspose applies the ReLU itself (inside oneDNN's deconvolution where
    # that runs).
    for i, features in enumerate((64, 32, 32, self.output_shape[-1])):
      hidden = i < 3
      extra = {} if plain else {"lowering": self.lowering, "apply_relu": hidden}
      layer = deconv(
        features, (4, 4), strides=(2, 2), padding="SAME", name=f"ConvTranspose_{i}", **extra
      )
      h = nn.relu(layer(h)) if plain and hidden else layer(h)
    return h
