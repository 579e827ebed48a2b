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
    config.objective.betta = 4.0


def test_wrong_type_is_an_error():
  config = load("beta_vae")
  with pytest.raises(TypeError):
    config.batch_size = "big"
  config.objective.beta = 6  # an int where a float is expected is fine
  assert config.objective.beta == 6.0


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


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("num_seeds", 0, "num_seeds must be >= 1"),
    ("seed", -1, "seed >= 0"),
  ],
)
def test_bad_seeds_are_errors(key, value, message):
  config = config_lib.base_config()
  config[key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_isa_layout_matches_latent_size():
  config = load("isa_vae")
  assert config.model.latent_dim == 18
  assert config.prior.layout == "[2.0, [(2.1, 6), (2.1, 6), (2.1, 6)]]"
