"""Multi-seed training: M models, one per seed, trained by one compiled (vmapped) program.

The M models live in one `TrainState` whose leaves carry a leading axis [M, ...]
(`Trainer.init_states(seeds)`), and one jitted step updates all of them: `jax.vmap` of the
single-model `train_step` over (state, rng), with the batch shared. Each model's initial state is
bitwise that of a single run with `config.seed = seed`, and its per-step key is the single run's
`step_rng(seed)`, so slice k follows the single run of seed k up to float32 rounding (vmap may
change the order of reductions).

Data order: all models see the same batches (those of the caller's iterator, normally the first
seed's order). The seeds vary the initialisation and the sampling noise (reparameterisation
samples, FactorVAE's permutations), not the data order, which is how vmapped sweeps usually work.

  states = trainer.init_states(seeds)
  step = jit_multi_seed_train_step(make_multi_seed_train_step(trainer.train_step), mesh, states)
  rngs = step_rngs(seeds)
  for batch in batches:
    states, metrics = step(states, batch, rngs)  # metrics: each [M]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from disentangle_jax.training.train_step import TrainState, check_seeds, step_rng


def step_rngs(seeds: Sequence[int]) -> jax.Array:
  """The per-step PRNG keys [M] of the seeds, each the single run's `step_rng(seed)`."""
  return jnp.stack([step_rng(s) for s in check_seeds(seeds)])


def make_multi_seed_train_step(train_step, broadcast_batch: bool = False):
  """Vmaps a pure single-model train step over K models that share the batch.

  Args:
    train_step: `(state, batch, rng) -> (state, metrics)` from `train_step.make_train_step`.
    broadcast_batch: False: `jax.vmap(train_step, in_axes=(0, None, 0))`, the batch enters
      unbatched. True: the batch is broadcast to [K, B, ...] inside the step and every input is
      vmapped. The results are the same (up to float32 summation order) and so is the caller's
      API. On the CPU, the unbatched batch makes the first layer a product of a shared matrix
      with K stacked weights, and the MLP step spends much of its time copying transposed
      weights and gradients, which broadcasting avoids; compare both with
      benchmarks/bench_multi_seed.py (--broadcast-batch) on the target device.

  Returns:
    `(states, batch, rngs) -> (states, metrics)`: states with leaves [K, ...], one batch (e.g.
    images [B, H, W, C]) seen by every model, rngs a key array [K] (`step_rngs`); every metric
    comes back as [K].
  """
  if not broadcast_batch:
    return jax.vmap(train_step, in_axes=(0, None, 0))
  vmapped = jax.vmap(train_step)

  def multi_seed_train_step(states, batch, rngs):
    num_models = rngs.shape[0]
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_models, *x.shape)), batch)
    return vmapped(states, batch, rngs)

  return multi_seed_train_step


def jit_multi_seed_train_step(
  step,
  mesh: Mesh,
  state: TrainState,
  axis_name: str = "data",
  seed_axis: str | None = None,
):
  """jax.jit of the multi-seed step: batch split over the data axis, state buffers donated.

  Placement of the K models:
  - `seed_axis=None` (default): the stacked state and rngs are replicated on every device, as in
    `train_step.jit_train_step`; each device computes all K models on its shard of the batch and
    XLA inserts the cross-device gradient reductions. This works on any data mesh and is the
    right choice on one device, or while K copies of the state fit on every device.
  - `seed_axis="seed"`: on a 2-D mesh with axes (seed_axis, axis_name), the leading K axis of
    the state, rngs and metrics is split over `seed_axis` (K must be a multiple of its size),
    and the batch is split over `axis_name` and replicated over `seed_axis`. Each group of
    devices then holds and trains K / mesh.shape[seed_axis] models; for when K copies of the
    state do not fit, or to use more devices than the batch can be split over.

  Args:
    step: from `make_multi_seed_train_step`.
    mesh: the device mesh; contains `axis_name` (and `seed_axis`, if given).
    state: the stacked state (for its tree structure).
    axis_name: the mesh axis the batch is split over.
    seed_axis: the mesh axis the models are split over, or None to replicate them.

  Returns:
    The jitted `(states, batch, rngs) -> (states, metrics)`; `states` is donated.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  if seed_axis is None:
    per_model = replicated
  else:
    num_models = int(jax.tree.leaves(state)[0].shape[0])
    groups = mesh.shape[seed_axis]
    if num_models % groups:
      raise ValueError(
        f"{num_models} models cannot be split evenly over mesh axis {seed_axis!r} of size {groups}."
      )
    per_model = NamedSharding(mesh, PartitionSpec(seed_axis))
  state_sharding = jax.tree.map(lambda _: per_model, state)
  return jax.jit(
    step,
    in_shardings=(state_sharding, batch_sharding, per_model),
    out_shardings=(state_sharding, per_model),
    donate_argnums=(0,),
  )
