"""End-to-end training: every objective runs, resume is exact, NaNs stop the run clearly."""

import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disentangle_jax.training import NonFiniteError, evaluate_checkpoint, loop, train_and_evaluate
from disentangle_jax.training.checkpoint import Checkpointer
from disentangle_jax.training.train_step import (
  TrainState,
  all_finite,
  make_train_step,
  state_is_finite,
)
from tests.training.test_config import CONFIG_NAMES, load

REPO = pathlib.Path(__file__).parents[2]


def tiny(name: str, **overrides):
  """A config shrunk to seconds: small MLP widths are not configurable, so few steps of batch 8."""
  config = load(name, "quick")
  config.unlock()
  config.dataset_kwargs.source = "render"  # no 360 MiB cache in tests
  config.batch_size, config.num_steps = 8, 4
  config.log_every, config.checkpoint_every = 2, 2
  config.eval.num_examples, config.eval.batch_size = 64, 32
  config.eval.report = False  # the report (every metric on the whole dataset): test_report.py
  config.model.encoder = config.model.decoder = "mlp"
  # Small MLPs: every test trains in seconds (the paper's 1200-wide nets are tested in
  # tests/models).
  config.model.mlp_encoder_hidden, config.model.mlp_decoder_hidden = (64,), (64,)
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config.lock()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_objective_trains_and_evaluates(name, tmp_path):
  results = train_and_evaluate(tiny(name), str(tmp_path))
  for key in ("log_likelihood", "kl", "elbo", "mi", "tc", "dwkl", "active_units"):
    assert np.isfinite(results[key]), key
  # The decomposition adds up to the KL of the evaluation set (Monte Carlo for the ISA prior).
  if "isa" not in name:
    assert results["mi"] + results["tc"] + results["dwkl"] == pytest.approx(results["kl"], rel=1e-3)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [2, 4]
  assert json.loads((tmp_path / "eval.json").read_text())["step"] == 4
  assert any((tmp_path / "tensorboard").iterdir())


def _final_params(workdir):
  checkpointer = Checkpointer(workdir)
  step = checkpointer.latest_step()
  restored = checkpointer._manager.restore(step)
  checkpointer.close()
  return step, restored


def test_multi_seed_run_follows_the_single_run_of_its_first_seed(tmp_path):
  """num_seeds = 2: one program; seed 0's model, metrics and files are the single run's.

  Both runs draw the batches of config.seed = 0, so slice 0 of the stacked state follows the
  single run up to the reordered sums of vmap (tolerances of tests/training/test_multi_model.py).
  """
  from tests.training.test_multi_model import BAD_FRACTION, ENTRY_ATOL_LR  # and their reasoning

  config = tiny("beta_vae", num_seeds=2)
  multi = train_and_evaluate(config, str(tmp_path / "multi"))
  single = train_and_evaluate(tiny("beta_vae"), str(tmp_path / "single"))
  assert set(multi) == {"seed_0", "seed_1"}
  assert json.loads((tmp_path / "multi" / "eval.json").read_text()).keys() == multi.keys()
  for seed in (0, 1):
    seed_dir = tmp_path / "multi" / f"seed_{seed}"
    assert json.loads((seed_dir / "eval.json").read_text())["step"] == 4
    lines = (seed_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]
  _, state_multi = _final_params(tmp_path / "multi")
  _, state_single = _final_params(tmp_path / "single")
  # A gradient entry that nearly cancels can change sign with the summation order, and Adam then
  # moves it the other way: each run moves an entry by at most (1 - b1) / sqrt(1 - b2) = 3.2 lr
  # per step. All but a fraction BAD_FRACTION of the entries must agree to ENTRY_ATOL_LR * lr (a
  # 1% gradient error); measured on the full-size MLP: 1.3e-6 of them off by more (largest
  # 1.3 lr). A wrong batch or key moves most entries by O(lr).
  lr, steps = config.learning_rate, config.num_steps
  outside = total = 0
  for stacked, want in zip(
    jax.tree.leaves(state_multi["params"]), jax.tree.leaves(state_single["params"]), strict=True
  ):
    assert stacked.shape == (2, *want.shape)
    error = np.abs(np.asarray(stacked[0], np.float64) - want)
    assert np.all(error <= 2 * 3.2 * lr * steps)
    outside += int(np.sum(error > ENTRY_ATOL_LR * lr))
    total += want.size
  assert outside <= BAD_FRACTION * total, (outside, total)
  # Seed 1 is another model: its initialisation differs in every layer.
  for stacked in jax.tree.leaves(state_multi["params"]["encoder"]):
    assert np.any(stacked[0] != stacked[1])
  lines = (tmp_path / "multi" / "seed_0" / "metrics.jsonl").read_text().splitlines()
  want = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
  for got_line, want_line in zip(lines, want, strict=True):
    got_metrics, want_metrics = json.loads(got_line), json.loads(want_line)
    for key in ("loss", "kl"):
      assert got_metrics[key] == pytest.approx(want_metrics[key], rel=1e-5), key
  assert multi["seed_0"]["elbo"] == pytest.approx(single["elbo"], rel=1e-4)
  # A saved multi-seed run is evaluated seed by seed.
  again = evaluate_checkpoint(str(tmp_path / "multi"))
  assert again["seed_1"]["elbo"] == pytest.approx(multi["seed_1"]["elbo"], rel=1e-6)


