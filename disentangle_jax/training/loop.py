"""train_and_evaluate(config, workdir): the whole training run, top to bottom."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import data
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import model as model_lib
from disentangle_jax.training import multi_seed
from disentangle_jax.training.checkpoint import Checkpointer
from disentangle_jax.training.evaluate import evaluate
from disentangle_jax.training.losses import make_loss_fn
from disentangle_jax.training.metrics_writer import MetricsWriter
from disentangle_jax.training.report import write_report
from disentangle_jax.training.train_step import (
  create_train_state,
  jit_train_step,
  make_train_step,
  state_is_finite,
)


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or inf; the message names the steps and the last good checkpoint."""


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _raise_if_not_finite(
  losses_finite: np.ndarray,
  state_finite: np.ndarray,
  window_start: int,
  seeds: tuple[int, ...],
  last_good: str,
) -> None:
  """Raises NonFiniteError if a window of steps went non-finite, naming the step and the seeds.

  Args:
    losses_finite: [steps, K] bools, the "finite" metric (the loss) of steps window_start + 1 ..
      of each of the K seeds.
    state_finite: [K] bools, whether each seed's parameters and optimizer state are finite after
      the window's last step.
    window_start: the step before the window.
    seeds: the K seeds.
    last_good: where the last good checkpoint is, for the message.
  """
  last = window_start + len(losses_finite)
  steps = f"steps {window_start + 1}-{last} checked"
  bad_rows = np.flatnonzero(~losses_finite.all(axis=1))
  if len(bad_rows):
    step, ok = window_start + 1 + bad_rows[0], losses_finite[bad_rows[0]]
    what = f"Non-finite loss at step {step}"
  elif not state_finite.all():
    ok = state_finite
    what = (
      f"Non-finite parameters or optimizer state after step {last}, although every loss was "
      "finite (a gradient or an optimizer moment overflowed)"
    )
  else:
    return
  which = f" for seed(s) {[s for s, good in zip(seeds, ok, strict=True) if not good]}"
  raise NonFiniteError(
    f"{what}{which if len(seeds) > 1 else ''} ({steps}). Last good checkpoint: {last_good}. "
    "Lower the learning rate or check the data."
  )


