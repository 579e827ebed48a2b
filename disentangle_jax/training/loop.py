"""Training, top to bottom: `train_and_evaluate(config, workdir)` and the loop under it.

`train_run(run)` trains the M >= 1 models of one program (one model, the seeds of a run, or a
sweep group) on shared batches. It refuses bad config values and a workdir holding another run
before it writes anything, resumes from the workdir's last checkpoint, and on SIGINT / SIGTERM
saves a checkpoint of the step it reached, closes its files and stops with one line (the same
command resumes it). One model: a NaN stops the run. Several: a model that diverges is frozen
and recorded, the others go on; the run stops only when none is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import data
from disentangle_jax.data import on_device
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import multi_model
from disentangle_jax.training.checkpoint import Checkpointer, saved_steps
from disentangle_jax.training.metrics_writer import MetricsWriter
from disentangle_jax.training.train_step import (
  build_trainer,
  jit_train_step,
  state_is_finite,
  step_rng,
)

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"  # per model: the step at which it diverged, if it did
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


@dataclasses.dataclass(frozen=True)
class Run:
  """The models one program trains, and where their files go.

  Attributes:
    configs: one config per model; they differ at most in seed, learning rate and the
      objective's float hyperparameters (the first one gives everything else).
    names: one name per model, for the log.
    out_dirs: per model, the folder of its metrics.jsonl, status, eval.json and report.
    workdir: the folder of the program's checkpoints and description.
    description: what the program trains, saved as workdir/config.json and compared with it
      when the workdir is reused.
    data_seed: the seed of the batch order all models share.
    model_axis: "vmap", "map" or "auto" (`sweep.model_axis_method`), for M > 1.
    model_parallel: devices along the mesh's model axis, for M > 1.
  """

  configs: tuple[ml_collections.ConfigDict, ...]
  names: tuple[str, ...]
  out_dirs: tuple[pathlib.Path, ...]
  workdir: pathlib.Path
  description: dict
  data_seed: int
  model_axis: str = "auto"
  model_parallel: int = 1


@dataclasses.dataclass
class Progress:
  """Where a run stands in a larger job (a sweep), for the progress line's ETA.

  Attributes:
    done: model-steps finished by earlier runs of the job.
    total: model-steps of the whole job.
  """

  done: int = 0
  total: int = 0


def is_writer() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-host job (every process
  trains and joins the checkpoints; one writes metrics, statuses and results)."""
  return jax.process_index() == 0


def to_host(tree):
  """A pytree of (global) arrays as numpy on this host, from every process in a multi-host job."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)


class _NoWriter:
  """The metrics writer of the processes that do not write (multi-host)."""

  def write(self, step, scalars) -> None:
    del step, scalars

  def close(self) -> None:
    pass


def run_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The seeds a run trains: config.seed, config.seed + 1, ..., config.seed + num_seeds - 1."""
  return tuple(range(config.seed, config.seed + config.num_seeds))


def single_run(config: ml_collections.ConfigDict, workdir) -> Run:
  """The Run of `experiments/main.py`: one model, or `config.num_seeds` seeds in one program
  (their files in workdir/seed_<s>/), on the batches of `config.seed`."""
  workdir = pathlib.Path(workdir)
  description = json.loads(config.to_json_best_effort())
  seeds = run_seeds(config)
  if len(seeds) == 1:
    return Run((config,), ("model",), (workdir,), workdir, description, config.seed)
  configs = []
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    with seed_config.unlocked():
      seed_config.seed, seed_config.num_seeds = seed, 1
    configs.append(seed_config.lock())
  return Run(
    tuple(configs),
    tuple(f"seed_{s}" for s in seeds),
    tuple(workdir / f"seed_{s}" for s in seeds),
    workdir,
    description,
    config.seed,
  )


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


def accept_workdir(run: Run, allow_config_change: bool) -> int | None:
  """Checks, without writing anything, that `run` may train in its workdir.

  Returns:
    The latest checkpoint's step, or None for a fresh run.

  Raises:
    WorkdirError: the workdir's config.json differs from the run's description (unless
      `allow_config_change`), or its checkpoint is past num_steps.
  """
  saved_file = run.workdir / CONFIG_FILE
  if saved_file.exists() and not allow_config_change:
    differences = config_differences(json.loads(saved_file.read_text()), run.description)
    if differences:
      raise WorkdirError(
        f"{run.workdir} holds a run with another config; differing keys: "
        f"{'; '.join(differences)}. Use a new --workdir, or pass --allow_config_change to "
        "continue this run with the new values."
      )
  steps = saved_steps(run.workdir)
  latest = steps[-1] if steps else None
  num_steps = run.configs[0].num_steps
  if latest is not None and latest > num_steps:
    raise WorkdirError(
      f"num_steps {num_steps} is below the step of the checkpoint in {run.workdir} "
      f"({latest}): ask for num_steps >= {latest}, or use a new --workdir."
    )
  return latest


