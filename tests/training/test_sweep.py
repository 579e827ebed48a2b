"""Sweeps: the grid, its programs, bad input, and a whole tiny sweep with its study."""

import csv
import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from disentangle_jax.training import sweep as sweep_lib
from disentangle_jax.training.checkpoint import Checkpointer
from tests.training.test_report import GRID
from tests.training.test_train import tiny

ISA = {"prior.name": "lp_nested", "prior.layout": "[2.0, [(2.1, 5), (2.1, 5)]]"}


def small_sweep(methods: dict, axes: dict, **base_overrides) -> ml_collections.ConfigDict:
  base = tiny("beta_vae", **base_overrides)
  config = sweep_lib.sweep_config(ml_collections.ConfigDict(base.to_dict()))
  config.methods, config.axes = repr(methods), repr(axes)
  return config


def test_grid_is_methods_times_axes_and_groups_share_a_structure():
  """Methods x axis product, in grid order; `objective.beta` is each method's own beta; models
  that differ in beta, learning rate or seed share a program, other objectives or priors not."""
  config = small_sweep(
    {
      "bvae": {"objective.name": "beta_vae"},
      "tc": {"objective.name": "beta_tcvae"},
      "isa": {"objective.name": "beta_vae", **ISA},
    },
    {"objective.beta": [1.0, 4.0], "seed": [0, 1], "learning_rate": [1e-3]},
  )
  models = sweep_lib.expand(config)
  assert len(models) == 3 * 2 * 2
  assert models[0].name == "bvae-beta=1-seed=0-learning_rate=0.001"
  assert models[5].config.objective.beta_tcvae.beta == 1.0 and models[5].config.seed == 1
  assert models[5].config.objective.beta_vae.beta == config.base.objective.beta_vae.beta
  assert models[9].config.prior.name == "lp_nested"
  groups = sweep_lib.group(models)
  assert [len(g.models) for g in groups] == [4, 4, 4]
  assert [g.name for g in groups] == ["group_0_bvae", "group_1_tc", "group_2_isa"]
  # A shape change starts another program.
  config = small_sweep({"bvae": {}}, {"model.latent_dim": [4, 6], "seed": [0, 1]})
  assert [len(g.models) for g in sweep_lib.group(sweep_lib.expand(config))] == [2, 2]


@pytest.mark.parametrize(
  "methods, axes, message",
  [
    (
      {},
      {"objective.betta": [1.0]},
      "axis 'objective.betta': unknown config key 'objective.beta_vae.betta'",
    ),
    ({}, {"model.depth": [2]}, "unknown config key 'model.depth'"),
    ({}, {"seed": []}, "axis 'seed' has no values"),
    ({}, {"seed": 3}, "axis 'seed' has no values"),
    ({}, {"batch_size": ["big"]}, "batch_size = 'big' has the wrong type"),
    ({}, {"learning_rate": [-1.0]}, "learning_rate must be > 0; got -1.0"),
    ({"m": {"prior.nme": "x"}}, {}, "method 'm': unknown config key 'prior.nme'"),
    ({"m": 3}, {}, "method 'm': overrides must be a dict"),
  ],
)
def test_bad_sweeps_are_one_clear_line(methods, axes, message):
  config = small_sweep(methods or {"beta_vae": {}}, axes)
  with pytest.raises(sweep_lib.SweepError, match=message.replace("(", r"\(").replace(")", r"\)")):
    sweep_lib.expand(config)


def test_axes_must_be_a_dict_literal():
  config = small_sweep({"m": {}}, {})
  config.axes = "seed=[0, 1]"
  with pytest.raises(sweep_lib.SweepError, match="axes 'seed=\\[0, 1\\]' is not a Python literal"):
    sweep_lib.expand(config)


def test_a_grid_too_big_for_memory_is_refused_with_the_number():
  with pytest.raises(
    sweep_lib.SweepError, match=r"64 models of 14,196,516 parameters need about 20.3 GiB"
  ):
    sweep_lib.check_memory(14_196_516, 64, 8 << 30, "group_0")
  sweep_lib.check_memory(14_196_516, 8, 8 << 30, "group_0")  # 2.5 GiB: fine


def test_model_axis_by_backend():
  assert sweep_lib.multi_model.model_axis_method("auto", "cpu") == "map"
  assert sweep_lib.multi_model.model_axis_method("auto", "gpu") == "vmap"
  assert sweep_lib.multi_model.model_axis_method("vmap", "cpu") == "vmap"
  with pytest.raises(ValueError, match="model_axis must be one of"):
    sweep_lib.multi_model.model_axis_method("pmap", "cpu")


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
  from tests.data.test_real import _write_fake_npz

  path = tmp_path_factory.mktemp("npz") / "small_dsprites.npz"
  _write_fake_npz(path, GRID)
  return path


