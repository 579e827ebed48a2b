"""Multi-seed training: K vmapped models follow K single-seed runs.

Tiny set-up: the experiment configs of `test_train.tiny`, with the MLP widths (not configurable
from the config) shrunk by replacing the modules of `Networks`: encoder and decoder one hidden
layer of 32 units, FactorVAE's discriminator 2 x 16. Batches are random binary images [8, 64,
64, 1], the same for every model and for the single runs.
"""

import dataclasses

import jax
import numpy as np
import pytest

from disentangle_jax import data, models
from disentangle_jax.training import model as model_lib
from disentangle_jax.training import multi_seed
from disentangle_jax.training.train_step import build_trainer, jit_train_step, step_rng, unstack
from tests.training.test_train import tiny

OBSERVATION_SHAPE = (64, 64, 1)
SEEDS = (0, 7, 123)
DATASET_SIZE = 737_280  # dSprites; only beta-TCVAE's estimator uses it

# Tolerances of each slice of the vmapped run against its single run, in float32.
# vmap turns the single run's matrix products into batched ones, whose kernels may sum in another
# order (on the CPU most entries still come out bitwise equal). Each reordered sum is
# off by a few ulps (6e-8 each), so the loss and the metrics agree to RTOL = 1e-5, and so does a
# gradient entry, unless it is a sum that cancels to near zero: its relative error can then be
# large. Adam's update is lr * m / (sqrt(v) + eps) ~ lr * sign(g) in the first steps, which turns
# a relative gradient error e into an absolute parameter error of about e * lr, whatever the
# parameter's size. Hence two checks of the state after `num_steps` steps:
# - every entry within RTOL plus an absolute ENTRY_ATOL_LR * lr * num_steps, i.e. a relative
#   gradient error of at most 1% in every step (measured: at most 0.4% after 3 steps);
# - all but a fraction BAD_FRACTION of each model's parameters within RTOL plus 1e-4 * lr
#   (measured: at most 1 in 10^5, in gradients that nearly cancel).
# A wrong key, batch or initialisation moves most entries by O(lr) and fails both.
RTOL = 1e-5
ENTRY_ATOL_LR = 1e-2
BAD_FRACTION = 1e-4


def small_trainer(config):
  return build_trainer(config, OBSERVATION_SHAPE, DATASET_SIZE, networks=small_networks(config))


def small_networks(config) -> model_lib.Networks:
  networks = model_lib.build_networks(config, OBSERVATION_SHAPE)
  encoder = models.make_encoder(
    "mlp",
    latent_dim=networks.latent_dim,
    categorical_sizes=networks.categorical_sizes,
    hidden=(32,),
  )
  decoder = models.make_decoder("mlp", output_shape=OBSERVATION_SHAPE, hidden=(32,))
  discriminator = None
  if networks.discriminator is not None:
    discriminator = models.FactorVAEDiscriminator(hidden=16, num_layers=2)
  return dataclasses.replace(
    networks, encoder=encoder, decoder=decoder, discriminator=discriminator
  )


def random_batches(num: int, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  shape = (batch_size, *OBSERVATION_SHAPE)
  return [{"image": (rng.random(shape) < 0.3).astype(np.float32)} for _ in range(num)]


def assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


def test_step_rngs_are_the_single_runs():
  rngs = multi_seed.step_rngs(SEEDS)
  assert rngs.shape == (len(SEEDS),)
  for k, seed in enumerate(SEEDS):
    expected = jax.random.fold_in(jax.random.key(seed), 1)
    np.testing.assert_array_equal(jax.random.key_data(rngs[k]), jax.random.key_data(expected))


def test_bad_seeds_are_errors():
  trainer = small_trainer(tiny("beta_vae"))
  with pytest.raises(ValueError, match="distinct"):
    trainer.init_states((3, 3))
  with pytest.raises(ValueError, match="distinct"):
    multi_seed.step_rngs((1, 1))
  with pytest.raises(ValueError, match="empty"):
    multi_seed.step_rngs(())


def compare_states(got, want, lr: float, num_steps: int) -> tuple[float, float]:
  """Asserts the tolerances above for one model's state.

  Args:
    got: the slice of the vmapped run's state (host arrays).
    want: the single run's state.
    lr: the learning rate.
    num_steps: steps taken.

  Returns:
    (largest parameter error in units of lr, fraction of parameters outside RTOL + 1e-4 lr).
  """
  assert jax.tree.structure(got) == jax.tree.structure(want)
  np.testing.assert_array_equal(got.step, want.step)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.shape == w.shape and g.dtype == w.dtype
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, rtol=RTOL, atol=ENTRY_ATOL_LR * lr * num_steps)
  worst, outside, total = 0.0, 0, 0
  for g, w in zip(
    jax.tree.leaves((got.params, got.disc_params)),
    jax.tree.leaves((want.params, want.disc_params)),
    strict=True,
  ):
    error = np.abs(np.asarray(g, np.float64) - w)
    worst = max(worst, float(np.max(error, initial=0.0)) / lr)
    outside += int(np.sum(error > RTOL * np.abs(w) + 1e-4 * lr))
    total += g.size
  assert outside <= BAD_FRACTION * total, (outside, total)
  return worst, outside / total


