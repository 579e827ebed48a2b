"""A sweep: a base config, named methods and axes of values, expanded into a grid of models.

  config.base     an experiment config (every key of `config.base_config()`)
  config.methods  "{'beta_vae': {}, 'beta_tcvae': {'objective.name': 'beta_tcvae'}}": named
                  overrides of the base, e.g. the papers' methods ("" for the base alone)
  config.axes     "{'objective.beta': [1, 2, 4, 6], 'seed': [0, 1, 2]}": values per key

The grid is methods x the product of the axes. In a key, `objective.<name>` that is not a section
of `config.objective` means that setting of the model's own objective: `objective.beta` is
`objective.beta_vae.beta` for a beta-VAE and `objective.beta_tcvae.beta` for a beta-TCVAE.

Models that differ only in numbers the train step takes as arrays (the objective's float
hyperparameters, `learning_rate`, `seed`) form one group, trained as ONE compiled program with
the models on a leading axis; anything else (objective, prior, latent size, batch size, ...)
starts another group. All models of a group see the same batches (the data order of the base
config's seed); their seeds vary initialisation and sampling noise.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import data
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import multi_model, study
from disentangle_jax.training.loop import (
  Progress,
  Run,
  WorkdirError,
  config_differences,
  is_writer,
  to_host,
  train_run,
)
from disentangle_jax.training.train_step import build_trainer, unstack


def sweep_config(base: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The sweep config's keys with their defaults, around an (unlocked) base experiment config."""
  config = ml_collections.ConfigDict()
  config.base = config_lib.base_config() if base is None else base
  config.methods = ""
  config.axes = ""
  # How the models of a group share the program: "vmap" (batched: accelerators), "map"
  # (one after another inside the program: faster on a CPU), "auto" (by backend).
  config.model_axis = "auto"
  # Devices along the mesh's model axis (the models of a group are split over them); the rest
  # of the devices split each batch. 1: every device holds every model.
  config.model_parallel = 1
  # The study's evaluation of every model: metrics by name and the images for eval.json.
  config.study = ml_collections.ConfigDict()
  config.study.metrics = "mig_chen,mig_dlib,dci,sap,modularity"
  config.study.latent_plots = True  # per model, each latent's mean against each factor
  return config


@dataclasses.dataclass(frozen=True)
class Model:
  """One model of the grid.

  Attributes:
    name: unique and readable, e.g. "beta_tcvae-beta=2-seed=1".
    method: its method's name.
    values: {axis key: value} of its grid point.
    config: its full, validated experiment config (locked).
  """

  name: str
  method: str
  values: dict[str, Any]
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Group:
  """Models trained by one program: the same config but for `TRACED_KEYS` and hparams."""

  name: str
  models: tuple[Model, ...]


class SweepError(ValueError):
  """A sweep config that cannot be expanded; the message names the key or value."""


def _literal(text: str, what: str) -> Any:
  if not text:
    return {}
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as error:
    raise SweepError(f"{what} {text!r} is not a Python literal: {error}") from None
  if not isinstance(value, dict):
    raise SweepError(f"{what} must be a dict literal; got {type(value).__name__}.")
  return value


def resolve_key(config: ml_collections.ConfigDict, key: str) -> str:
  """The full dotted key: `objective.<name>` that is not a section -> the model's objective's."""
  parts = key.split(".")
  if len(parts) == 2 and parts[0] == "objective" and parts[1] not in config.objective:
    return f"objective.{config.objective.name}.{parts[1]}"
  return key


