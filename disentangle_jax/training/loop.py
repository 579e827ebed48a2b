"""train_and_evaluate(config, workdir): the whole training run, top to bottom.

A run refuses bad config values and a workdir holding another run before it writes anything,
resumes from the workdir's last checkpoint, and on SIGINT / SIGTERM saves a checkpoint of the
step it reached, closes its files and stops with one line (the same command resumes it).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import data
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import multi_seed
from disentangle_jax.training.checkpoint import Checkpointer, saved_steps
from disentangle_jax.training.metrics_writer import MetricsWriter
from disentangle_jax.training.train_step import (
  build_trainer,
  jit_train_step,
  state_is_finite,
  step_rng,
)

CONFIG_FILE = "config.json"
# The metrics of a logging window cut short by SIGINT / SIGTERM, kept so that the resumed run
# logs the same rows as an uninterrupted one.
PENDING_FILE = "interrupted_window.json"


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or inf; the message names the steps and the last good checkpoint."""


class WorkdirError(ValueError):
  """The workdir holds another run (a different config), or a checkpoint past num_steps."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after saving a checkpoint; `signum` says which."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def run_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The seeds a run trains: config.seed, config.seed + 1, ..., config.seed + num_seeds - 1."""
  return tuple(range(config.seed, config.seed + config.num_seeds))


def config_differences(saved: dict, new: dict, prefix: str = "") -> list[str]:
  """The dotted keys whose values differ between two configs as dicts (JSON round trip)."""
  keys = []
  for key in sorted(set(saved) | set(new)):
    a, b = saved.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      keys += config_differences(a, b, f"{prefix}{key}.")
    elif a != b:
      keys.append(f"{prefix}{key} ({a!r} -> {b!r})")
  return keys


def _config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def accept_workdir(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, allow_config_change: bool
) -> int | None:
  """Checks, without writing anything, that `config` may run in `workdir`.

  Returns:
    The latest checkpoint's step, or None for a fresh run.

  Raises:
    WorkdirError: the workdir's config.json differs from `config` (unless
      `allow_config_change`), or its checkpoint is past `config.num_steps`.
  """
  saved_file = workdir / CONFIG_FILE
  if saved_file.exists() and not allow_config_change:
    differences = config_differences(json.loads(saved_file.read_text()), _config_dict(config))
    if differences:
      raise WorkdirError(
        f"{workdir} holds a run with another config; differing keys: {'; '.join(differences)}. "
        "Use a new --workdir, or pass --allow_config_change to continue this run with the new "
        "values."
      )
  steps = saved_steps(workdir)
  latest = steps[-1] if steps else None
  if latest is not None and latest > config.num_steps:
    raise WorkdirError(
      f"num_steps {config.num_steps} is below the step of the checkpoint in {workdir} "
      f"({latest}): ask for num_steps >= {latest}, or use a new --workdir."
    )
  return latest


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


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


