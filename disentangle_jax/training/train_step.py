"""TrainState and the data-parallel train step: (state, batch, rng) -> (state, metrics)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from disentangle_jax import objectives as obj
from disentangle_jax.training.losses import LossFn


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step (and checkpoints).

  The per-step PRNG key is fold_in(seed key, step), and the data order is a function of
  (seed, step), so step, params and optimizer states are the whole of a run's state.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  disc_params: Any  # FactorVAE's discriminator; {} otherwise
  disc_opt_state: Any


def create_train_state(params, disc_params, tx, disc_tx) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    disc_params=disc_params,
    disc_opt_state=disc_tx.init(disc_params) if disc_params else {},
  )


def all_finite(tree) -> jax.Array:
  """Whether every element of a pytree of float arrays is finite, as a bool scalar.

  `all(isfinite(leaf))` per leaf. A float sum per leaf (NaN and inf survive it) reads the same
  memory, but XLA:CPU rewrites large float sums into tree reductions that ran slower inside
  the train step (BUILD_NOTES, when this check ran every step).
  """
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def state_is_finite(state: TrainState) -> jax.Array:
  """Whether every float in the parameters and optimizer states is finite, as a bool scalar.

  The training loop runs this once per logging window (vmapped over seeds for a multi-seed
  state) instead of checking every step's gradients: one pass over the parameters per window
  rather than per step, which cost 8-12% of the MLP step at batch 64 (BUILD_NOTES). A non-finite
  gradient cannot hide from it: Adam's moments are running averages of the gradients
  (m' = b1 m + (1 - b1) g, b1 < 1), so an inf or NaN gradient element leaves an inf or NaN in
  the moments, and a NaN in the parameters it updates. (Gradients of frozen prior exponents,
  which `optax.set_to_zero` drops, update nothing and are not seen.)
  """
  trees = (state.params, state.opt_state, state.disc_params, state.disc_opt_state)
  floats = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(x.dtype, jnp.floating)]
  return all_finite(floats) if floats else jnp.bool_(True)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, disc_tx, discriminator=None):
  """Builds the pure train step.

  One step: gradients of the objective with respect to the VAE's parameters (and the prior's
  exponents), an optimizer update, and for FactorVAE a discriminator update on the step's codes
  (stopped gradient) against their dimension-permuted copies.
  The returned metrics include "finite": whether the step's loss (and the discriminator's) was
  finite. Gradients are not checked here but through the parameters they update
  (`state_is_finite`, once per logging window).
  """

  def train_step(state: TrainState, batch, rng: jax.Array):
    step_key = jax.random.fold_in(rng, state.step)
    vae_key, perm_key = jax.random.split(step_key)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (terms, z)), grads = grad_fn(state.params, state.disc_params, batch, vae_key, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss)
    metrics = {"loss": loss, **terms}

    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if discriminator is not None:
      z = jax.lax.stop_gradient(z)

      def disc_loss_fn(p):
        logits_joint = discriminator.apply(p, z)
        logits_perm = discriminator.apply(p, obj.permute_dims(perm_key, z))
        return obj.factor_vae_discriminator_loss(logits_joint, logits_perm)

      (_, disc_terms), disc_grads = jax.value_and_grad(disc_loss_fn, has_aux=True)(disc_params)
      disc_updates, disc_opt_state = disc_tx.update(disc_grads, disc_opt_state, disc_params)
      disc_params = optax.apply_updates(disc_params, disc_updates)
      metrics.update(disc_terms)
      finite &= jnp.isfinite(disc_terms["discriminator_loss"])

    metrics["finite"] = finite
    new_state = TrainState(state.step + 1, params, opt_state, disc_params, disc_opt_state)
    return new_state, metrics

  return train_step


def jit_train_step(train_step, mesh: Mesh, state: TrainState, axis_name: str = "data"):
  """jax.jit with the batch split over the mesh's data axis and the state replicated.

  XLA's partitioner inserts the cross-device gradient reduction, so the same code runs on one
  CPU, one GPU or a pod slice; the state's buffers are donated (updated in place).
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  return jax.jit(
    train_step,
    in_shardings=(state_sharding, batch_sharding, replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
  )