def _set(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
  key = resolve_key(config, key)
  node = config
  *path, last = key.split(".")
  try:
    for part in path:
      node = node[part]
    if last not in node:
      raise KeyError(last)
  except (KeyError, AttributeError, TypeError):
    raise SweepError(f"{where}: unknown config key {key!r}.") from None
  if isinstance(value, list) and isinstance(node[last], tuple):
    value = tuple(value)
  try:
    node[last] = value
  except (TypeError, ValueError) as error:
    raise SweepError(f"{where}: {key} = {value!r} has the wrong type ({error}).") from None


def _format(value: Any) -> str:
  """A value as it appears in a model's name (and file names): 1.0 -> "1", 1e-3 -> "0.001"."""
  text = f"{value:g}" if isinstance(value, float) else str(value)
  return re.sub(r"[^A-Za-z0-9.+-]", "", text) or "x"


def expand(sweep: ml_collections.ConfigDict) -> list[Model]:
  """Every model of the grid, each with its full validated config, in grid order.

  Raises:
    SweepError: an unknown key, an empty axis, a value of the wrong type, or a model whose
      config does not validate (the message names the model and the key).
  """
  methods = _literal(sweep.methods, "methods") or {sweep.base.objective.name: {}}
  axes = _literal(sweep.axes, "axes")
  for key, values in axes.items():
    if not isinstance(values, list | tuple) or not values:
      raise SweepError(f"axis {key!r} has no values: give a non-empty list.")
  for name, overrides in methods.items():
    if not isinstance(overrides, dict):
      raise SweepError(f"method {name!r}: overrides must be a dict of config keys to values.")
  models = []
  for method, overrides in methods.items():
    for point in itertools.product(*axes.values()):
      values = dict(zip(axes, point, strict=True))
      config = ml_collections.ConfigDict(sweep.base.to_dict())
      for key, value in overrides.items():
        _set(config, key, value, f"method {method!r}")
      for key, value in values.items():
        _set(config, key, value, f"axis {key!r}")
      parts = [method] + [f"{k.split('.')[-1]}={_format(v)}" for k, v in values.items()]
      name = "-".join(parts)
      try:
        config_lib.validate(config)
      except config_lib.ConfigError as error:
        raise SweepError(f"model {name}: {error}") from None
      models.append(Model(name, method, values, config.lock()))
  names = [m.name for m in models]
  if len(set(names)) != len(names):
    raise SweepError("two models of the grid have the same name: give axes distinct values.")
  return models


def group(models: Sequence[Model]) -> list[Group]:
  """The models split into groups of one structure each, in first-appearance order."""
  groups: dict[str, list[Model]] = {}
  for model in models:
    groups.setdefault(multi_model.structure_key(model.config), []).append(model)
  out = []
  for i, members in enumerate(groups.values()):
    methods = sorted({m.method for m in members})
    out.append(Group(f"group_{i}_{'+'.join(methods)}", tuple(members)))
  return out


def state_bytes(num_params: int, num_models: int) -> int:
  """Bytes of M models' train states: float32 params plus Adam's two moments, (1 + 2) x 4 B.

  The step needs about as much again for gradients and updates; `check_memory` doubles it.
  """
  return 3 * 4 * num_params * num_models


def check_memory(num_params: int, num_models: int, available_bytes: int, what: str) -> None:
  """Refuses a group whose states (and their gradients) would not fit in memory.

  Raises:
    SweepError: naming the estimate and what is available.
  """
  need = 2 * state_bytes(num_params, num_models)
  if need > available_bytes:
    raise SweepError(
      f"{what}: {num_models} models of {num_params:,} parameters need about "
      f"{need / 2**30:.1f} GiB for their states and gradients, more than the "
      f"{available_bytes / 2**30:.1f} GiB available: split the sweep or use more devices "
      f"(model_parallel)."
    )


def grid_summary(models: Sequence[Model], groups: Sequence[Group]) -> str:
  """One line for the log: how many models, in how many programs, and the steps in all."""
  steps = sum(m.config.num_steps for m in models)
  return (
    f"{len(models)} models in {len(groups)} program(s) "
    f"({', '.join(f'{g.name}: {len(g.models)}' for g in groups)}); {steps:,} model-steps"
  )


def available_memory_bytes() -> int:
  """Memory a group's states may use: the first device's limit on accelerators, else the
  host's available memory (/proc/meminfo)."""
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 1 << 62  # unknown: do not refuse


def group_run(group_: Group, workdir: pathlib.Path, sweep: ml_collections.ConfigDict) -> Run:
  """The `loop.Run` of one group: checkpoints in workdir/groups/<group>/, each model's files in
  workdir/models/<model>/."""
  description = {m.name: json.loads(m.config.to_json_best_effort()) for m in group_.models}
  return Run(
    configs=tuple(m.config for m in group_.models),
    names=tuple(m.name for m in group_.models),
    out_dirs=tuple(workdir / "models" / m.name for m in group_.models),
    workdir=workdir / "groups" / group_.name,
    description={"models": description},
    data_seed=sweep.base.seed,
    model_axis=sweep.model_axis,
    model_parallel=sweep.model_parallel,
  )


def _finished(run: Run) -> bool:
  """Whether every model of the run was trained to the end and scored (a resumed sweep skips
  it)."""
  steps = run.configs[0].num_steps
  for out_dir in run.out_dirs:
    path = out_dir / study.STUDY_FILE
    if not path.exists() or json.loads(path.read_text()).get("step") != steps:
      return False
  return True


def run_sweep(
  sweep: ml_collections.ConfigDict, workdir, *, allow_config_change: bool = False
) -> list[dict]:
  """Trains every model of the sweep, group by group, scores each, and writes the study.

  Each group trains as one program (`loop.train_run`); a resumed sweep skips finished groups
  and resumes the others from their checkpoints. One model that diverges is recorded and
  frozen; the others finish.

  Returns:
    The study records, one per model (also in workdir/models/<model>/study.json).

  Raises:
    SweepError, ConfigError: before anything is trained or written.
    WorkdirError: the workdir holds another sweep (unless `allow_config_change`).
  """
  workdir = pathlib.Path(workdir)
  models = expand(sweep)
  groups = group(models)
  logging.info("sweep: %s", grid_summary(models, groups))
  available = available_memory_bytes()
  for g in groups:
    trainer = build_trainer(g.models[0].config, _observation_shape(g.models[0].config), 1)
    shapes = jax.eval_shape(trainer.init_state, 0)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params))
    check_memory(num_params, len(g.models), available, g.name)
  saved = workdir / "sweep.json"
  description = json.loads(sweep.to_json_best_effort())
  if saved.exists() and not allow_config_change:
    differences = config_differences(json.loads(saved.read_text()), description)
    if differences:
      raise WorkdirError(
        f"{workdir} holds another sweep; differing keys: {'; '.join(differences)}. Use a new "
        "--workdir, or pass --allow_config_change."
      )
  if is_writer():
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(description, indent=2))

  progress = Progress(total=sum(m.config.num_steps for m in models))
  records = []
  for g in groups:
    run = group_run(g, workdir, sweep)
    if not _finished(run):
      trainer, state, dataset, diverged = train_run(
        run, allow_config_change=allow_config_change, progress=progress
      )
      state = to_host(state)  # every process joins; process 0 scores and writes
      if is_writer():
        _score_group(g, run, trainer, state, dataset, diverged, sweep, workdir)
    else:
      progress.done += len(g.models) * g.models[0].config.num_steps
      logging.info("sweep: %s finished earlier, skipped", g.name)
    if is_writer():
      records += study.read_records(run.out_dirs)
  if is_writer():
    study.write_study(records, list(_literal(sweep.axes, "axes")), workdir / "study")
    logging.info("sweep: study written to %s", workdir / "study")
  return records