def run_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The seeds a run trains: config.seed, config.seed + 1, ..., config.seed + num_seeds - 1."""
  return tuple(range(config.seed, config.seed + config.num_seeds))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the configured model, checkpointing and resuming, then evaluates it.

  With `config.num_seeds` = K > 1, K models (seeds `run_seeds(config)`) are trained by one
  vmapped step (`training.multi_seed`) on the batches of `config.seed`; each seed's metrics,
  eval.json and report go to `workdir/seed_<seed>/`.

  Returns:
    The evaluation results, also written to `workdir/eval.json`; with K > 1 seeds, a dict
    {"seed_<seed>": results} (each also in `workdir/seed_<seed>/eval.json`).
  """
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  seeds = run_seeds(config)

  # ---------------------------------------------------------------- data & mesh
  dataset = data.get_dataset(config.dataset, **config.dataset_kwargs)
  mesh = data.make_data_mesh()
  logging.info(
    "dataset %s: %d examples; %d device(s)",
    config.dataset,
    dataset.num_examples,
    jax.device_count(),
  )

  # ---------------------------------------------------------------- model, optimizer, step
  networks = model_lib.build_networks(config, dataset.observation_shape)
  loss_fn = make_loss_fn(config, networks, dataset.num_examples)
  state, train_step, step_rng = _init_training(config, networks, loss_fn, seeds, mesh, dataset)
  # Parameters and optimizer states all finite: per seed, checked once per logging window.
  state_check = jax.jit(jax.vmap(state_is_finite) if len(seeds) > 1 else state_is_finite)

  # ---------------------------------------------------------------- checkpoint
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_latest(state)
    logging.info("resumed from the checkpoint of step %d", int(np.max(state.step)))
  start_step = int(np.max(state.step))
  last_good = checkpointer.latest_step()

  # ---------------------------------------------------------------- train loop
  if len(seeds) == 1:
    writers = [MetricsWriter(workdir)]
  else:
    for seed in seeds:
      (workdir / f"seed_{seed}").mkdir(exist_ok=True)
    writers = [MetricsWriter(workdir / f"seed_{seed}") for seed in seeds]
  pending, window_start, window_time = [], start_step, time.perf_counter()
  batches = data.ShardedBatchIterator(
    dataset,
    batch_size=config.batch_size,
    seed=config.seed,
    mesh=mesh,
    start_step=start_step,
    num_steps=config.num_steps - start_step,
  )
  with batches:
    for step, batch in zip(range(start_step + 1, config.num_steps + 1), batches, strict=False):
      state, metrics = train_step(state, batch, step_rng)
      pending.append(metrics)  # device arrays: no host sync until the window closes
      if step % config.log_every and step % config.checkpoint_every and step != config.num_steps:
        continue
      # Close the window: one host sync, then the NaN guard, logging and checkpointing.
      window, state_finite = jax.device_get((pending, state_check(state)))
      _raise_if_not_finite(
        np.array([np.reshape(m["finite"], -1) for m in window]),
        np.reshape(state_finite, -1),
        window_start,
        seeds,
        f"the checkpoint of step {last_good} in {checkpointer.directory}"
        if last_good is not None
        else "none (no checkpoint was saved yet)",
      )
      # Per metric: [K] means over the window (one per seed; K = 1 for a single run).
      means = {
        k: np.reshape(np.mean([m[k] for m in window], axis=0), -1)
        for k in window[0]
        if k != "finite"
      }
      elapsed = time.perf_counter() - window_time
      rate = len(window) / elapsed
      for i, writer in enumerate(writers):
        writer.write(step, {k: float(v[i]) for k, v in means.items()} | {"steps_per_second": rate})
      terms = " ".join(f"{k} {np.mean(v):.4g}" for k, v in means.items())
      logging.info(
        "step %d/%d | %.2f steps/s | ETA %s | %s%s",
        step,
        config.num_steps,
        rate,
        _format_duration((config.num_steps - step) / rate),
        terms,
        f" (means over {len(seeds)} seeds)" if len(seeds) > 1 else "",
      )
      pending, window_start, window_time = [], step, time.perf_counter()
      if step % config.checkpoint_every == 0 or step == config.num_steps:
        checkpointer.save(step, state)
        last_good = step
  checkpointer.close()
  for writer in writers:
    writer.close()

  # ---------------------------------------------------------------- evaluation
  return _evaluate_seeds(config, networks, state, dataset, workdir)


def _init_training(config, networks, loss_fn, seeds, mesh, dataset):
  """(initial state, jitted step, step rng): one model, or len(seeds) stacked ones."""
  shape = dataset.observation_shape
  if len(seeds) > 1:
    state, tx, disc_tx = multi_seed.init_states(config, networks, seeds, shape)
    step = multi_seed.make_multi_seed_train_step(
      make_train_step(loss_fn, tx, disc_tx, networks.discriminator)
    )
    return (
      state,
      multi_seed.jit_multi_seed_train_step(step, mesh, state),
      multi_seed.step_rngs(seeds),
    )
  init_key = jax.random.key(config.seed)
  params, disc_params = model_lib.init_params(config, networks, init_key, shape)
  tx = model_lib.make_optimizer(config, params)
  disc_tx = model_lib.make_discriminator_optimizer(config)
  state = create_train_state(params, disc_params, tx, disc_tx)
  train_step = jit_train_step(
    make_train_step(loss_fn, tx, disc_tx, networks.discriminator), mesh, state
  )
  return state, train_step, jax.random.fold_in(init_key, 1)


