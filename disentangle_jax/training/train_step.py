"""The train state, its one builder, and the pure train step.

  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  state = trainer.init_state(seed=0)                 # or init_states(seeds): stacked [M, ...]
  step = jit_train_step(trainer.train_step, mesh, state)
  state, metrics = step(state, batch, step_rng(seed=0))

The training loop, multi-seed runs, evaluation and the benchmarks all build their state here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from disentangle_jax import objectives as obj
from disentangle_jax.training import config as config_lib
from disentangle_jax.training.losses import LossFn, make_loss_fn
from disentangle_jax.training.model import Networks, build_networks, init_params


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step (and checkpoints).

  The per-step PRNG key is fold_in(step_rng(seed), step) and the data order a function of
  (seed, step), so these fields are the whole of a run's state.

  Attributes:
    step: int32 scalar, steps taken.
    params: {"encoder", "decoder"[, "prior"]}.
    opt_state: the optimizer state; the learning rate is in it (`optax.inject_hyperparams`).
    disc_params, disc_opt_state: FactorVAE's discriminator and its Adam; {} otherwise.
    hparams: the objective's hyperparameters as float32 scalars (`config.objective_hparams`).
    alive: bool scalar; False once the model diverged in a multi-model program, whose step
      then keeps its last finite state (`multi_model.make_multi_model_step`).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  disc_params: Any
  disc_opt_state: Any
  hparams: dict[str, jax.Array]
  alive: jax.Array


def make_optimizers(
  config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(VAE optimizer, discriminator optimizer) of the config.

  Adam for the networks, with the learning rate in its state (`optax.inject_hyperparams`), so
  models that differ in it share one program; the Lp-nested prior's exponents get their own
  Adam (`prior.learning_rate`), or are frozen. FactorVAE's discriminator: Adam with its section's
  settings; the identity for the other objectives.
  """
  model_tx = optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)
  if config.prior.name == "lp_nested":
    prior_tx = (
      optax.adam(config.prior.learning_rate)
      if config.prior.learn_exponents
      else optax.set_to_zero()
    )

    def labels(params):
      return {
        name: jax.tree.map(lambda _, n=name: "prior" if n == "prior" else "model", tree)
        for name, tree in params.items()
      }

    tx = optax.multi_transform({"model": model_tx, "prior": prior_tx}, labels)
  else:
    tx = model_tx
  if config.objective.name != "factor_vae":
    return tx, optax.identity()
  d = config.objective.factor_vae.discriminator
  return tx, optax.adam(d.learning_rate, b1=d.b1, b2=d.b2)


def all_finite(tree) -> jax.Array:
  """Whether every element of a pytree of float arrays is finite, as a bool scalar."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.bool_(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def state_is_finite(state: TrainState) -> jax.Array:
  """Whether every float in the parameters and optimizer states is finite, as a bool scalar.

  The training loop runs this once per logging window rather than checking every step's
  gradients. A non-finite gradient cannot hide from it: Adam's moments are running averages of
  the gradients (m' = b1 m + (1 - b1) g, b1 < 1), so an inf or NaN gradient element leaves an
  inf or NaN in the moments, and a NaN in the parameters it updates. (Gradients of frozen prior
  exponents, which `optax.set_to_zero` drops, update nothing and are not seen.)
  """
  trees = (state.params, state.opt_state, state.disc_params, state.disc_opt_state)
  return all_finite([x for x in jax.tree.leaves(trees) if jnp.issubdtype(x.dtype, jnp.floating)])


def make_train_step(
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  disc_tx: optax.GradientTransformation,
  discriminator=None,
) -> Callable:
  """Builds the pure train step `(state, batch, rng) -> (state, metrics)`.

  One step: gradients of the objective with respect to the VAE's parameters (and the prior's
  exponents), an optimizer update, and for FactorVAE a discriminator update on the step's codes
  (stopped gradient) against their dimension-permuted copies. The metrics are the loss, every
  term, and "finite": whether the step's loss (and the discriminator's) was finite. Gradients
  are checked through the parameters they update (`state_is_finite`, once per logging window).
  """

  def train_step(state: TrainState, batch, rng: jax.Array):
    step_key = jax.random.fold_in(rng, state.step)
    vae_key, perm_key = jax.random.split(step_key)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (terms, z)), grads = grad_fn(
      state.params, state.disc_params, state.hparams, batch, vae_key, state.step
    )
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
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      disc_params=disc_params,
      disc_opt_state=disc_opt_state,
    )
    return new_state, metrics

  return train_step


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Everything static a run needs: its networks, optimizers, hyperparameters and pure step.

  Attributes:
    networks: the modules and prior (`model.build_networks`).
    tx, disc_tx: the optimizers (`make_optimizers`).
    hparams: the objective's hyperparameters from the config (`config.objective_hparams`).
    loss_fn: `(params, disc_params, hparams, batch, rng, step) -> (loss, (terms, z))`.
    train_step: the pure `(state, batch, rng) -> (state, metrics)`.
  """

  networks: Networks
  tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation
  hparams: dict[str, float]
  loss_fn: LossFn
  train_step: Callable

  def init_state(
    self,
    seed: int,
    hparams: dict[str, float] | None = None,
    learning_rate: float | None = None,
  ) -> TrainState:
    """The initial state of a model: params from `jax.random.key(seed)`.

    Args:
      seed: the model's seed.
      hparams: the objective's hyperparameters; default the config's (`self.hparams`).
      learning_rate: the networks' learning rate; default the config's.
    """
    params, disc_params = init_params(self.networks, jax.random.key(seed))
    opt_state = self.tx.init(params)
    if learning_rate is not None:
      opt_state = optax.tree_utils.tree_set(
        opt_state, learning_rate=jnp.asarray(learning_rate, jnp.float32)
      )
    hparams = self.hparams if hparams is None else hparams
    if set(hparams) != set(self.hparams):
      raise ValueError(f"hparams {sorted(hparams)} are not the objective's {sorted(self.hparams)}.")
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_state,
      disc_params=disc_params,
      disc_opt_state=self.disc_tx.init(disc_params) if disc_params else {},
      hparams={k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()},
      alive=jnp.ones((), bool),
    )

  def init_states(self, seeds: Sequence[int]) -> TrainState:
    """The initial states of several seeds stacked on a leading model axis [M, ...].

    Each slice is bitwise `init_state(seed)` (the states are built one by one and stacked).
    """
    seeds = check_seeds(seeds)
    return stack([self.init_state(seed) for seed in seeds])

  def init_models(self, configs: Sequence[ml_collections.ConfigDict]) -> TrainState:
    """The stacked initial states [M, ...] of models that differ only in seed, learning rate
    and the objective's hyperparameters (a sweep group); slice m is bitwise the single run's."""
    return stack(
      [self.init_state(c.seed, config_lib.objective_hparams(c), c.learning_rate) for c in configs]
    )


