"""Training metrics to a JSON-lines file and TensorBoard event files in the workdir.

metrics.jsonl is the record; the TensorBoard events are derived from it. A resumed run first
drops the rows after its checkpoint's step (a killed run may have logged past its last
checkpoint) and rewrites the events from the rows kept, so neither repeats a step.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import tensorboardX

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  """The rows of workdir/metrics.jsonl ([] if there is none); a torn last line is skipped."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # a line cut short by a kill: the resume rewrites it
      continue
  return rows


class MetricsWriter:
  """Appends {"step": s, name: value, ...} lines to metrics.jsonl and TensorBoard scalars.

  Args:
    workdir: the folder of the two outputs.
    resume_step: the step the run resumes from: rows after it are dropped and the TensorBoard
      events are rewritten from the rows kept. None for a fresh run (any old outputs go).
  """

  def __init__(self, workdir: str | pathlib.Path, resume_step: int | None = None):
    workdir = pathlib.Path(workdir)
    kept = (
      [] if resume_step is None else [r for r in read_metrics(workdir) if r["step"] <= resume_step]
    )
    path = workdir / METRICS_FILE
    partial = path.with_suffix(".jsonl.tmp")
    partial.write_text("".join(json.dumps(row) + "\n" for row in kept))
    partial.replace(path)  # atomic: a kill here leaves the old file or the new one
    shutil.rmtree(workdir / TENSORBOARD_DIR, ignore_errors=True)
    self._jsonl = open(path, "a")  # noqa: SIM115 (closed in close())
    self._tensorboard = tensorboardX.SummaryWriter(str(workdir / TENSORBOARD_DIR))
    for row in kept:
      self._add_scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

  def _add_scalars(self, step: int, scalars: dict[str, float]) -> None:
    for name, value in scalars.items():
      self._tensorboard.add_scalar(f"train/{name}", value, step)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    self._add_scalars(step, scalars)

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