@pytest.mark.parametrize(
  "num_seeds, match",
  [
    (1, r"Non-finite loss at step \d+ \(steps.*checkpoint"),
    (2, r"every model diverged, the first at step \d+ \(seed_3 at \d+, seed_4 at \d+\)"),
  ],
)
def test_nan_stops_with_the_step_and_the_last_good_checkpoint(tmp_path, num_seeds, match):
  """One model: the first non-finite step and the last good checkpoint. Several: a model that
  diverges is frozen and the run goes on; it stops when every model has diverged."""
  config = tiny("vae", num_steps=8, learning_rate=1e30, checkpoint_every=2)
  with config.unlocked():
    config.seed, config.num_seeds = 3, num_seeds
  with pytest.raises(NonFiniteError, match=match):
    train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
  "bad, expected",
  [(None, True), (np.nan, False), (np.inf, False), (-np.inf, False)],
)
def test_all_finite_sees_one_bad_element_in_any_leaf(bad, expected):
  """The step's finiteness flag against numpy's elementwise check, in any leaf."""
  tree = {"a": np.ones((3, 4), np.float32), "b": [np.zeros(5, np.float32), np.arange(6.0)]}
  if bad is not None:
    tree["b"][0][2] = bad
  assert np.all([np.isfinite(x).all() for x in jax.tree.leaves(tree)]) == expected
  assert bool(jax.jit(all_finite)(tree)) == expected
  # +inf and -inf in different leaves: flagged (a sum-based check would see NaN; this one, inf).
  tree["a"][0, 0], tree["b"][1][0] = np.inf, -np.inf
  assert not bool(all_finite(tree))


def _sqrt_loss(params, disc_params, hparams, batch, key, step):
  """sum(sqrt|w|): finite at w = 0, where its gradient is not (1 / (2 sqrt 0) = inf)."""
  del disc_params, hparams, batch, key, step
  return jnp.sum(jnp.sqrt(jnp.abs(params["w"]))), ({}, None)


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_a_non_finite_gradient_under_a_finite_loss_shows_in_the_state(num_seeds):
  """A gradient that overflows while the loss stays finite: the step's "finite" flag (the loss)
  stays True, and `state_is_finite` of the state after the step is False for that seed only."""
  tx = optax.adam(1e-3)
  good, bad = {"w": jnp.ones(4)}, {"w": jnp.array([1.0, 0.0, 2.0, 3.0])}
  seeds = [bad if k == num_seeds - 1 else good for k in range(num_seeds)]
  states = [
    TrainState(jnp.zeros((), jnp.int32), p, tx.init(p), {}, {}, {}, jnp.bool_(True)) for p in seeds
  ]
  for state in states:
    assert bool(state_is_finite(state))
  step = make_train_step(_sqrt_loss, tx, optax.identity())
  if num_seeds == 1:
    new_state, metrics = jax.jit(step)(states[0], {}, jax.random.key(0))
    state_finite = state_is_finite(new_state)
  else:
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    new_state, metrics = jax.jit(jax.vmap(step, in_axes=(0, None, None)))(
      stacked, {}, jax.random.key(0)
    )
    state_finite = jax.vmap(state_is_finite)(new_state)
  assert np.all(metrics["finite"])
  np.testing.assert_array_equal(state_finite, [k < num_seeds - 1 for k in range(num_seeds)])