def build_trainer(
  config: ml_collections.ConfigDict,
  observation_shape: Sequence[int],
  dataset_size: int,
  *,
  networks: Networks | None = None,
) -> Trainer:
  """The one place a run's networks, optimizers and train step are built from its config.

  Args:
    config: the run's config.
    observation_shape: shape of one observation, e.g. (64, 64, 1).
    dataset_size: N, for beta-TCVAE's estimators.
    networks: other modules than the config's (e.g. smaller ones in tests); default
      `build_networks(config, observation_shape)`.
  """
  if networks is None:
    networks = build_networks(config, observation_shape)
  tx, disc_tx = make_optimizers(config)
  loss_fn = make_loss_fn(config, networks, dataset_size)
  train_step = make_train_step(loss_fn, tx, disc_tx, networks.discriminator)
  return Trainer(networks, tx, disc_tx, config_lib.objective_hparams(config), loss_fn, train_step)


def step_rng(seed: int) -> jax.Array:
  """The key a run of `seed` passes to every step (the step folds in its number)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
  """The seeds as ints; models of a sweep may share a seed (they differ in other values)."""
  seeds = tuple(int(s) for s in seeds)
  if not seeds:
    raise ValueError("seeds is empty: give at least one seed.")
  if any(s < 0 for s in seeds):
    raise ValueError(f"seeds must be >= 0, got {seeds}.")
  return seeds


def stack(trees: Sequence) -> Any:
  """Stacks pytrees of identical structure on a new leading axis: leaves [M, *leaf.shape]."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, index: int):
  """Slice `index` of a stacked pytree: the state (or metrics) of one model."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


def batch_shardings(mesh: Mesh, keys=None, axis_name: str = "data"):
  """How a batch is placed: every array split over the data axis, except a packed dataset
  held on the device (`data.on_device`, key "packed"), replicated. `keys`: the batch's keys, or
  None for one sharding of every leaf."""
  split = NamedSharding(mesh, PartitionSpec(axis_name))
  if keys is None:
    return split
  return {k: NamedSharding(mesh, PartitionSpec()) if k == "packed" else split for k in keys}


def jit_train_step(
  train_step, mesh: Mesh, state: TrainState, axis_name: str = "data", batch_keys=None
):
  """jax.jit with the batch split over the mesh's data axis and the state replicated.

  XLA's partitioner inserts the cross-device gradient reduction, so the same code runs on one
  CPU, one GPU or a pod slice; the state's buffers are donated (updated in place).
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  batch_sharding = batch_shardings(mesh, batch_keys, axis_name)
  return jax.jit(
    train_step,
    in_shardings=(state_sharding, batch_sharding, replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
  )
