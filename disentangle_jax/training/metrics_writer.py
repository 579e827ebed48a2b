"""Training metrics to a JSON-lines file and TensorBoard event files in the workdir."""

from __future__ import annotations

import json
import pathlib

import tensorboardX


class MetricsWriter:
  """Appends {"step": s, name: value, ...} lines to metrics.jsonl and TensorBoard scalars."""

  def __init__(self, workdir: str | pathlib.Path):
    workdir = pathlib.Path(workdir)
    self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
    self._tensorboard = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"train/{name}", value, step)

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
