"""A workdir is never damaged, resume is exact in every output, bad values are refused up front.

The interrupted runs (SIGKILL during a checkpoint, SIGINT in the middle of a logging window) run
`experiments/main.py` in a subprocess and are compared with an uninterrupted run of the same
command: the final parameters bitwise (CPU, same machine) and every metrics.jsonl row exactly,
except `steps_per_second`, which is a timing.
"""

import json
import pathlib
import signal
import struct
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from disentangle_jax.training import (
  NonFiniteError,
  WorkdirError,
  cli,
  evaluate_checkpoint,
  loop,
  train_and_evaluate,
)
from disentangle_jax.training.checkpoint import Checkpointer, CheckpointMismatchError, saved_steps
from tests.training.test_train import tiny

REPO = pathlib.Path(__file__).parents[2]


def _files(workdir: pathlib.Path) -> dict[str, bytes]:
  """Every file under workdir with its bytes (the workdir's exact state)."""
  return {str(p.relative_to(workdir)): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


def _rows(workdir) -> list[dict]:
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k != "steps_per_second"} for line in lines]


def _final_params(workdir):
  checkpointer = Checkpointer(workdir)
  step = checkpointer.latest_step()
  restored = checkpointer._manager.restore(step)
  checkpointer.close()
  return step, restored


# ------------------------------------------------------------------------------ workdir checks


def test_another_config_is_refused_before_anything_is_written(tmp_path):
  """A workdir holding a run refuses a config that differs from its config.json, naming the
  keys, and is left byte for byte as it was; the old run can still be evaluated."""
  train_and_evaluate(tiny("beta_vae", num_steps=2), str(tmp_path))
  before = _files(tmp_path)
  with pytest.raises(WorkdirError, match=r"differing keys: learning_rate \(0.001 -> 0.002\)"):
    train_and_evaluate(tiny("beta_vae", num_steps=2, learning_rate=2e-3), str(tmp_path))
  with pytest.raises(WorkdirError, match=r"num_steps \(2 -> 4\)"):
    train_and_evaluate(tiny("beta_vae", num_steps=4), str(tmp_path))
  with pytest.raises(WorkdirError, match=r"model.latent_dim \(10 -> 18\).*prior.name"):
    train_and_evaluate(tiny("isa_vae", num_steps=2), str(tmp_path))
  # A deliberate change of the model still cannot load the checkpoint: refused, nothing written.
  with pytest.raises(CheckpointMismatchError, match="holds another model than the one configured"):
    train_and_evaluate(tiny("isa_vae", num_steps=2), str(tmp_path), allow_config_change=True)
  assert _files(tmp_path) == before
  assert evaluate_checkpoint(str(tmp_path))["step"] == 2


def test_a_checkpoint_past_num_steps_is_refused(tmp_path):
  train_and_evaluate(tiny("vae", num_steps=4), str(tmp_path))
  before = _files(tmp_path)
  with pytest.raises(WorkdirError, match="num_steps 2 is below the step of the checkpoint.*4"):
    train_and_evaluate(tiny("vae", num_steps=2), str(tmp_path), allow_config_change=True)
  assert _files(tmp_path) == before


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"log_every": 0}, "log_every must be an int >= 1; got 0"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an int >= 1"),
    ({"model.latent_dim": 0}, "model.latent_dim must be an int >= 1"),
    ({"eval.num_examples": 0}, "eval.num_examples must be an int >= 1"),
    ({"prior.scale": 0.0}, "prior.scale must be > 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be an int >= 1"),
    ({"batch_size": 10**7}, "batch_size 10000000 must be at most the dataset's 737280"),
  ],
)
def test_bad_values_write_nothing(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(tiny("isa_vae", **overrides), str(workdir))
  assert not workdir.exists()


def test_cli_errors_are_one_line_with_a_status(capsys):
  """The command line prints known errors as `error: <line>` with exit status 2 (bad input) or
  3 (a non-finite run); anything else is a bug and keeps its traceback."""
  with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
    raise WorkdirError("workdir holds another run")
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "error: workdir holds another run\n"
  with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
    raise NonFiniteError("Non-finite loss at step 3")
  assert exit_info.value.code == 3
  with pytest.raises(ZeroDivisionError), cli.one_line_errors():
    1 / 0  # noqa: B018


# ------------------------------------------------------------------------------ metrics on resume


def _tensorboard_steps(workdir: pathlib.Path) -> dict[str, list[int]]:
  """{tag: steps} of every scalar in the TensorBoard event files (TFRecord framing: uint64
  length, uint32 CRC, the Event proto, uint32 CRC)."""
  from tensorboardX.proto import event_pb2

  steps: dict[str, list[int]] = {}
  for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        steps.setdefault(value.tag, []).append(event.step)
  return steps


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
  """A run killed after logging past its last checkpoint (rows 4 and 5 after the checkpoint of
  step 3) resumes with metrics.jsonl and TensorBoard holding every step once, with the values
  of an uninterrupted run."""
  whole = tmp_path / "whole"
  train_and_evaluate(tiny("beta_vae", num_steps=6, log_every=1, checkpoint_every=3), str(whole))
  killed = tmp_path / "killed"
  train_and_evaluate(tiny("beta_vae", num_steps=3, log_every=1, checkpoint_every=3), str(killed))
  with open(killed / "metrics.jsonl", "a") as f:  # what the killed run logged after step 3
    f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + json.dumps({"step": 5, "loss": 2.0}))
  train_and_evaluate(
    tiny("beta_vae", num_steps=6, log_every=1, checkpoint_every=3),
    str(killed),
    allow_config_change=True,
  )
  assert _rows(killed) == _rows(whole)
  assert [r["step"] for r in _rows(killed)] == [1, 2, 3, 4, 5, 6]
  (step_a, state_a), (step_b, state_b) = _final_params(whole), _final_params(killed)
  assert step_a == step_b == 6
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)  # bitwise on CPU
  for tag, steps in _tensorboard_steps(killed).items():
    assert steps == [1, 2, 3, 4, 5, 6], tag