def test_a_tiny_sweep_trains_scores_and_writes_the_study(npz_path, tmp_path):
  """2 methods x 2 betas on a 288-image dSprites grid; one model's learning rate of 1e30 makes
  it diverge. The study has a row per model, the figures and a latent plot per live model; a
  second run of the same command finds everything done and changes nothing."""
  overrides = {
    "dataset": "dsprites_npz",
    "dataset_kwargs.source": None,
    "dataset_kwargs.path": str(npz_path),
    "num_steps": 4,
    "eval.mig_chen.num_samples": 100,
    "eval.mig_dlib.num_train": 200,
  }
  config = small_sweep(
    {"bvae": {"objective.name": "beta_vae"}, "tc": {"objective.name": "beta_tcvae"}},
    {"objective.beta": [1.0, 6.0], "learning_rate": [1e-3, 1e30]},
    **overrides,
  )
  config.study.metrics = "mig_chen,mig_dlib"
  records = sweep_lib.run_sweep(config, tmp_path)
  assert len(records) == 8
  diverged = {r["name"] for r in records if "diverged_at" in r}
  assert diverged and all("learning_rate=1e+30" in n for n in diverged)
  with open(tmp_path / "study" / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["name"] for r in rows] == [r["name"] for r in records]
  live = [r for r in rows if not r["diverged_at"]]
  assert live and all(np.isfinite(float(r["mig_chen.mig"])) for r in live)
  for name in ("tradeoff", "mig_distribution"):
    assert (tmp_path / "study" / f"{name}.png").stat().st_size > 1000
  for r in live:
    assert (tmp_path / "study" / "latents" / f"{r['name']}.png").exists()
    assert json.loads((tmp_path / "models" / r["name"] / "eval.json").read_text())["step"] == 4
  # Each group's models trained in one program: one checkpoint folder per group.
  groups = sorted(p.name for p in (tmp_path / "groups").iterdir())
  assert groups == ["group_0_bvae", "group_1_tc"]
  checkpointer = Checkpointer(tmp_path / "groups" / groups[0])
  assert checkpointer.latest_step() == 4
  checkpointer.close()
  before = (tmp_path / "study" / "results.csv").read_text()
  again = sweep_lib.run_sweep(config, tmp_path)
  assert again == records and (tmp_path / "study" / "results.csv").read_text() == before
  # Another sweep in the same workdir is refused.
  config.axes = repr({"objective.beta": [2.0]})
  with pytest.raises(ValueError, match="holds another sweep; differing keys: axes"):
    sweep_lib.run_sweep(config, tmp_path)


_MULTI_HOST_CONFIG = """
from disentangle_jax.training import config as common
from disentangle_jax.training import sweep as sweep_lib


def get_config(arg=None):
  base = common.base_config()
  base.dataset_kwargs.source = "render"
  base.batch_size, base.num_steps, base.log_every, base.checkpoint_every = 16, 4, 2, 2
  base.eval.num_examples, base.eval.batch_size = 32, 16
  base.model.mlp_encoder_hidden, base.model.mlp_decoder_hidden = (64,), (64,)
  config = sweep_lib.sweep_config(base)
  config.methods = repr({"bvae": {}})
  config.axes = repr({"objective.beta": [1.0, 4.0]})
  config.study.metrics, config.study.latent_plots = "", False
  return config.lock()
"""


def _sweep_process(config_path, workdir, devices: int, *extra):
  import os
  import subprocess
  import sys

  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
  }
  return subprocess.Popen(
    [
      sys.executable,
      "experiments/sweep.py",
      f"--config={config_path}",
      f"--workdir={workdir}",
      *extra,
    ],
    cwd=pathlib.Path(__file__).parents[2],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _group_params(config_path, workdir, step):
  """The params of a sweep's first group at `step`, restored onto this process's device (the
  target tree, as a resumed run builds it, fixes where the arrays go whatever topology saved
  them)."""
  import importlib.util

  from disentangle_jax.training.train_step import build_trainer, stack

  spec = importlib.util.spec_from_file_location("sweep_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  group = sweep_lib.group(sweep_lib.expand(module.get_config()))[0]
  trainer = build_trainer(group.models[0].config, (64, 64, 1), 737_280)
  like = stack([trainer.init_state(0) for _ in group.models])
  checkpointer = Checkpointer(workdir)
  state = checkpointer.restore(step, like)
  checkpointer.close()
  leaves = jax.tree_util.tree_leaves_with_path(state.params)
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def test_two_processes_train_the_sweep_of_one(tmp_path):
  """2 processes x 4 CPU devices (gloo collectives, each process feeding its rows of every batch)
  end with the parameters of 1 process x 8 devices, up to the order of the cross-device sums.

  Tolerances (the reasoning of test_multi_model): a gradient entry that nearly cancels can
  change sign with the summation order, and Adam then moves it the other way, by at most
  (1 - b1) / sqrt(1 - b2) = 3.2 lr per step in each run; so every entry is within
  2 * 3.2 * lr * steps, and all but a fraction 1e-4 within 1e-4 lr. A wrong batch shard or key
  moves most entries by O(lr) and fails the second check.
  """
  import socket

  config_path = tmp_path / "sweep_config.py"
  config_path.write_text(_MULTI_HOST_CONFIG)
  single = _sweep_process(config_path, tmp_path / "single", 8)
  _, err = single.communicate(timeout=600)
  assert single.returncode == 0, err[-3000:]
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  flags = ["--distributed", f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  processes = [
    _sweep_process(config_path, tmp_path / "multi", 4, *flags, f"--process_id={i}")
    for i in range(2)
  ]
  for process in processes:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
  states = [
    _group_params(config_path, tmp_path / name / "groups" / "group_0_bvae", 4)
    for name in ("single", "multi")
  ]
  lr, outside, total = 1e-3, 0, 0
  assert states[0].keys() == states[1].keys()
  for key in states[0]:
    a, b = states[0][key], states[1][key]
    assert a.shape == b.shape and a.shape[0] == 2
    error = np.abs(np.asarray(a, np.float64) - b)
    assert np.all(error <= 2 * 3.2 * lr * 4), key
    outside += int(np.sum(error > 1e-5 * np.abs(b) + 1e-4 * lr))
    total += a.size
  print(f"entries outside 1e-4 lr: {outside} of {total}")
  assert outside <= 1e-4 * total, (outside, total)
  rows = (tmp_path / "multi" / "models" / "bvae-beta=4" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r)["step"] for r in rows] == [2, 4]
  assert (tmp_path / "multi" / "study" / "results.csv").exists()
