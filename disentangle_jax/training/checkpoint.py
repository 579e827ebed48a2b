"""Orbax checkpoints of the train state, with resume."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = "checkpoints"


class CheckpointMismatchError(ValueError):
  """A saved checkpoint does not have the structure of the model being restored."""


def _not_orbax(record) -> bool:
  return record.levelno > logging.converter.STANDARD_INFO or "orbax" not in record.pathname


def quiet_orbax_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the absl log (its warnings still show)."""
  handler = logging.get_absl_handler()
  if _not_orbax not in handler.filters:
    handler.addFilter(_not_orbax)


def saved_steps(workdir: str | pathlib.Path) -> list[int]:
  """The steps of the finished checkpoints in workdir/checkpoints, sorted; reads only.

  A save in progress (or cut short by a kill) lives in a temporary folder, which is not a step.
  """
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


class Checkpointer:
  """Saves the train state every so often and restores the latest one.

  Saves are atomic (orbax writes a temporary folder and renames it), so a run killed during a
  save still finds its previous checkpoint.
  """

  def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, like):
    """The state saved at `step`, with the structure, dtypes and shardings of `like`.

    Raises:
      FileNotFoundError: no checkpoint of that step.
      CheckpointMismatchError: the checkpoint holds another model (other layers, sizes,
        objective or prior) than `like`.
    """
    if step not in self.all_steps():
      raise FileNotFoundError(
        f"No checkpoint of step {step} in {self.directory}; saved steps: {self.all_steps()}."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError as error:  # orbax: tree structures or shapes do not match
      detail = " ".join(str(error).split())[:300]
      raise CheckpointMismatchError(
        f"The checkpoint of step {step} in {self.directory} holds another model than the one "
        "configured: restore it with the config it was trained with (workdir/config.json), or "
        f"use a new workdir. (orbax: {detail})"
      ) from None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
