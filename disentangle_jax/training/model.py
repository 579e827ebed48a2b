"""The pieces a train step needs, built from the config: networks, prior, optimizers."""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from disentangle_jax import models
from disentangle_jax.distributions import lp_nested


@dataclasses.dataclass(frozen=True)
class Networks:
  """Static description of a run's model: its Flax modules and the prior's tree structure."""

  encoder: nn.Module
  decoder: nn.Module
  discriminator: nn.Module | None  # FactorVAE only
  prior_tree: lp_nested.LpNestedTree | None  # None: the standard normal prior
  latent_dim: int
  categorical_sizes: tuple[int, ...]

  @property
  def code_dim(self) -> int:
    return self.latent_dim + sum(self.categorical_sizes)


def parse_layout(layout: str, latent_dim: int) -> tuple[lp_nested.LpNestedTree, tuple[float, ...]]:
  """Parses config.prior.layout (a Python literal) and checks it against the latent size."""
  if not layout:
    raise ValueError(
      "prior.name is 'lp_nested' but prior.layout is empty: give a tree such as "
      '--config.prior.layout="[2.0, [(2.1, 5), (2.1, 5)]]".'
    )
  try:
    spec = ast.literal_eval(layout)
  except (ValueError, SyntaxError) as error:
    raise ValueError(f"prior.layout {layout!r} is not a Python literal: {error}") from None
  prior = lp_nested.LpNested.from_spec(spec, event_size=latent_dim)
  return prior.tree, tuple(float(e) for e in prior.exponents)


def build_networks(config: ml_collections.ConfigDict, observation_shape) -> Networks:
  latent_dim = config.model.latent_dim
  categorical_sizes = tuple(config.model.categorical_sizes)
  if config.objective.name == "joint_vae" and not categorical_sizes:
    raise ValueError("objective 'joint_vae' needs model.categorical_sizes, e.g. (3,).")
  encoder = models.make_encoder(
    config.model.encoder, latent_dim=latent_dim, categorical_sizes=categorical_sizes
  )
  decoder = models.make_decoder(config.model.decoder, output_shape=tuple(observation_shape))
  discriminator = models.FactorVAEDiscriminator() if config.objective.name == "factor_vae" else None
  tree = None
  if config.prior.name == "lp_nested":
    tree, _ = parse_layout(config.prior.layout, latent_dim)
  return Networks(encoder, decoder, discriminator, tree, latent_dim, categorical_sizes)


def init_params(
  config: ml_collections.ConfigDict, networks: Networks, key: jax.Array, observation_shape
) -> tuple[dict[str, Any], Any]:
  """(VAE params, discriminator params or {}) at initialisation."""
  enc_key, dec_key, disc_key = jax.random.split(key, 3)
  x = jnp.zeros((1, *observation_shape), jnp.float32)
  params = {
    "encoder": networks.encoder.init(enc_key, x),
    "decoder": networks.decoder.init(dec_key, jnp.zeros((1, networks.code_dim))),
  }
  if networks.prior_tree is not None:
    _, exponents = parse_layout(config.prior.layout, networks.latent_dim)
    # Learned or not, exponents live in the params as unconstrained values (p = softplus(raw)).
    params["prior"] = {"raw_exponents": lp_nested.exponents_to_unconstrained(exponents)}
  disc_params = {}
  if networks.discriminator is not None:
    disc_params = networks.discriminator.init(disc_key, jnp.zeros((1, networks.latent_dim)))
  return params, disc_params


def prior_exponents(params: dict[str, Any]) -> jax.Array:
  return lp_nested.exponents_from_unconstrained(params["prior"]["raw_exponents"])


def make_optimizer(config: ml_collections.ConfigDict, params: dict[str, Any]):
  """Adam for the networks; the prior's exponents get their own Adam, or are frozen."""
  model_tx = optax.adam(config.learning_rate)
  if "prior" not in params:
    return model_tx
  prior_tx = (
    optax.adam(config.prior.learning_rate) if config.prior.learn_exponents else optax.set_to_zero()
  )
  labels = {name: ("prior" if name == "prior" else "model") for name in params}
  labels = {
    name: jax.tree.map(lambda _, label=label: label, params[name]) for name, label in labels.items()
  }
  return optax.multi_transform({"model": model_tx, "prior": prior_tx}, labels)


def make_discriminator_optimizer(config: ml_collections.ConfigDict):
  d = config.discriminator
  return optax.adam(d.learning_rate, b1=d.b1, b2=d.b2)
