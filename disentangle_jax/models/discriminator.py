"""FactorVAE's discriminator: tells samples of q(z) from dimension-permuted samples."""

from __future__ import annotations

import flax.linen as nn
import jax


class FactorVAEDiscriminator(nn.Module):
  """MLP of `num_layers` x `hidden` units with leaky ReLU (slope 0.2) and 2 output logits.

  Architecture: [B, K] -> (Dense `hidden`, leaky ReLU 0.2) x `num_layers` -> Dense 2.
  Class 0: a sample of q(z); class 1: a sample of prod_k q(z_k) (`permute_dims`), so
  logit_0 - logit_1 estimates log q(z) / prod_k q(z_k).

  Attributes:
    hidden: width of each hidden layer.
    num_layers: number of hidden layers.

  References:
    Kim & Mnih, `Disentangling by Factorising <https://arxiv.org/abs/1802.05983>`_, 2018.
  """

  hidden: int = 1000
  num_layers: int = 6

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Classifies samples.

    Args:
      z: [B, K] latent samples.

    Returns:
      [B, 2] logits.
    """
    if z.ndim != 2:
      raise ValueError(f"FactorVAEDiscriminator takes samples [B, K]; got shape {z.shape}.")
    h = z
    for _ in range(self.num_layers):
      h = nn.leaky_relu(nn.Dense(self.hidden)(h), negative_slope=0.2)
    return nn.Dense(2)(h)
