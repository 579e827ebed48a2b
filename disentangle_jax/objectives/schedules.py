"""Capacity and annealing schedules, as optax schedules (step -> value)."""

import math
from collections.abc import Sequence

import jax.numpy as jnp
import optax


def capacity_schedule(c_min: float, c_max: float, num_steps: int) -> optax.Schedule:
  """Linear capacity C(t) from c_min to c_max nats over num_steps, then constant.

  The capacity-annealed beta-VAE penalises gamma * |KL - C(t)|; dSprites uses c_max = 25 nats
  over 100k steps (Burgess et al.), JointVAE's continuous channel 0 -> 40 nats over 300k.

  References:
    Burgess et al., `Understanding disentangling in beta-VAE <https://arxiv.org/abs/1804.03599>`_,
    2018.
  """
  if num_steps <= 0:
    raise ValueError(f"num_steps must be > 0, got {num_steps}.")
  return optax.linear_schedule(init_value=c_min, end_value=c_max, transition_steps=num_steps)


def discrete_capacity_schedule(
  c_min: float, c_max: float, num_steps: int, category_sizes: Sequence[int]
) -> optax.Schedule:
  """JointVAE's discrete capacity: linear from c_min to c_max, clamped to sum_i log K_i.

  A categorical latent with K_i classes carries at most log K_i nats (its KL to the uniform prior
  is at most log K_i), so a larger capacity could never be met.

  References:
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, NeurIPS 2018.
  """
  if not category_sizes or any(k < 2 for k in category_sizes):
    raise ValueError(f"category_sizes must be a non-empty list of ints >= 2, got {category_sizes}.")
  ceiling = sum(math.log(k) for k in category_sizes)
  linear = capacity_schedule(c_min, c_max, num_steps)
  return lambda step: jnp.minimum(linear(step), ceiling)


def kl_warmup_schedule(beta: float, num_steps: int) -> optax.Schedule:
  """KL weight rising linearly from 0 to beta over num_steps (KL annealing / warm-up).

  References:
    Bowman et al., `Generating Sentences from a Continuous Space
    <https://arxiv.org/abs/1511.06349>`_, 2016.
  """
  return capacity_schedule(0.0, beta, num_steps)
