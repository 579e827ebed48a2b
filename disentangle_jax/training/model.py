"""A run's model, built once from the config: its Flax modules and its prior."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from disentangle_jax import models
from disentangle_jax.distributions import lp_nested
from disentangle_jax.training import config as config_lib


@dataclasses.dataclass(frozen=True)
class Networks:
  """Static description of a run's model: its Flax modules and its prior.

  Attributes:
    encoder: images [B, H, W, C] -> `models.EncoderOutput`.
    decoder: codes [B, code_dim] -> logits [B, H, W, C].
    discriminator: FactorVAE's discriminator, None for the other objectives.
    prior: the Lp-nested prior as the config's layout gives it (its exponents are the initial
      ones; training keeps the current ones in the params), None for the standard normal.
    latent_dim: K, the number of Gaussian latents.
    categorical_sizes: the number of categories of each discrete latent (JointVAE).
    observation_shape: shape of one observation, e.g. (64, 64, 1).
  """

  encoder: nn.Module
  decoder: nn.Module
  discriminator: nn.Module | None
  prior: lp_nested.LpNested | None
  latent_dim: int
  categorical_sizes: tuple[int, ...]
  observation_shape: tuple[int, ...]

  @property
  def prior_tree(self) -> lp_nested.LpNestedTree | None:
    return None if self.prior is None else self.prior.tree

  @property
  def code_dim(self) -> int:
    """The decoder's input size: K Gaussian latents plus the one-hot of each discrete latent."""
    return self.latent_dim + sum(self.categorical_sizes)


def build_networks(config: ml_collections.ConfigDict, observation_shape) -> Networks:
  """The modules and prior of `config` (the Lp-nested layout is parsed here, once)."""
  latent_dim = config.model.latent_dim
  categorical_sizes = tuple(int(k) for k in config.model.categorical_sizes)
  encoder_kwargs, decoder_kwargs = {}, {}
  if config.model.encoder == "mlp":
    encoder_kwargs["hidden"] = tuple(config.model.mlp_encoder_hidden)
  if config.model.decoder == "mlp":
    decoder_kwargs["hidden"] = tuple(config.model.mlp_decoder_hidden)
  encoder = models.make_encoder(
    config.model.encoder,
    latent_dim=latent_dim,
    categorical_sizes=categorical_sizes,
    conv_impl=config.model.conv_impl,
    **encoder_kwargs,
  )
  decoder = models.make_decoder(
    config.model.decoder,
    output_shape=tuple(observation_shape),
    conv_impl=config.model.conv_impl,
    **decoder_kwargs,
  )
  discriminator = models.FactorVAEDiscriminator() if config.objective.name == "factor_vae" else None
  prior = None
  if config.prior.name == "lp_nested":
    spec = config_lib.parse_layout(config.prior.layout)
    prior = lp_nested.LpNested.from_spec(spec, scale=config.prior.scale, event_size=latent_dim)
  return Networks(
    encoder,
    decoder,
    discriminator,
    prior,
    latent_dim,
    categorical_sizes,
    tuple(int(s) for s in observation_shape),
  )


def init_params(networks: Networks, key: jax.Array) -> tuple[dict[str, Any], Any]:
  """(VAE params, discriminator params or {}) at initialisation.

  The VAE params are {"encoder", "decoder"} and, with an Lp-nested prior, {"prior":
  {"raw_exponents"}}: the exponents, learned or not, as unconstrained values (p = softplus(raw)).
  """
  enc_key, dec_key, disc_key = jax.random.split(key, 3)
  x = jnp.zeros((1, *networks.observation_shape), jnp.float32)
  params = {
    "encoder": networks.encoder.init(enc_key, x),
    "decoder": networks.decoder.init(dec_key, jnp.zeros((1, networks.code_dim))),
  }
  if networks.prior is not None:
    raw = lp_nested.exponents_to_unconstrained(networks.prior.exponents)
    params["prior"] = {"raw_exponents": jnp.asarray(raw, jnp.float32)}
  disc_params = {}
  if networks.discriminator is not None:
    disc_params = networks.discriminator.init(disc_key, jnp.zeros((1, networks.latent_dim)))
  return params, disc_params


def prior_exponents(params: dict[str, Any]) -> jax.Array:
  """The Lp-nested prior's current exponents [num_nodes] from the params."""
  return lp_nested.exponents_from_unconstrained(params["prior"]["raw_exponents"])
