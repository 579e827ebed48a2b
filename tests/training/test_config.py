"""Experiment configs: every file loads, presets apply, bad keys and types are clear errors."""

import importlib.util
import pathlib

import pytest

from disentangle_jax.training import config as config_lib

CONFIG_DIR = pathlib.Path(__file__).parents[2] / "experiments" / "configs"
CONFIG_NAMES = [
  "vae",
  "beta_vae",
  "annealed_vae",
  "beta_tcvae",
  "factor_vae",
  "dip_vae_i",
  "dip_vae_ii",
  "joint_vae",
  "isa_vae",
  "isa_beta_tcvae",
]


def load(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_there_is_one_file_per_model():
  assert sorted(p.stem for p in CONFIG_DIR.glob("*.py")) == sorted(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("arg", [None, "quick", "model=conv", "model=mlp,quick"])
def test_every_config_loads_and_validates(name, arg):
  config = load(name, arg)
  config_lib.validate(config)
  if arg and "quick" in arg:
    assert config.num_steps <= 5000 and config.batch_size <= 256
  if arg and "conv" in arg:
    assert config.model.encoder == "conv"


def test_unknown_key_is_an_error():
  config = load("beta_vae")
  with pytest.raises(AttributeError, match="objectiv"):
    config.objectiv = 3
  with pytest.raises(AttributeError, match='Did you mean "beta"'):
    config.objective.beta_vae.betta = 4.0


def test_wrong_type_is_an_error():
  config = load("beta_vae")
  with pytest.raises(TypeError):
    config.batch_size = "big"
  config.objective.beta_vae.beta = 6  # an int where a float is expected is fine
  assert config.objective.beta_vae.beta == 6.0


def test_bad_preset_arguments_are_errors():
  with pytest.raises(ValueError, match="Unknown config argument 'fast'"):
    load("vae", "fast")
  with pytest.raises(ValueError, match="model must be mlp or conv"):
    load("vae", "model=resnet")


def test_unknown_choice_by_name_is_an_error():
  config = config_lib.base_config()
  config.objective.name = "beta_tc_vae"
  with pytest.raises(ValueError, match="Unknown objective.name 'beta_tc_vae'"):
    config_lib.validate(config)


# Every value that makes no sense, with the line that names it (issue: values accepted that
# crashed later, after compiling, or trained a broken model).
BAD_VALUES = [
  ("num_seeds", 0, "num_seeds must be an int >= 1; got 0"),
  ("seed", -1, "seed must be an int >= 0; got -1"),
  ("log_every", 0, "log_every must be an int >= 1; got 0"),
  ("checkpoint_every", 0, "checkpoint_every must be an int >= 1; got 0"),
  ("keep_checkpoints", 0, "keep_checkpoints must be an int >= 1; got 0"),
  ("num_steps", 0, "num_steps must be an int >= 1; got 0"),
  ("batch_size", 0, "batch_size must be an int >= 1; got 0"),
  ("model.latent_dim", 0, "model.latent_dim must be an int >= 1; got 0"),
  ("model.latent_dim", -3, "model.latent_dim must be an int >= 1; got -3"),
  ("eval.num_examples", 0, "eval.num_examples must be an int >= 1; got 0"),
  ("eval.batch_size", 0, "eval.batch_size must be an int >= 1; got 0"),
  ("eval.dci.num_train", 0, "eval.dci.num_train must be an int >= 1; got 0"),
  ("learning_rate", -1e-3, "learning_rate must be > 0; got -0.001"),
  ("learning_rate", 0.0, "learning_rate must be > 0; got 0.0"),
  ("learning_rate", float("nan"), "learning_rate must be a finite number; got nan"),
  ("objective.beta_vae.beta", -1.0, "objective.beta_vae.beta must be >= 0; got -1.0"),
  ("prior.scale", 0.0, "prior.scale must be > 0; got 0.0"),
  ("prior.scale", -2.0, "prior.scale must be > 0; got -2.0"),
  ("prior.learning_rate", 0.0, "prior.learning_rate must be > 0; got 0.0"),
  ("model.temperature", 0.0, "model.temperature must be > 0; got 0.0"),
  ("model.categorical_sizes", (3, 1), "model.categorical_sizes must be ints >= 2; got (3, 1)"),
  ("model.encoder", "resnet", "Unknown model.encoder 'resnet'; valid: mlp, conv, conv_k4"),
  ("model.conv_impl", "cudnn", "Unknown model.conv_impl 'cudnn'; valid: flax, linen, onednn"),
  ("likelihood", "poisson", "Unknown likelihood 'poisson'; valid: bernoulli, gaussian"),
  ("objective.name", "beta_tc_vae", "Unknown objective.name 'beta_tc_vae'"),
  ("prior.name", "laplace", "Unknown prior.name 'laplace'; valid: normal, lp_nested"),
  ("eval.metrics", "mig,dci", "eval.metrics: Unknown metric 'mig'"),
]


@pytest.mark.parametrize(
  "key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES]
)
def test_every_bad_value_is_one_line_naming_it(key, value, message):
  config = load("beta_vae")
  with config.unlocked():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(config)
  assert str(error.value) == message or str(error.value).startswith(message)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
  "name, key, value, message",
  [
    ("beta_tcvae", "estimator", "mws2", "Unknown objective.beta_tcvae.estimator 'mws2'"),
    ("beta_tcvae", "beta", -6.0, "objective.beta_tcvae.beta must be >= 0"),
    ("annealed_vae", "capacity_steps", 0, "objective.annealed_vae.capacity_steps must be an int"),
    ("annealed_vae", "capacity_max", -1.0, "objective.annealed_vae.capacity_max must be >= 0"),
    ("dip_vae_i", "kind", "iii", "Unknown objective.dip_vae.kind 'iii'; valid: i, ii"),
    ("dip_vae_i", "lambda_d", -1.0, "objective.dip_vae.lambda_d must be >= 0"),
    ("factor_vae", "gamma", -35.0, "objective.factor_vae.gamma must be >= 0"),
    ("joint_vae", "capacity_steps", 0, "objective.joint_vae.capacity_steps must be an int >= 1"),
  ],
)
def test_bad_objective_settings_name_their_section(name, key, value, message):
  config = load(name)
  section = config.objective[config.objective.name]
  with config.unlocked():
    section[key] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)