def _evaluate_seeds(config, networks, state, dataset, workdir, out_dir=None) -> dict:
  """`_evaluate_and_report` of one run, or of each seed of a multi-seed run in seed_<seed>/."""
  seeds = run_seeds(config)
  if len(seeds) == 1:
    return _evaluate_and_report(config, networks, state, dataset, workdir, out_dir)
  out_dir = workdir if out_dir is None else out_dir
  results = {}
  for k, seed in enumerate(seeds):
    seed_config = config.copy_and_resolve_references()
    with seed_config.unlocked():
      seed_config.seed, seed_config.num_seeds = seed, 1
    results[f"seed_{seed}"] = _evaluate_and_report(
      seed_config,
      networks,
      multi_seed.unstack(state, k),
      dataset,
      workdir / f"seed_{seed}",
      out_dir / f"seed_{seed}",
    )
  (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
  return results


def _evaluate_and_report(
  config, networks, state, dataset, workdir: pathlib.Path, out_dir: pathlib.Path | None = None
) -> dict:
  """eval.json and (with eval.report) report/ in out_dir, by default the workdir itself."""
  out_dir = workdir if out_dir is None else out_dir
  out_dir.mkdir(parents=True, exist_ok=True)
  results = evaluate(config, networks, state.params, dataset)
  results["step"] = int(state.step)
  (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
  logging.info("evaluation: %s", json.dumps(results))
  if config.eval.report:
    summary = write_report(
      config,
      networks,
      state.params,
      dataset,
      workdir,
      evaluation=results,
      out_dir=out_dir / "report",
    )
    results["scores"] = summary["scores"]
  return results


def evaluate_checkpoint(
  workdir: str, config: ml_collections.ConfigDict | None = None, *, step: int | None = None
) -> dict:
  """Evaluates a saved run: eval.json and the report (metrics, pictures) of one checkpoint.

  The latest checkpoint's go to the workdir (`eval.json`, `report/`), replacing the training
  run's; an earlier step's go to `workdir/step_<step>/`, so the final report is kept. A
  multi-seed run (`config.num_seeds` > 1) is evaluated seed by seed, into `seed_<seed>/` below
  those folders.

  Args:
    workdir: the run's folder (checkpoints/ and config.json).
    config: the run's config; by default the one it saved (`workdir/config.json`), whose
      evaluation settings can be changed here (e.g. `config.eval.metrics`).
    step: the checkpoint; by default the latest.

  Returns:
    The evaluation results with the headline scores under "scores" ({"seed_<seed>": results}
    for a multi-seed run).
  """
  workdir = pathlib.Path(workdir)
  config = config_lib.validate(config or config_lib.load_saved_config(workdir / "config.json"))
  checkpointer = Checkpointer(workdir)
  latest = checkpointer.latest_step()
  step = latest if step is None else step
  if step is None:
    raise FileNotFoundError(
      f"No checkpoint in {checkpointer.directory}: train first "
      f"(python experiments/main.py --config=... --workdir={workdir})."
    )
  dataset = data.get_dataset(config.dataset, **config.dataset_kwargs)
  networks = model_lib.build_networks(config, dataset.observation_shape)
  if config.num_seeds > 1:
    like = multi_seed.init_states(config, networks, run_seeds(config), dataset.observation_shape)[0]
  else:
    params, disc_params = model_lib.init_params(
      config, networks, jax.random.key(config.seed), dataset.observation_shape
    )
    like = create_train_state(
      params,
      disc_params,
      model_lib.make_optimizer(config, params),
      model_lib.make_discriminator_optimizer(config),
    )
  state = checkpointer.restore(step, like)
  checkpointer.close()
  logging.info("evaluating the checkpoint of step %d in %s", step, checkpointer.directory)
  out_dir = workdir if step == latest else workdir / f"step_{step}"
  return _evaluate_seeds(config, networks, state, dataset, workdir, out_dir)
