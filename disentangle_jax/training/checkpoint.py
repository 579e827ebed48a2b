"""Orbax checkpoints of the TrainState, with resume."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves the train state every so often and restores the latest one.

  Saves are atomic (orbax writes a temporary folder and renames it), so a run killed during a
  save still finds its previous checkpoint.
  """

  def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, like):
    """The latest saved state with the structure, dtypes and shardings of `like`."""
    return self.restore(self.latest_step(), like)

  def restore(self, step: int, like):
    """The state saved at `step`, with the structure, dtypes and shardings of `like`."""
    if step not in self.all_steps():
      raise FileNotFoundError(
        f"No checkpoint of step {step} in {self.directory}; saved steps: {self.all_steps()}."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