def test_every_problem_is_listed_one_per_line():
  config = load("isa_vae")
  with config.unlocked():
    config.log_every, config.prior.scale, config.prior.layout = 0, -1.0, "[2.0, [(2.1, 5)]]"
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(config)
  lines = str(error.value).splitlines()
  assert len(lines) == 3, lines
  assert lines[0].startswith("log_every") and lines[1].startswith("prior.scale")
  assert lines[2].startswith("prior.layout:") and "5 leaves, but the latent size is 18" in lines[2]


def test_joint_vae_needs_discrete_latents():
  config = load("joint_vae")
  with config.unlocked():
    config.model.categorical_sizes = ()
  with pytest.raises(config_lib.ConfigError, match="needs model.categorical_sizes"):
    config_lib.validate(config)


def test_dataset_options_can_be_set_and_unset_ones_are_not_passed():
  config = load("beta_vae")
  assert config_lib.dataset_kwargs(config) == {}
  config.dataset_kwargs.data_dir = "/data/tfds"  # settable: the tfds error tells users to
  assert config_lib.dataset_kwargs(config) == {"data_dir": "/data/tfds"}


def test_hparams_are_the_float_settings_of_the_chosen_objective():
  assert config_lib.objective_hparams(load("beta_tcvae")) == {
    "alpha": 1.0,
    "beta": 6.0,
    "gamma": 1.0,
  }
  assert config_lib.objective_hparams(load("dip_vae_ii")) == {"lambda_od": 10.0, "lambda_d": 10.0}
  config = load("dip_vae_i")
  with config.unlocked():
    config.objective.dip_vae.lambda_d = None  # unset: the paper's default for the kind
  assert config_lib.objective_hparams(config) == {"lambda_od": 10.0}


def test_isa_layout_matches_latent_size():
  config = load("isa_vae")
  assert config.model.latent_dim == 18
  assert config.prior.layout == "[2.0, [(2.1, 6), (2.1, 6), (2.1, 6)]]"