def test_an_interrupted_window_is_kept_with_its_dtypes(tmp_path):
  """The metrics of a window cut short by a signal round-trip exactly (float32 values and bool
  flags), so the resumed window's means are bitwise those of an uninterrupted window."""
  window = [
    {"loss": np.float32(1.1), "kl": np.array([0.3, 0.7], np.float32), "finite": np.bool_(True)},
    {"loss": np.float32(2.3), "kl": np.array([0.1, 0.9], np.float32), "finite": np.bool_(True)},
  ]
  loop._save_pending(tmp_path, 7, window)
  assert loop._load_pending(tmp_path, 6) == []  # another step: not this run's window
  loaded = loop._load_pending(tmp_path, 7)
  for got, want in zip(loaded, window, strict=True):
    for key in want:
      assert got[key].dtype == np.asarray(want[key]).dtype
      np.testing.assert_array_equal(got[key], want[key])


# ------------------------------------------------------------------------------ interrupted runs

_COMMAND = [
  sys.executable,
  "experiments/main.py",
  "--config=experiments/configs/beta_tcvae.py:quick",
  "--config.dataset_kwargs.source=render",
  "--config.batch_size=8",
  "--config.num_steps=60",
  "--config.log_every=20",
  "--config.checkpoint_every=30",
  "--config.eval.num_examples=64",
  "--config.eval.batch_size=32",
  "--config.eval.report=False",
  "--config.model.mlp_encoder_hidden=(64,)",
  "--config.model.mlp_decoder_hidden=(64,)",
]

# main.py, with Checkpointer.save replaced by one that kills the process right after starting
# the (asynchronous) save of step 60: the run dies while that checkpoint is being written.
_KILL_DURING_SAVE = textwrap.dedent(
  """
  import os, signal, sys
  from absl import app
  from disentangle_jax.training import checkpoint
  save = checkpoint.Checkpointer.save
  def save_then_die(self, step, state):
    save(self, step, state)
    if step == 60:
      os.kill(os.getpid(), signal.SIGKILL)
  checkpoint.Checkpointer.save = save_then_die
  sys.argv = ["main.py"] + sys.argv[1:]
  sys.path.insert(0, "experiments")
  import main
  app.run(main.main)
  """
)


# main.py, sending itself SIGINT (a real signal, through the run's handler) as the batch of step
# 23 is handed to the loop: the run is interrupted in the middle of the window of steps 21-40.
_SIGINT_AT_STEP_23 = textwrap.dedent(
  """
  import os, signal, sys
  from absl import app
  from disentangle_jax.data import pipeline
  next_batch = pipeline.ShardedBatchIterator.__next__
  def next_then_signal(self):
    batch = next_batch(self)
    if self.step == 23:  # the global step this batch is for
      os.kill(os.getpid(), signal.SIGINT)
    return batch
  pipeline.ShardedBatchIterator.__next__ = next_then_signal
  sys.argv = ["main.py"] + sys.argv[1:]
  sys.path.insert(0, "experiments")
  import main
  app.run(main.main)
  """
)


def _run(workdir, *extra, script=None, **kwargs):
  command = _COMMAND + [f"--workdir={workdir}", *extra]
  if script is not None:
    command = [sys.executable, "-c", script, *command[2:]]
  return subprocess.Popen(
    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
  )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  process = _run(workdir)
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return workdir


