"""Encoders and decoders chosen by name from the config (`config.model.encoder`/`decoder`)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from disentangle_jax.models.decoders import ConvDecoder, MLPDecoder
from disentangle_jax.models.encoders import ConvEncoder, MLPEncoder

ENCODERS = {
  "mlp": MLPEncoder,
  "conv": ConvEncoder,
  "conv_k4": functools.partial(ConvEncoder, kernel_sizes=(4, 4, 4, 4)),
}
DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder}


def make_encoder(name: str, *, latent_dim: int, categorical_sizes=(), **kwargs) -> nn.Module:
  """The encoder called `name` ("mlp", "conv" or "conv_k4")."""
  if name not in ENCODERS:
    raise ValueError(f"Unknown encoder {name!r}; valid: {', '.join(ENCODERS)}.")
  return ENCODERS[name](latent_dim=latent_dim, categorical_sizes=tuple(categorical_sizes), **kwargs)


def make_decoder(name: str, *, output_shape, **kwargs) -> nn.Module:
  """The decoder called `name` ("mlp" or "conv") producing [B, *output_shape]."""
  if name not in DECODERS:
    raise ValueError(f"Unknown decoder {name!r}; valid: {', '.join(DECODERS)}.")
  return DECODERS[name](output_shape=tuple(output_shape), **kwargs)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(leaf.size for leaf in jax.tree.leaves(params))
