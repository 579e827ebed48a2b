"""M models in one program (seeds of a run, a sweep group) follow their M single runs.

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
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import model as model_lib
from disentangle_jax.training import multi_model
from disentangle_jax.training.train_step import build_trainer, jit_train_step, step_rng, unstack
from tests.training.test_train import tiny

OBSERVATION_SHAPE = (64, 64, 1)
SEEDS = (0, 7, 123)
DATASET_SIZE = 737_280  # dSprites; only beta-TCVAE's estimator uses it

# Tolerances of each slice of the multi-model run against its single run, in float32.
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
  rngs = multi_model.step_rngs(SEEDS)
  assert rngs.shape == (len(SEEDS),)
  for k, seed in enumerate(SEEDS):
    expected = jax.random.fold_in(jax.random.key(seed), 1)
    np.testing.assert_array_equal(jax.random.key_data(rngs[k]), jax.random.key_data(expected))


def test_bad_seeds_are_errors():
  trainer = small_trainer(tiny("beta_vae"))
  with pytest.raises(ValueError, match="seeds must be >= 0"):
    trainer.init_states((3, -1))
  with pytest.raises(ValueError, match="empty"):
    multi_model.step_rngs(())


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


def group_configs(config, overrides):
  """One config per model: `overrides` is a list of {key: value} (seed, learning_rate, the
  objective's hyperparameters), each on top of `config`."""
  configs = []
  for values in overrides:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      for key, value in values.items():
        node = c
        *path, last = key.split(".")
        for part in path:
          node = node[part]
        node[last] = value
    configs.append(c.lock())
  return configs


def run_single(trainer, config, batches):
  """One model alone with the plain jitted step: (final state, metrics per step)."""
  state = trainer.init_state(
    config.seed, config_lib.objective_hparams(config), config.learning_rate
  )
  step = jit_train_step(trainer.train_step, data.make_data_mesh(), state)
  rng, metrics = step_rng(config.seed), []
  for batch in batches:
    state, m = step(state, batch, rng)
    metrics.append(m)
  return jax.device_get((state, metrics))


def run_group(trainer, configs, batches, method):
  """The models in one program: (initial params, final state, metrics per step)."""
  states = trainer.init_models(configs)
  step = multi_model.jit_multi_model_step(
    multi_model.make_multi_model_step(trainer.train_step, method),
    multi_model.make_model_mesh(),
    states,
  )
  initial = jax.device_get(states.params)  # a copy: the step donates the state
  rngs = multi_model.step_rngs([c.seed for c in configs])
  metrics = []
  for batch in batches:
    states, m = step(states, batch, rngs)
    metrics.append(m)
  return initial, *jax.device_get((states, metrics))


# Seeds alone (a multi-seed run), and a sweep group whose models also differ in the objective's
# hyperparameter and the learning rate.
SEED_GROUP = [{"seed": s} for s in SEEDS]
SWEEP_GROUP = [
  {"seed": 0, "objective.beta_vae.beta": 1.0, "learning_rate": 1e-3},
  {"seed": 0, "objective.beta_vae.beta": 6.0, "learning_rate": 1e-3},
  {"seed": 7, "objective.beta_vae.beta": 4.0, "learning_rate": 3e-4},
]


@pytest.mark.parametrize(
  "name, overrides, group, num_steps",
  [
    ("beta_vae", {}, SEED_GROUP, 3),
    ("beta_vae", {}, SWEEP_GROUP, 3),
    ("isa_vae", FACTOR_ISA, SEED_GROUP, 2),
  ],
  ids=["seeds", "beta_and_learning_rate", "factor_vae+isa_prior"],
)
@pytest.mark.parametrize("method", ["vmap", "map"])
def test_models_of_one_program_follow_their_single_runs(name, overrides, group, num_steps, method):
  config = tiny(name, **overrides)
  trainer = small_trainer(config)
  configs = group_configs(config, group)
  batches = random_batches(num_steps)
  singles = [run_single(trainer, c, batches) for c in configs]
  initial, states, multi_metrics = run_group(trainer, configs, batches, method)
  for k, (single_state, single_metrics) in enumerate(singles):
    lr = configs[k].learning_rate
    worst, outside = compare_states(unstack(states, k), single_state, lr, num_steps)
    print(f"{name} {method} model {k}: largest error {worst:.2g} lr; {outside:.2g} outside RTOL")
    for t in range(num_steps):
      assert set(multi_metrics[t]) == set(single_metrics[t]) | {"alive"}
      for key, value in single_metrics[t].items():
        assert multi_metrics[t][key].shape == (len(configs),)
        np.testing.assert_allclose(multi_metrics[t][key][k], value, rtol=RTOL, err_msg=key)
      assert bool(multi_metrics[t]["alive"][k])
  if trainer.networks.prior is not None:  # the exponents are learned, per model
    moved = states.params["prior"]["raw_exponents"] != initial["prior"]["raw_exponents"]
    assert np.all(np.any(moved, axis=1))
  # The models differ: seeds vary the initialisation, betas and learning rates the updates.
  first = jax.tree.leaves(states.params)[0]
  assert not np.allclose(first[0], first[1])


def test_a_diverging_model_is_frozen_and_the_others_go_on():
  """Model 1 of 3 has a learning rate of 1e30 and goes non-finite within a few steps: from that
  step on it is dead and keeps its last finite state (that of its own run one step earlier);
  models 0 and 2 train as they would alone."""
  config = tiny("beta_vae")
  trainer = small_trainer(config)
  configs = group_configs(config, [{"seed": 0}, {"seed": 1, "learning_rate": 1e30}, {"seed": 2}])
  batches = random_batches(4)
  _, states, metrics = run_group(trainer, configs, batches, "map")
  alive = np.array([m["alive"] for m in metrics])  # [steps, models]
  assert alive[:, [0, 2]].all()
  died = int(np.argmin(alive[:, 1]))  # index of the first step that went non-finite
  assert not alive[-1, 1] and not alive[died:, 1].any() and alive[:died, 1].all()
  np.testing.assert_array_equal(states.alive, [True, False, True])
  dead = unstack(states, 1)
  assert int(dead.step) == died  # frozen after its last finite step
  if died:
    last_finite, _ = run_single(trainer, configs[1], batches[:died])
    jax.tree.map(np.testing.assert_array_equal, dead.params, last_finite.params)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(dead.params))
  for k in (0, 2):
    single_state, _ = run_single(trainer, configs[k], batches)
    compare_states(unstack(states, k), single_state, config.learning_rate, 4)


def test_models_must_divide_over_the_model_axis():
  trainer = small_trainer(tiny("beta_vae"))
  states = trainer.init_states(SEEDS)
  mesh = multi_model.make_model_mesh()
  step = multi_model.make_multi_model_step(trainer.train_step, "map")
  multi_model.jit_multi_model_step(step, mesh, states)  # 3 models over 1 device: fine
  with pytest.raises(ValueError, match="model_parallel 2 must divide the 1 devices"):
    multi_model.make_model_mesh(2)
  with pytest.raises(ValueError, match="method must be 'vmap' or 'map'"):
    multi_model.make_multi_model_step(trainer.train_step, "pmap")
