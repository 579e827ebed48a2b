"""M models in one compiled program: seeds of a run, or a sweep group of one structure.

The models live in one `TrainState` whose leaves carry a leading model axis [M, ...]
(`Trainer.init_states(seeds)` or `Trainer.init_models(configs)`), and one jitted step updates
all of them on the same batch. The models differ in their seeds (initialisation, sampling noise),
learning rates (in the optimizer state) and objective hyperparameters (`TrainState.hparams`),
all arrays: one compilation serves the whole group.

Two ways through the model axis, same results: "vmap" batches the M models' operations (one
larger program: accelerators), "map" runs them one after another inside the program with
`lax.map` (on a CPU, whose cores one model already keeps busy; see docs/benchmarks.md).

A model whose loss is not finite keeps its state from before that step and is marked dead
(`TrainState.alive`); the others go on: one diverging model does not stop a sweep. The mask is
decided by the loss alone, which is known before the update, so XLA fuses the select into the
optimizer's update (no extra pass over the parameters); a state that overflows under a finite
loss is found by the loop's check of every model's state once per logging window
(`mark_non_finite`).

  states = trainer.init_models(configs)
  step = jit_multi_model_step(make_multi_model_step(trainer.train_step, "map"), mesh, states)
  rngs = step_rngs([c.seed for c in configs])
  for batch in batches:
    states, metrics = step(states, batch, rngs)  # metrics: each [M], with "alive"
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from disentangle_jax.training import config as config_lib
from disentangle_jax.training.train_step import (
  TrainState,
  batch_shardings,
  check_seeds,
  state_is_finite,
  step_rng,
)

MODEL_AXIS = "model"
DATA_AXIS = "data"
# Keys whose values enter the step as arrays: models differing only in these (and the
# objective's float hyperparameters) share a program.
TRACED_KEYS = ("seed", "learning_rate")
MODEL_AXIS_METHODS = ("auto", "vmap", "map")


def structure_key(config: ml_collections.ConfigDict) -> str:
  """What must be equal for models to share one program: the config without the traced values
  (seed, learning rate, the objective's float hyperparameters) and without evaluation settings."""
  data = json.loads(config.to_json_best_effort())
  for key in (*TRACED_KEYS, "eval"):
    data.pop(key, None)
  section = data["objective"][config.objective.name]
  for key in config_lib.objective_hparams(config):
    section.pop(key, None)
  return json.dumps(data, sort_keys=True)


def model_axis_method(requested: str, backend: str) -> str:
  """ "vmap" or "map" for the models of a group: `requested`, or by backend for "auto".

  On a CPU the cores are busy with one model's step already and vmap's batched products add
  copies (measured in docs/benchmarks.md), so "auto" maps over the models there; on
  accelerators one batched program fills the device better.
  """
  if requested not in MODEL_AXIS_METHODS:
    raise ValueError(f"model_axis must be one of {MODEL_AXIS_METHODS}; got {requested!r}.")
  if requested != "auto":
    return requested
  return "map" if backend == "cpu" else "vmap"


def step_rngs(seeds: Sequence[int]) -> jax.Array:
  """The per-step PRNG keys [M] of the seeds, each the single run's `step_rng(seed)`."""
  return jnp.stack([step_rng(s) for s in check_seeds(seeds)])


def make_model_mesh(model_parallel: int = 1, devices=None) -> Mesh:
  """A 2-D mesh ("model", "data"): `model_parallel` devices along the model axis, the rest
  splitting each batch.

  Raises:
    ValueError: when the device count does not divide by `model_parallel`.
  """
  devices = jax.devices() if devices is None else list(devices)
  if model_parallel < 1 or len(devices) % model_parallel:
    raise ValueError(f"model_parallel {model_parallel} must divide the {len(devices)} devices.")
  shape = (model_parallel, len(devices) // model_parallel)
  return Mesh(np.asarray(devices).reshape(shape), (MODEL_AXIS, DATA_AXIS))


def make_multi_model_step(train_step, method: str = "vmap"):
  """The step of M models on one shared batch, each frozen once it is not finite.

  Args:
    train_step: the pure single-model `(state, batch, rng) -> (state, metrics)`.
    method: "vmap" (batched) or "map" (`lax.map`, one model after another).

  Returns:
    `(states, batch, rngs) -> (states, metrics)`: states with leaves [M, ...], rngs [M] keys;
    every metric comes back as [M], plus "alive" [M] after this step.
  """

  def one_model(state: TrainState, batch, rng):
    new, metrics = train_step(state, batch, rng)
    ok = state.alive & metrics["finite"]
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    metrics["alive"] = ok
    return new.replace(alive=ok), metrics

  if method == "vmap":
    return jax.vmap(one_model, in_axes=(0, None, 0))
  if method == "map":

    def mapped(states, batch, rngs):
      return jax.lax.map(lambda args: one_model(args[0], batch, args[1]), (states, rngs))

    return mapped
  raise ValueError(f"method must be 'vmap' or 'map'; got {method!r}.")


def mark_non_finite(state: TrainState) -> TrainState:
  """Marks dead the models whose parameters or optimizer state are not finite (a gradient that
  overflowed under a finite loss); their frozen state is never used again."""
  return state.replace(alive=state.alive & jax.vmap(state_is_finite)(state))


def jit_multi_model_step(step, mesh: Mesh, state: TrainState, batch_keys=None):
  """jax.jit of the multi-model step on a ("model", "data") mesh; the states are donated.

  The leading model axis of the state, rngs and metrics is split over the mesh's model axis
  (M must be a multiple of its size) and the batch over its data axis; XLA inserts the
  gradient reductions across the data axis.
  """
  num_models = int(jax.tree.leaves(state)[0].shape[0])
  if num_models % mesh.shape[MODEL_AXIS]:
    raise ValueError(
      f"{num_models} models cannot be split evenly over the {mesh.shape[MODEL_AXIS]} devices "
      f"of the model axis."
    )
  per_model = NamedSharding(mesh, PartitionSpec(MODEL_AXIS))
  state_sharding = jax.tree.map(lambda _: per_model, state)
  return jax.jit(
    step,
    in_shardings=(state_sharding, batch_shardings(mesh, batch_keys, DATA_AXIS), per_model),
    out_shardings=(state_sharding, per_model),
    donate_argnums=(0,),
  )
