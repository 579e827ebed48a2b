"""Encoders and decoders chosen by name from the config (`config.model.encoder`/`decoder`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from disentangle_jax.models import layers
from disentangle_jax.models.decoders import ConvDecoder, MLPDecoder
from disentangle_jax.models.encoders import ConvEncoder, MLPEncoder

ENCODERS = {
  "mlp": MLPEncoder,
  "conv": ConvEncoder,
  "conv_k4": functools.partial(ConvEncoder, kernel_sizes=(4, 4, 4, 4)),
}
DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder}
# How the conv nets' convolutions run: "flax" (default, any backend) are Flax layers whose
# stride-2 convolutions run as stride-1 ones (`models/layers.py`: XLA:CPU is slow on the dilated
# convolutions of their gradients); "linen" are flax.linen's nn.Conv / nn.ConvTranspose as they
# are (same parameters and outputs); "onednn" runs oneDNN's kernels on CPU
# (`disentangle_jax.cpu_conv`, opt-in: pip install -e ".[cpu-conv]").
CONV_IMPLS = ("flax", "linen", "onednn")


def conv_layers(conv_impl: str) -> tuple[Any, Any]:
  """(convolution class, transposed convolution class) of `conv_impl` (one of `CONV_IMPLS`).

  Raises:
    ValueError: for an unknown name.
    disentangle_jax.cpu_conv.Unavailable: for "onednn" where its kernels cannot be built or
      loaded (the message says why).
  """
  if conv_impl == "flax":
    return layers.Conv, layers.ConvTranspose
  if conv_impl == "linen":
    return nn.Conv, nn.ConvTranspose
  if conv_impl == "onednn":
    from disentangle_jax import cpu_conv  # opt-in: its kernels build with g++ on first use

    cpu_conv.load()
    return cpu_conv.Conv, cpu_conv.ConvTranspose
  raise ValueError(f"Unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}.")


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
  # Config lists become tuples so module attributes stay hashable.
  return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def make_encoder(
  name: str,
  *,
  latent_dim: int,
  categorical_sizes: Sequence[int] = (),
  conv_impl: str = "flax",
  **kwargs,
) -> nn.Module:
  """The encoder called `name`: "mlp", "conv" or "conv_k4" (all-k4 convolutions).

  Args:
    name: key of `ENCODERS`.
    latent_dim: K, the number of Gaussian latents.
    categorical_sizes: the number of categories of each categorical latent (JointVAE).
    conv_impl: how a conv encoder's convolutions run (`CONV_IMPLS`); ignored by "mlp".
    **kwargs: further attributes of the module, e.g. `hidden` for "mlp".

  Returns:
    A Flax module mapping [B, 64, 64, C] images to an `EncoderOutput`.

  Raises:
    ValueError: for an unknown name or conv_impl.
  """
  if name not in ENCODERS:
    raise ValueError(f"Unknown encoder {name!r}; valid names: {', '.join(ENCODERS)}.")
  if name != "mlp":
    kwargs["conv"] = conv_layers(conv_impl)[0]
  sizes = tuple(int(s) for s in categorical_sizes)
  return ENCODERS[name](latent_dim=latent_dim, categorical_sizes=sizes, **_tuples(kwargs))


def make_decoder(
  name: str, *, output_shape: Sequence[int], conv_impl: str = "flax", **kwargs
) -> nn.Module:
  """The decoder called `name`: "mlp" or "conv".

  Args:
    name: key of `DECODERS`.
    output_shape: shape of one observation, e.g. (64, 64, 1).
    conv_impl: how a conv decoder's transposed convolutions run (`CONV_IMPLS`).
    **kwargs: further attributes of the module, e.g. `hidden` for "mlp".

  Returns:
    A Flax module mapping [B, D] codes to [B, *output_shape] logits.

  Raises:
    ValueError: for an unknown name or conv_impl.
  """
  if name not in DECODERS:
    raise ValueError(f"Unknown decoder {name!r}; valid names: {', '.join(DECODERS)}.")
  if name != "mlp":
    kwargs["conv_transpose"] = conv_layers(conv_impl)[1]
  shape = tuple(int(s) for s in output_shape)
  return DECODERS[name](output_shape=shape, **_tuples(kwargs))


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree (e.g. the result of `module.init`)."""
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))