def _observation_shape(config) -> tuple[int, ...]:
  dataset = data.get_dataset(config.dataset, **config_lib.dataset_kwargs(config))
  return dataset.observation_shape


def _score_group(g: Group, run: Run, trainer, state, dataset, diverged, sweep, workdir) -> None:
  """Scores the live models of a trained group (together: `study.score_models`) into their
  eval.json and study.json; a diverged model's files say at which step."""
  live = [i for i, m in enumerate(g.models) if m.name not in diverged]
  states = [unstack(state, i) if len(g.models) > 1 else state for i in range(len(g.models))]
  logging.info("sweep: scoring %d models of %s", len(live), g.name)
  plots = [
    workdir / "study" / "latents" / f"{g.models[i].name}.png" if sweep.study.latent_plots else None
    for i in live
  ]
  scored = study.score_models(
    [g.models[i].config for i in live],
    trainer.networks,
    [states[i].params for i in live],
    dataset,
    metric_names=sweep.study.metrics,
    seed=sweep.base.seed,
    latent_plots=plots,
  )
  scored = dict(zip(live, scored, strict=True))
  for i, model in enumerate(g.models):
    record = {"name": model.name, "method": model.method, "values": model.values}
    record["step"] = model.config.num_steps
    if i in scored:
      record.update(scored[i])
      evaluation = {k: v for k, v in record.items() if k not in ("name", "method", "values")}
      evaluation["step"] = int(states[i].step)
    else:
      record["diverged_at"] = diverged[model.name]
      evaluation = {"diverged_at": diverged[model.name], "step": int(states[i].step)}
    out_dir = run.out_dirs[i]
    (out_dir / "eval.json").write_text(json.dumps(evaluation, indent=2, default=float))
    (out_dir / study.STUDY_FILE).write_text(json.dumps(record, indent=2, default=float))