def _raise_if_not_finite(
  losses_finite: np.ndarray, state_finite: bool, window_start: int, last_good: str
) -> None:
  """Raises NonFiniteError if one model's window of steps went non-finite, naming the step.

  Args:
    losses_finite: [steps] bools, the "finite" metric (the loss) of steps window_start + 1 ...
    state_finite: whether the parameters and optimizer state are finite after the window.
    window_start: the step before the window.
    last_good: where the last good checkpoint is, for the message.
  """
  last = window_start + len(losses_finite)
  bad = np.flatnonzero(~losses_finite)
  if len(bad):
    what = f"Non-finite loss at step {window_start + 1 + bad[0]}"
  elif not state_finite:
    what = (
      f"Non-finite parameters or optimizer state after step {last}, although every loss was "
      "finite (a gradient or an optimizer moment overflowed)"
    )
  else:
    return
  raise NonFiniteError(
    f"{what} (steps {window_start + 1}-{last} checked). Last good checkpoint: {last_good}. "
    "Lower the learning rate or check the data."
  )


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


@contextlib.contextmanager
def _stop_requests():
  """Turns SIGINT / SIGTERM into a request the loop honours after the current step.

  Yields a list holding the signal number once one arrived. A second signal of the same kind is
  not caught: it stops the process at once (losing the steps since the last checkpoint).
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


def _check_run(run: Run) -> None:
  for config in run.configs:
    config_lib.validate(config)
  keys = {multi_model.structure_key(c) for c in run.configs}
  if len(keys) > 1:
    raise config_lib.ConfigError(
      "the models of one program may differ only in seed, learning_rate and the objective's "
      "float settings."
    )


def train_run(run: Run, *, allow_config_change: bool = False, progress: Progress | None = None):
  """Trains the run's models, checkpointing and resuming.

  Returns:
    (trainer, final state, dataset, diverged): the state is one model's, or stacked [M, ...];
    `diverged` maps the names of models that diverged to their step.

  Raises:
    config.ConfigError, WorkdirError, CheckpointMismatchError: before anything is written.
    NonFiniteError: one model's NaN or inf, or every model of several diverged; no
      checkpoint holds non-finite values.
    Interrupted: SIGINT / SIGTERM, after a checkpoint of the step reached.
  """
  # ---------------------------------------------------------------- checks (nothing written)
  _check_run(run)
  config, num_models = run.configs[0], len(run.configs)
  dataset = data.get_dataset(config.dataset, **config_lib.dataset_kwargs(config))
  if num_models == 1:
    mesh, method = data.make_data_mesh(), None
  else:
    mesh = multi_model.make_model_mesh(run.model_parallel)
    method = multi_model.model_axis_method(run.model_axis, jax.default_backend())
    if method == "map" and run.model_parallel > 1:
      raise config_lib.ConfigError("model_axis 'map' needs model_parallel = 1; use 'vmap'.")
  data_devices = mesh.shape["data"]
  if config.batch_size > dataset.num_examples or config.batch_size % data_devices:
    raise config_lib.ConfigError(
      f"batch_size {config.batch_size} must be at most the dataset's {dataset.num_examples} "
      f"examples and a multiple of the {data_devices} device(s) that split a batch."
    )
  if config.data_on_device and not on_device.supports(dataset):
    raise config_lib.ConfigError(
      f"data_on_device needs a dataset held as packed bits (dsprites); {config.dataset} is not."
    )
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  resume_step = accept_workdir(run, allow_config_change)

  # ---------------------------------------------------------------- state and step
  step_fn, batch_keys = trainer.train_step, None
  if config.data_on_device:  # the images come from the packed set on the device
    step_fn, batch_keys = on_device.with_images_from_packed(step_fn), ("factors", "index", "packed")
  if num_models == 1:
    state = trainer.init_state(
      config.seed, config_lib.objective_hparams(config), config.learning_rate
    )
    train_step = jit_train_step(step_fn, mesh, state, batch_keys=batch_keys)
    rng = step_rng(config.seed)
    state_check = jax.jit(state_is_finite)
  else:
    state = trainer.init_models(run.configs)
    step_fn = multi_model.make_multi_model_step(step_fn, method)
    train_step = multi_model.jit_multi_model_step(step_fn, mesh, state, batch_keys)
    rng = multi_model.step_rngs([c.seed for c in run.configs])
    state_check = jax.jit(multi_model.mark_non_finite, donate_argnums=0)
    logging.info("%d models in one program, through the model axis by %s", num_models, method)

  # ---------------------------------------------------------------- checkpoint, workdir
  if resume_step is not None:  # restored before anything is written: a mismatch changes nothing
    checkpointer = Checkpointer(run.workdir, max_to_keep=config.keep_checkpoints)
    state = checkpointer.restore(resume_step, state)
  if is_writer():
    run.workdir.mkdir(parents=True, exist_ok=True)
    (run.workdir / CONFIG_FILE).write_text(json.dumps(run.description, indent=2))
  if resume_step is None:
    checkpointer = Checkpointer(run.workdir, max_to_keep=config.keep_checkpoints)
  logging.info(
    "dataset %s: %d examples; %d device(s); %s",
    config.dataset,
    dataset.num_examples,
    mesh.size,
    f"resumed from the checkpoint of step {resume_step}" if resume_step else "new run",
  )
  start_step = resume_step or 0
  last_good = resume_step
  diverged = _load_diverged(run, resume_step)

  # ---------------------------------------------------------------- metrics files
  if is_writer():
    for out_dir in run.out_dirs:
      out_dir.mkdir(parents=True, exist_ok=True)
    writers = [MetricsWriter(d, resume_step) for d in run.out_dirs]
  else:
    writers = [_NoWriter() for _ in run.out_dirs]
  pending = _load_pending(run.workdir, start_step)  # host metrics of a window cut short
  window_start = start_step - len(pending)

  # ---------------------------------------------------------------- train loop
  batches = data.ShardedBatchIterator(
    dataset,
    batch_size=config.batch_size,
    seed=run.data_seed,
    mesh=mesh,
    start_step=start_step,
    num_steps=config.num_steps - start_step,
    images=not config.data_on_device,
  )
  packed = on_device.place_packed(dataset, mesh) if config.data_on_device else None
  window_time, timed_steps = time.perf_counter(), 0
  try:
    with batches, _stop_requests() as stop:
      for step, batch in zip(range(start_step + 1, config.num_steps + 1), batches, strict=False):
        if packed is not None:
          batch = {**batch, on_device.PACKED_KEY: packed}
        state, metrics = train_step(state, batch, rng)
        pending.append(metrics)  # device arrays: no host sync until the window closes
        timed_steps += 1
        end_of_window = step % config.log_every == 0 or step == config.num_steps
        checkpoint_now = step % config.checkpoint_every == 0 or step == config.num_steps
        if not (end_of_window or checkpoint_now or stop):
          continue
        # One host sync, then the NaN guard: no checkpoint ever holds a non-finite value.
        if num_models == 1:
          pending, finite = to_host((pending, state_check(state)))
          _raise_if_not_finite(
            np.array([bool(m["finite"]) for m in pending]),
            bool(finite),
            window_start,
            f"the checkpoint of step {last_good} in {checkpointer.directory}"
            if last_good is not None
            else "none (no checkpoint was saved yet)",
          )
        else:
          state = state_check(state)
          pending, alive = to_host((pending, state.alive))
          _record_divergence(run, pending, alive, window_start, diverged)
        if end_of_window or checkpoint_now:
          rate = timed_steps / (time.perf_counter() - window_time)
          _log_window(run, writers, pending, step, rate, diverged, progress)
          pending, window_start, window_time, timed_steps = [], step, time.perf_counter(), 0
        if checkpoint_now or stop:
          checkpointer.save(step, state)
          last_good = step
        if stop and step < config.num_steps:  # (a request at the last step just finishes)
          checkpointer.wait()
          if is_writer():
            _save_pending(run.workdir, step, pending)
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
  if is_writer():
    (run.workdir / PENDING_FILE).unlink(missing_ok=True)
  if progress is not None:
    progress.done += num_models * config.num_steps
  return trainer, state, dataset, diverged


def _record_divergence(
  run: Run, window: list, alive_now: np.ndarray, window_start: int, diverged: dict
) -> None:
  """Notes the models that died in this window, in the log and in their status.json: at the
  first step whose loss was not finite, or at the window's end for a state that overflowed
  under finite losses. Raises NonFiniteError when no model is left."""
  alive = np.array([np.reshape(m["alive"], -1) for m in window])  # [steps, M]
  alive = np.concatenate([alive, np.reshape(alive_now, (1, -1))])
  for i, name in enumerate(run.names):
    if name in diverged or alive[:, i].all():
      continue
    step = window_start + 1 + min(int(np.flatnonzero(~alive[:, i])[0]), len(window) - 1)
    diverged[name] = step
    if is_writer():
      (run.out_dirs[i] / STATUS_FILE).write_text(json.dumps({"diverged_at": step}))
    logging.warning(
      "model %s diverged at step %d (non-finite loss or state): frozen at its last finite "
      "state, the other models go on",
      name,
      step,
    )
  if len(diverged) == len(run.names):
    first = min(diverged.values())
    raise NonFiniteError(
      f"Non-finite loss or state: every model diverged, the first at step {first} "
      f"({', '.join(f'{n} at {s}' for n, s in diverged.items())}). Lower the learning rate or "
      "check the data."
    )


def _load_diverged(run: Run, resume_step: int | None) -> dict[str, int]:
  """The models that had diverged by the checkpoint the run resumes from (their status.json)."""
  diverged = {}
  for name, out_dir in zip(run.names, run.out_dirs, strict=True):
    path = out_dir / STATUS_FILE
    if path.exists():
      step = json.loads(path.read_text())["diverged_at"]
      if resume_step is not None and step <= resume_step:
        diverged[name] = step
      elif is_writer():
        path.unlink()  # recorded after the checkpoint: the resumed run will see it again
  return diverged


def _log_window(run, writers, window, step, rate, diverged, progress) -> None:
  """One metrics row per live model (means over the window) and the progress line."""
  means = {
    k: np.reshape(np.mean([m[k] for m in window], axis=0), -1)
    for k in window[0]
    if k not in ("finite", "alive")
  }
  for i, (name, writer) in enumerate(zip(run.names, writers, strict=True)):
    if name not in diverged:
      writer.write(step, {k: float(v[i]) for k, v in means.items()} | {"steps_per_second": rate})
  num_steps, num_models = run.configs[0].num_steps, len(run.names)
  eta = (num_steps - step) / rate
  where = f"step {step}/{num_steps}"
  if progress is not None and progress.total:
    done = progress.done + num_models * step
    eta = (progress.total - done) / (rate * num_models)
    where += f" | grid {100 * done / progress.total:.1f}%"
  live = [i for i, name in enumerate(run.names) if name not in diverged]
  terms = " ".join(f"{k} {np.mean(v[live]):.4g}" for k, v in means.items())
  logging.info(
    "%s | %.2f steps/s | ETA %s | %s%s",
    where,
    rate,
    _format_duration(eta),
    terms,
    f" (means over {len(live)} models)" if num_models > 1 else "",
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


def train(config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False):
  """Trains the configured model (or its `num_seeds` seeds) in `workdir`: `train_run` of
  `single_run(config, workdir)`. Returns (trainer, final state, dataset, diverged)."""
  config_lib.validate(config)
  return train_run(single_run(config, workdir), allow_config_change=allow_config_change)


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict:
  """Trains the configured model (`train`), then evaluates it (`evaluate.evaluate_run`).

  With `config.num_seeds` = K > 1, K models (seeds `run_seeds(config)`) are trained by one
  program on the batches of `config.seed`; each seed's metrics, eval.json and report go to
  `workdir/seed_<seed>/`.

  Returns:
    The evaluation results, also written to `workdir/eval.json`; with K > 1 seeds, a dict
    {"seed_<seed>": results} (each also in `workdir/seed_<seed>/eval.json`).
  """
  from disentangle_jax.training import evaluate  # evaluation imports the metrics

  config_lib.validate(config)
  run = single_run(config, workdir)
  trainer, state, dataset, diverged = train_run(run, allow_config_change=allow_config_change)
  return evaluate.evaluate_run(run, trainer.networks, state, dataset, diverged)