@contextlib.contextmanager
def _stop_requests():
  """Turns SIGINT / SIGTERM into a request the loop honours after the current step.

  Yields a one-element list holding the signal number once one arrived. A second signal of
  the same kind is not caught: it stops the process at once (losing the steps since the last
  checkpoint).
  """
  requested: list[int] = []
  previous = {}

  def handler(signum, frame):
    del frame
    requested.append(signum)
    signal.signal(signum, previous[signum])  # the next one is not caught

  for signum in (signal.SIGINT, signal.SIGTERM):
    previous[signum] = signal.signal(signum, handler)
  try:
    yield requested
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def train(config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False):
  """Trains the configured model in `workdir`, checkpointing and resuming.

  Returns:
    (trainer, final state, dataset).

  Raises:
    config.ConfigError, WorkdirError: before anything is written.
    NonFiniteError: a NaN or inf; no checkpoint holds non-finite values.
    Interrupted: SIGINT / SIGTERM, after a checkpoint of the step reached.
  """
  # ---------------------------------------------------------------- checks (nothing written)
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  seeds = run_seeds(config)
  dataset = data.get_dataset(config.dataset, **config_lib.dataset_kwargs(config))
  mesh = data.make_data_mesh()
  if config.batch_size > dataset.num_examples or config.batch_size % mesh.size:
    raise config_lib.ConfigError(
      f"batch_size {config.batch_size} must be at most the dataset's {dataset.num_examples} "
      f"examples and a multiple of the {mesh.size} device(s)."
    )
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  resume_step = accept_workdir(config, workdir, allow_config_change)

  # ---------------------------------------------------------------- state and step
  if len(seeds) == 1:
    state = trainer.init_state(config.seed)
    train_step = jit_train_step(trainer.train_step, mesh, state)
    rng = step_rng(config.seed)
    state_check = jax.jit(state_is_finite)
  else:
    state = trainer.init_states(seeds)
    step = multi_seed.make_multi_seed_train_step(trainer.train_step)
    train_step = multi_seed.jit_multi_seed_train_step(step, mesh, state)
    rng = multi_seed.step_rngs(seeds)
    state_check = jax.jit(jax.vmap(state_is_finite))

  # ---------------------------------------------------------------- checkpoint, workdir
  if resume_step is not None:  # restored before anything is written: a mismatch changes nothing
    checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    state = checkpointer.restore(resume_step, state)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
  if resume_step is None:
    checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  logging.info(
    "dataset %s: %d examples; %d device(s); %s",
    config.dataset,
    dataset.num_examples,
    mesh.size,
    f"resumed from the checkpoint of step {resume_step}" if resume_step else "new run",
  )
  start_step = resume_step or 0
  last_good = resume_step

  # ---------------------------------------------------------------- metrics files
  out_dirs = [workdir] if len(seeds) == 1 else [workdir / f"seed_{s}" for s in seeds]
  for out_dir in out_dirs:
    out_dir.mkdir(exist_ok=True)
  writers = [MetricsWriter(d, resume_step) for d in out_dirs]
  pending = _load_pending(workdir, start_step)  # host metrics of a window cut short
  window_start = start_step - len(pending)

  # ---------------------------------------------------------------- train loop
  batches = data.ShardedBatchIterator(
    dataset,
    batch_size=config.batch_size,
    seed=config.seed,
    mesh=mesh,
    start_step=start_step,
    num_steps=config.num_steps - start_step,
  )
  step, window_time, timed_steps = start_step, time.perf_counter(), 0
  try:
    with batches, _stop_requests() as stop:
      for step, batch in zip(range(start_step + 1, config.num_steps + 1), batches, strict=False):
        state, metrics = train_step(state, batch, rng)
        pending.append(metrics)  # device arrays: no host sync until the window closes
        timed_steps += 1
        end_of_window = step % config.log_every == 0 or step == config.num_steps
        if not (end_of_window or step % config.checkpoint_every == 0 or stop):
          continue
        # One host sync, then the NaN guard: no checkpoint ever holds a non-finite value.
        pending, state_finite = jax.device_get((pending, state_check(state)))
        _raise_if_not_finite(
          np.array([np.reshape(m["finite"], -1) for m in pending]),
          np.reshape(state_finite, -1),
          window_start,
          seeds,
          f"the checkpoint of step {last_good} in {checkpointer.directory}"
          if last_good is not None
          else "none (no checkpoint was saved yet)",
        )
        if end_of_window or step % config.checkpoint_every == 0:
          rate = timed_steps / (time.perf_counter() - window_time)
          _log_window(config, writers, pending, step, rate, len(seeds))
          pending, window_start, window_time, timed_steps = [], step, time.perf_counter(), 0
        if step % config.checkpoint_every == 0 or step == config.num_steps or stop:
          # (a stop request at the last step just finishes the run)
          checkpointer.save(step, state)
          last_good = step
        if stop and step < config.num_steps:
          checkpointer.wait()
          _save_pending(workdir, step, pending)
          name = signal.Signals(stop[0]).name
          raise Interrupted(
            f"{name} at step {step}/{config.num_steps}: checkpoint of step {step} saved in "
            f"{checkpointer.directory}; run the same command to resume.",
            stop[0],
          )
  finally:
    checkpointer.close()
    for writer in writers:
      writer.close()
  (workdir / PENDING_FILE).unlink(missing_ok=True)
  return trainer, state, dataset


def _log_window(config, writers, window, step, rate, num_seeds) -> None:
  """One metrics row per seed (means over the window) and the progress line."""
  means = {
    k: np.reshape(np.mean([m[k] for m in window], axis=0), -1) for k in window[0] if k != "finite"
  }
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
    f" (means over {num_seeds} seeds)" if num_seeds > 1 else "",
  )


def _save_pending(workdir: pathlib.Path, step: int, window: list) -> None:
  # Values with their dtypes, so the resumed window averages exactly what it would have.
  rows = [
    {k: [np.asarray(v).tolist(), np.asarray(v).dtype.str] for k, v in m.items()} for m in window
  ]
  path = workdir / PENDING_FILE
  path.with_suffix(".tmp").write_text(json.dumps({"step": step, "metrics": rows}))
  path.with_suffix(".tmp").replace(path)


def _load_pending(workdir: pathlib.Path, step: int) -> list:
  """The metrics of the interrupted window that ended at `step`, if the run stopped there."""
  path = workdir / PENDING_FILE
  if not path.exists():
    return []
  saved = json.loads(path.read_text())
  if saved["step"] != step:
    return []
  return [{k: np.asarray(v, dtype) for k, (v, dtype) in m.items()} for m in saved["metrics"]]


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict:
  """Trains the configured model (`train`), then evaluates it (`evaluate.evaluate_run`).

  With `config.num_seeds` = K > 1, K models (seeds `run_seeds(config)`) are trained by one
  vmapped step on the batches of `config.seed`; each seed's metrics, eval.json and report go
  to `workdir/seed_<seed>/`.

  Returns:
    The evaluation results, also written to `workdir/eval.json`; with K > 1 seeds, a dict
    {"seed_<seed>": results} (each also in `workdir/seed_<seed>/eval.json`).
  """
  from disentangle_jax.training import evaluate  # evaluation imports the metrics

  trainer, state, dataset = train(config, workdir, allow_config_change=allow_config_change)
  return evaluate.evaluate_run(config, trainer.networks, state, dataset, pathlib.Path(workdir))
