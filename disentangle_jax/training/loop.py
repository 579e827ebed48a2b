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
from disentangle_jax.training.checkpoint import Checkpointer
from disentangle_jax.training.evaluate import evaluate
from disentangle_jax.training.losses import make_loss_fn
from disentangle_jax.training.metrics_writer import MetricsWriter
from disentangle_jax.training.report import write_report
from disentangle_jax.training.train_step import create_train_state, jit_train_step, make_train_step


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or inf; the message names the steps and the last good checkpoint."""


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the configured model, checkpointing and resuming, then evaluates it.

  Returns the evaluation results, also written to `workdir/eval.json`.
  """
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

  # ---------------------------------------------------------------- data & mesh
  dataset = data.get_dataset(config.dataset, **config.dataset_kwargs)
  mesh = data.make_data_mesh()
  logging.info(
    "dataset %s: %d examples; %d device(s)",
    config.dataset,
    dataset.num_examples,
    jax.device_count(),
  )

  # ---------------------------------------------------------------- model & optimizer
  networks = model_lib.build_networks(config, dataset.observation_shape)
  init_key = jax.random.key(config.seed)
  params, disc_params = model_lib.init_params(config, networks, init_key, dataset.observation_shape)
  tx = model_lib.make_optimizer(config, params)
  disc_tx = model_lib.make_discriminator_optimizer(config)
  state = create_train_state(params, disc_params, tx, disc_tx)

  # ---------------------------------------------------------------- update step
  loss_fn = make_loss_fn(config, networks, dataset.num_examples)
  train_step = jit_train_step(
    make_train_step(loss_fn, tx, disc_tx, networks.discriminator), mesh, state
  )
  step_rng = jax.random.fold_in(init_key, 1)

  # ---------------------------------------------------------------- checkpoint
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_latest(state)
    logging.info("resumed from the checkpoint of step %d", int(state.step))
  start_step = int(state.step)
  last_good = checkpointer.latest_step()

  # ---------------------------------------------------------------- train loop
  writer = MetricsWriter(workdir)
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
      window = jax.device_get(pending)
      bad = [window_start + 1 + i for i, m in enumerate(window) if not m["finite"]]
      if bad:
        where = (
          f"the checkpoint of step {last_good} in {checkpointer.directory}"
          if (last_good is not None)
          else "none (no checkpoint was saved yet)"
        )
        raise NonFiniteError(
          f"Non-finite loss or gradients at step {bad[0]} (steps {window_start + 1}-{step} "
          f"checked). Last good checkpoint: {where}. Lower the learning rate or check the data."
        )
      means = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "finite"}
      elapsed = time.perf_counter() - window_time
      rate = len(window) / elapsed
      means["steps_per_second"] = rate
      writer.write(step, means)
      terms = " ".join(f"{k} {v:.4g}" for k, v in means.items() if k != "steps_per_second")
      logging.info(
        "step %d/%d | %.2f steps/s | ETA %s | %s",
        step,
        config.num_steps,
        rate,
        _format_duration((config.num_steps - step) / rate),
        terms,
      )
      pending, window_start, window_time = [], step, time.perf_counter()
      if step % config.checkpoint_every == 0 or step == config.num_steps:
        checkpointer.save(step, state)
        last_good = step
  checkpointer.close()
  writer.close()

  # ---------------------------------------------------------------- evaluation
  return _evaluate_and_report(config, networks, state, dataset, workdir)


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
) -> dict[str, float]:
  """Evaluates a saved run: eval.json and the report (metrics, pictures) of one checkpoint.

  The latest checkpoint's go to the workdir (`eval.json`, `report/`), replacing the training
  run's; an earlier step's go to `workdir/step_<step>/`, so the final report is kept.

  Args:
    workdir: the run's folder (checkpoints/ and config.json).
    config: the run's config; by default the one it saved (`workdir/config.json`), whose
      evaluation settings can be changed here (e.g. `config.eval.metrics`).
    step: the checkpoint; by default the latest.

  Returns:
    The evaluation results with the headline scores under "scores".
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
  return _evaluate_and_report(config, networks, state, dataset, workdir, out_dir)