def test_the_window_check_names_the_step_or_the_state():
  """`_raise_if_not_finite`: silent when all is finite; else the first bad loss's step, or, with
  every loss finite, the state after the window's last step."""
  ok = np.ones(4, bool)
  loop._raise_if_not_finite(ok, True, 10, "ckpt 10")
  losses = ok.copy()
  losses[2:] = False
  with pytest.raises(NonFiniteError, match=r"^Non-finite loss at step 13 \(steps 11-14 checked"):
    loop._raise_if_not_finite(losses, False, 10, "ckpt 10")
  with pytest.raises(NonFiniteError, match=r"state after step 14.*ckpt 10"):
    loop._raise_if_not_finite(ok, False, 10, "ckpt 10")


def test_bad_layout_is_an_error_before_compiling(tmp_path):
  with pytest.raises(ValueError, match="leaves, but the latent size is 10"):
    train_and_evaluate(tiny("isa_vae", **{"model.latent_dim": 10}), str(tmp_path))


def test_main_rejects_unknown_config_keys(tmp_path):
  """The command line: a misspelt override is an error naming the key, before any work."""
  result = subprocess.run(
    [
      sys.executable,
      "experiments/main.py",
      "--config=experiments/configs/beta_vae.py",
      "--config.objective.betta=3",
      f"--workdir={tmp_path}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode != 0
  assert "betta" in result.stderr


_SHARDING_SCRIPT = textwrap.dedent(
  """
  import os
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  import importlib.util
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from disentangle_jax import data
  from disentangle_jax.training.train_step import build_trainer, jit_train_step

  spec = importlib.util.spec_from_file_location("c", "experiments/configs/beta_tcvae.py")
  module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
  config = module.get_config("quick")
  dataset = data.get_dataset("dsprites", source="render")
  batch = data.host_batch(dataset, 0, batch_size=16, seed=0)
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  state = trainer.init_state(0)

  def loss_and_grads(params, batch):
    step = jnp.zeros((), jnp.int32)
    (loss, _), grads = jax.value_and_grad(trainer.loss_fn, has_aux=True)(
      params, {}, state.hparams, batch, jax.random.key(1), step)
    return loss, grads

  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.array(devices), ("data",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = jax.jit(loss_and_grads, in_shardings=(replicated, split), out_shardings=replicated)
    results.append(jax.device_get(fn(state.params, jax.device_put(batch, split))))
    # The real train step runs on this mesh too.
    fresh = trainer.init_state(0)  # donated
    step = jit_train_step(trainer.train_step, mesh, fresh)
    _, metrics = step(fresh, jax.device_put(batch, split), jax.random.key(1))
    assert bool(metrics["finite"])
  (loss1, g1), (loss8, g8) = results
  print("devices", jax.device_count(), "loss", loss1, loss8)
  np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.max(np.abs(a))))
  print("OK")
  """
)


def test_eight_devices_give_the_same_step_as_one():
  """Data-parallel over 8 simulated CPU devices: the same loss and gradients as one device.

  Tolerances cover the different order of the cross-device sums in float32: relative 1e-3, and
  absolute 1e-5 of each gradient's largest entry for entries near zero.
  """
  result = subprocess.run(
    [sys.executable, "-c", _SHARDING_SCRIPT],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "devices 8" in result.stdout and "OK" in result.stdout