def _assert_same_run(workdir, reference):
  step_a, state_a = _final_params(reference)
  step_b, state_b = _final_params(workdir)
  assert step_a == step_b == 60
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  assert _rows(workdir) == _rows(reference)
  assert [r["step"] for r in _rows(workdir)] == [20, 30, 40, 60]


def test_killed_while_writing_a_checkpoint_resumes_exactly(tmp_path, uninterrupted):
  """SIGKILL while the last checkpoint is being written: the same command resumes from the
  previous one and ends with the uninterrupted run's parameters and metrics rows."""
  process = _run(tmp_path, "--config.num_steps=90", script=_KILL_DURING_SAVE)
  _, err = process.communicate(timeout=600)
  assert process.returncode == -signal.SIGKILL, err[-3000:]
  assert saved_steps(tmp_path)[-1] == 30  # the save of step 60 did not finish
  # The real run asks for 60 steps: the killed one asked for 90 so that step 60 was mid-run.
  process = _run(tmp_path, "--allow_config_change")
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  _assert_same_run(tmp_path, uninterrupted)


def test_sigint_saves_the_step_reached_and_resumes_exactly(tmp_path, uninterrupted):
  """SIGINT in the middle of a logging window: the run saves a checkpoint of the step it
  reached, prints one line and exits 130; the same command then ends exactly where the
  uninterrupted run ends, metrics rows included."""
  process = _run(tmp_path, script=_SIGINT_AT_STEP_23)
  _, err = process.communicate(timeout=600)
  assert process.returncode == 128 + signal.SIGINT, err[-3000:]
  interrupted = [line for line in err.splitlines() if line.startswith("interrupted:")]
  assert len(interrupted) == 1 and "SIGINT at step" in interrupted[0], err[-3000:]
  assert "Traceback" not in err
  step = int(interrupted[0].split("SIGINT at step ")[1].split("/")[0])
  assert step == 23 and saved_steps(tmp_path)[-1] == 23  # mid-window: 21-40 is cut after 23
  process = _run(tmp_path)
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  _assert_same_run(tmp_path, uninterrupted)


# ------------------------------------------------------------------------------ evaluation


def test_an_overflowing_model_is_not_evaluated_into_eval_json(tmp_path):
  """A checkpoint with finite parameters whose decoder overflows (logits of 3e38, whose sum over
  the pixels is inf): evaluation raises NonFiniteError naming the scores and writes no
  eval.json."""
  config = tiny("vae", num_steps=2)
  train_and_evaluate(config, str(tmp_path))
  (tmp_path / "eval.json").unlink()
  checkpointer = Checkpointer(tmp_path)
  state = checkpointer._manager.restore(2)
  decoder = state["params"]["decoder"]["params"]
  last = sorted(decoder)[-1]  # the logits layer
  decoder[last]["bias"] = np.full_like(decoder[last]["bias"], 3e38)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
  import orbax.checkpoint as ocp

  checkpointer._manager.save(3, args=ocp.args.StandardSave(state))
  checkpointer.close()
  with pytest.raises(NonFiniteError, match="Evaluation gave non-finite log_likelihood"):
    evaluate_checkpoint(str(tmp_path), step=3)
  assert not (tmp_path / "eval.json").exists() and not (tmp_path / "step_3").exists()


def test_data_on_the_device_trains_the_same_model(tmp_path):
  """dSprites held on the device as packed bits, each batch gathered and unpacked inside the
  step: the same batches and images as the host pipeline, so the same parameters (the images
  are exact 0/1 floats either way; the tolerance allows XLA to fuse the unpacking into the first
  product differently)."""
  from tests.data.test_real import _write_fake_npz
  from tests.training.test_report import GRID

  path = tmp_path / "small.npz"
  _write_fake_npz(path, GRID)
  overrides = {
    "dataset": "dsprites_npz",
    "dataset_kwargs.source": None,
    "dataset_kwargs.path": str(path),
    "num_steps": 3,
  }
  host = train_and_evaluate(tiny("beta_vae", **overrides), str(tmp_path / "host"))
  device = train_and_evaluate(
    tiny("beta_vae", data_on_device=True, **overrides), str(tmp_path / "device")
  )
  (_, a), (_, b) = _final_params(tmp_path / "host"), _final_params(tmp_path / "device")
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  assert device["elbo"] == pytest.approx(host["elbo"], rel=1e-6)
  with pytest.raises(ValueError, match="data_on_device needs a dataset held as packed bits"):
    train_and_evaluate(
      tiny("beta_vae", data_on_device=True, dataset="noisy_dsprites"), str(tmp_path / "noisy")
    )