# The discriminator (FactorVAE's objective) and the Lp-nested prior with learned exponents
# (ISA-VAE's config) in one run, to compile the slow prior once.
FACTOR_ISA = {"objective.name": "factor_vae"}


def test_stacked_initial_states_are_the_single_runs_bitwise():
  trainer = small_trainer(tiny("isa_vae", **FACTOR_ISA))
  states = trainer.init_states(SEEDS)
  assert states.disc_params and "prior" in states.params
  for leaf in jax.tree.leaves(states):
    assert leaf.shape[0] == len(SEEDS)
  for k, seed in enumerate(SEEDS):
    assert_trees_equal(jax.device_get(unstack(states, k)), jax.device_get(trainer.init_state(seed)))


def run_multi_seed(trainer, mesh, batches, broadcast_batch):
  """The K = len(SEEDS) models in one vmapped program: (initial params, final state, metrics)."""
  states = trainer.init_states(SEEDS)
  multi_step = multi_seed.jit_multi_seed_train_step(
    multi_seed.make_multi_seed_train_step(trainer.train_step, broadcast_batch), mesh, states
  )
  initial = jax.device_get(states.params)  # a copy: the step donates the state
  rngs = multi_seed.step_rngs(SEEDS)
  metrics = []
  for batch in batches:
    states, m = multi_step(states, batch, rngs)
    metrics.append(m)
  return initial, *jax.device_get((states, metrics))


@pytest.mark.parametrize(
  "name, overrides, num_steps, broadcast_batch",
  [("beta_vae", {}, 3, (False, True)), ("isa_vae", FACTOR_ISA, 2, (False,))],
  ids=["beta_vae", "factor_vae+isa_prior"],
)
def test_vmapped_models_follow_their_single_runs(name, overrides, num_steps, broadcast_batch):
  config = tiny(name, **overrides)
  trainer = small_trainer(config)
  mesh = data.make_data_mesh()
  batches = random_batches(num_steps)

  # K single runs with the plain jitted train step (one compilation, shared by the seeds).
  singles, single_metrics, step = [], [], None
  for seed in SEEDS:
    state = trainer.init_state(seed)
    if step is None:
      step = jit_train_step(trainer.train_step, mesh, state)
    rng = step_rng(seed)
    metrics = []
    for batch in batches:
      state, m = step(state, batch, rng)
      metrics.append(m)
    singles.append(jax.device_get(state))
    single_metrics.append(jax.device_get(metrics))

  for broadcast in broadcast_batch:
    initial, states, multi_metrics = run_multi_seed(trainer, mesh, batches, broadcast)
    for k in range(len(SEEDS)):
      worst, outside = compare_states(
        unstack(states, k), singles[k], config.learning_rate, num_steps
      )
      print(
        f"{name} broadcast_batch={broadcast} seed {SEEDS[k]}: largest error {worst:.2g} lr; "
        f"{outside:.2g} outside RTOL"
      )
      for t in range(num_steps):
        assert set(multi_metrics[t]) == set(single_metrics[k][t])
        for key, value in single_metrics[k][t].items():
          assert multi_metrics[t][key].shape == (len(SEEDS),)
          np.testing.assert_allclose(multi_metrics[t][key][k], value, rtol=RTOL, err_msg=key)
        assert bool(multi_metrics[t]["finite"][k])
    if trainer.networks.prior is not None:  # the exponents are learned, per model
      moved = states.params["prior"]["raw_exponents"] != initial["prior"]["raw_exponents"]
      assert np.all(np.any(moved, axis=1))
    # The models differ: the seeds vary the initialisation.
    first = jax.tree.leaves(states.params)[0]
    assert not np.allclose(first[0], first[1])
