"""The base experiment config, the `:arg` presets, and the checks every run passes first.

Every key a run can use exists in `base_config()` with a default, and experiment configs lock
it: a misspelt override (`--config.objectiv.name=...`) or a wrong type (`--config.batch_size=big`)
is an error before anything is built. `validate(config)` then checks every value (ranges, names,
the Lp-nested layout) and raises one `ConfigError` listing each problem on its own line, before
anything is compiled or written.

Each objective's settings live under its own name (`config.objective.beta_tcvae.beta`); a run
reads only the section of `config.objective.name`. Float settings of that section are the
objective's hyperparameters (`objective_hparams`): they enter the train step as arrays, so a
sweep over them is one compiled program.
"""

from __future__ import annotations

import ast
import json
import math
import pathlib
from typing import Any

import ml_collections
from ml_collections import config_dict

from disentangle_jax.metrics.suite import parse_metric_names
from disentangle_jax.models.registry import CONV_IMPLS

OBJECTIVES = ("beta_vae", "annealed_vae", "beta_tcvae", "factor_vae", "dip_vae", "joint_vae")
PRIORS = ("normal", "lp_nested")
LIKELIHOODS = ("bernoulli", "gaussian")
ENCODERS = ("mlp", "conv", "conv_k4")
DECODERS = ("mlp", "conv")


class ConfigError(ValueError):
  """A config value that makes no sense; the message names every bad key, one per line."""


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `key=value,flag,...` (the part after `:` in --config=file.py:arg).

  A bare `flag` sets a boolean default to True; values take the type of their default.

  Raises:
    ValueError: for a key that has no default, naming the valid keys.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(defaults)}.")
    default = defaults[key]
    if not value:
      if not isinstance(default, bool):
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value)
  return out


def isa_layout_string(p0: float, subspaces) -> str:
  """The config string of an ISA layout, e.g. isa_layout_string(2.0, [(2.1, 6)] * 3)."""
  return repr([float(p0), [(float(p), int(n)) for p, n in subspaces]])


def base_config() -> ml_collections.ConfigDict:
  """Defaults: a VAE with the Chen et al. MLP on generated dSprites (paper set-up, 50 epochs)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Seeds config.seed .. config.seed + num_seeds - 1 trained as one vmapped program with the
  # data order of config.seed; each seed's metrics and results go to workdir/seed_<s>/.
  config.num_seeds = 1

  # ------------------------------------------------------------------ data
  # Any name of disentangle_jax.data.DATASET_NAMES; its options below (unset ones are not passed).
  config.dataset = "dsprites"
  config.dataset_kwargs = ml_collections.ConfigDict(
    {
      "source": config_dict.placeholder(str),  # dsprites: "cache" (default) or "render"
      "cache_dir": config_dict.placeholder(str),  # dsprites: where the generated file lives
      "path": config_dict.placeholder(str),  # dsprites_npz: the official .npz file
      "data_dir": config_dict.placeholder(str),  # tfds:*: the prepared tensorflow-datasets folder
      "split": config_dict.placeholder(str),  # tfds:*: e.g. "train" (default: all splits)
    }
  )
  # Hold the whole dataset on the device as packed bits (dSprites, 360 MiB) and gather each
  # batch inside the step, instead of the host pipeline preparing and sending images.
  config.data_on_device = False

  # ------------------------------------------------------------------ model
  config.model = ml_collections.ConfigDict()
  config.model.encoder = "mlp"  # mlp | conv | conv_k4
  config.model.decoder = "mlp"  # mlp | conv
  # How the conv nets' convolutions run: "flax" (any backend; stride-2 layers as stride-1
  # matrix products, models/layers.py), "linen" (nn.Conv / nn.ConvTranspose as they are) or
  # "onednn" (CPU, opt-in: pip install -e ".[cpu-conv]"; disentangle_jax/cpu_conv).
  config.model.conv_impl = "flax"
  config.model.latent_dim = 10
  # Widths of the MLP nets' hidden layers (Chen et al.: 1200, 1200 / 1200, 1200, 1200).
  config.model.mlp_encoder_hidden = (1200, 1200)
  config.model.mlp_decoder_hidden = (1200, 1200, 1200)
  config.model.categorical_sizes = ()  # discrete latents (JointVAE), e.g. (3,)
  config.model.temperature = 0.67  # Gumbel-softmax relaxation of the discrete latents
  config.likelihood = "bernoulli"  # bernoulli | gaussian (unit variance)

  # ------------------------------------------------------------------ prior
  # The standard normal, or an Lp-nested (ISA) prior [p0, [(p1, n1), ...]].
  config.prior = ml_collections.ConfigDict()
  config.prior.name = "normal"
  # A Python literal, e.g. "[2.0, [(2.1, 6), (2.1, 6), (2.1, 6)]]" (see isa_layout_string).
  config.prior.layout = ""
  config.prior.scale = 1.0
  config.prior.learn_exponents = False
  config.prior.learning_rate = 5e-4

  # ------------------------------------------------------------------ objective
  # The run uses config.objective[config.objective.name]; each section holds its paper defaults.
  config.objective = ml_collections.ConfigDict()
  config.objective.name = "beta_vae"
  config.objective.beta_vae = ml_collections.ConfigDict({"beta": 1.0})
  config.objective.annealed_vae = ml_collections.ConfigDict(
    {"gamma": 1000.0, "capacity_max": 25.0, "capacity_steps": 100_000}
  )
  config.objective.beta_tcvae = ml_collections.ConfigDict(
    {"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "estimator": "mss"}  # estimator: mss | mws
  )
  config.objective.factor_vae = ml_collections.ConfigDict(
    {
      "gamma": 35.0,
      "discriminator": {"learning_rate": 1e-4, "b1": 0.5, "b2": 0.9},
    }
  )
  config.objective.dip_vae = ml_collections.ConfigDict(
    # kind: i | ii; lambda_d unset: 10 * lambda_od (type i) or lambda_od (type ii).
    {"kind": "i", "lambda_od": 10.0, "lambda_d": config_dict.placeholder(float)}
  )
  config.objective.joint_vae = ml_collections.ConfigDict(
    {
      "gamma": 150.0,
      "continuous_capacity_max": 40.0,
      "discrete_capacity_max": 1.1,
      "capacity_steps": 300_000,
    }
  )

  # ------------------------------------------------------------------ optimizer
  config.batch_size = 2048
  config.num_steps = 18_000  # about 50 epochs of dSprites at batch 2048
  config.learning_rate = 1e-3

  # ------------------------------------------------------------------ logging, checkpoints
  config.log_every = 100
  config.checkpoint_every = 1000
  config.keep_checkpoints = 2

  # ------------------------------------------------------------------ evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.num_examples = 10_000
  config.eval.batch_size = 1000
  # The report (workdir/report/): metrics by name (comma-separated; "" for none) and pictures.
  config.eval.report = True
  config.eval.metrics = "mig_chen,mig_dlib,beta_vae,factor_vae,dci,sap,modularity"
  # Each metric's parameters: disentanglement_lib's defaults, the field's convention.
  config.eval.mig_chen = ml_collections.ConfigDict({"num_samples": 10_000})
  config.eval.mig_dlib = ml_collections.ConfigDict({"num_train": 10_000, "num_bins": 20})
  config.eval.beta_vae = ml_collections.ConfigDict({"num_train": 10_000, "num_eval": 5_000})
  config.eval.factor_vae = ml_collections.ConfigDict({"num_train": 10_000, "num_eval": 5_000})
  config.eval.dci = ml_collections.ConfigDict({"num_train": 10_000, "num_test": 5_000})
  config.eval.sap = ml_collections.ConfigDict({"num_train": 10_000, "num_test": 5_000})
  config.eval.modularity = ml_collections.ConfigDict({"num_train": 10_000, "num_test": 5_000})
  return config


def objective_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The settings section of the configured objective, `config.objective[name]`."""
  return config.objective[config.objective.name]


def objective_hparams(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The objective's hyperparameters: the float settings of its section that are set.

  These enter the train step as float32 arrays (`TrainState.hparams`), so models that differ
  only in them share one compiled program. Nested sections (FactorVAE's discriminator optimizer)
  and non-float settings (estimator names, schedule lengths) stay static.
  """
  section = objective_settings(config)
  return {k: float(v) for k, v in section.items() if isinstance(v, float)}


def dataset_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The dataset options that are set (`config.dataset_kwargs` without the unset ones)."""
  return {k: v for k, v in config.dataset_kwargs.items() if v is not None}


def parse_layout(layout: str) -> Any:
  """config.prior.layout (a Python literal) as the spec `LpNested.from_spec` takes.

  Raises:
    ConfigError: for an empty layout or one that is not a Python literal.
  """
  if not layout:
    raise ConfigError(
      "prior.layout is empty but prior.name is 'lp_nested': give a tree such as "
      '--config.prior.layout="[2.0, [(2.1, 5), (2.1, 5)]]".'
    )
  try:
    return ast.literal_eval(layout)
  except (ValueError, SyntaxError) as error:
    raise ConfigError(f"prior.layout {layout!r} is not a Python literal: {error}") from None


def _positive_int(problems, config, key):
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    problems.append(f"{key} must be an int >= 1; got {value!r}.")


def _number(problems, config, key, *, low=None, high=None, low_open=False, high_open=False):
  value = _get(config, key)
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
    problems.append(f"{key} must be a finite number; got {value!r}.")
    return
  if low is not None and (value < low or (low_open and value == low)):
    problems.append(f"{key} must be {'>' if low_open else '>='} {low}; got {value!r}.")
  if high is not None and (value > high or (high_open and value == high)):
    problems.append(f"{key} must be {'<' if high_open else '<='} {high}; got {value!r}.")


def _choice(problems, config, key, valid):
  value = _get(config, key)
  if value not in valid:
    problems.append(f"Unknown {key} {value!r}; valid: {', '.join(valid)}.")


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every value of a run's config before anything is built, compiled or written.

  Returns:
    The config, unchanged.

  Raises:
    ConfigError: listing every problem found, one per line, each naming its key.
  """
  problems: list[str] = []
  for key in ("num_seeds", "batch_size", "num_steps", "log_every", "checkpoint_every"):
    _positive_int(problems, config, key)
  for key in ("keep_checkpoints", "model.latent_dim", "eval.num_examples", "eval.batch_size"):
    _positive_int(problems, config, key)
  if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
    problems.append(f"seed must be an int >= 0; got {config.seed!r}.")
  _number(problems, config, "learning_rate", low=0, low_open=True)
  _choice(problems, config, "model.encoder", ENCODERS)
  _choice(problems, config, "model.decoder", DECODERS)
  _choice(problems, config, "model.conv_impl", CONV_IMPLS)
  _number(problems, config, "model.temperature", low=0, low_open=True)
  sizes = tuple(config.model.categorical_sizes)
  if any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in sizes):
    problems.append(f"model.categorical_sizes must be ints >= 2; got {sizes!r}.")
  for key in ("mlp_encoder_hidden", "mlp_decoder_hidden"):
    widths = tuple(config.model[key])
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
      problems.append(f"model.{key} must be one or more ints >= 1; got {widths!r}.")
  _choice(problems, config, "likelihood", LIKELIHOODS)

  _choice(problems, config, "prior.name", PRIORS)
  _number(problems, config, "prior.scale", low=0, low_open=True)
  _number(problems, config, "prior.learning_rate", low=0, low_open=True)
  if config.prior.name == "lp_nested":
    _check_layout(problems, config)

  _choice(problems, config, "objective.name", OBJECTIVES)
  name = config.objective.name
  if name in OBJECTIVES:
    section = f"objective.{name}"
    for key, value in objective_settings(config).items():
      if isinstance(value, float) or (key == "lambda_d" and value is not None):
        _number(problems, config, f"{section}.{key}", low=0)
    if name in ("annealed_vae", "joint_vae"):
      _positive_int(problems, config, f"{section}.capacity_steps")
    if name == "beta_tcvae":
      _choice(problems, config, f"{section}.estimator", ("mss", "mws"))
    if name == "dip_vae":
      _choice(problems, config, f"{section}.kind", ("i", "ii"))
    if name == "factor_vae":
      _number(problems, config, f"{section}.discriminator.learning_rate", low=0, low_open=True)
      for b in ("b1", "b2"):
        _number(problems, config, f"{section}.discriminator.{b}", low=0, high=1, high_open=True)
    if name == "joint_vae" and not sizes:
      problems.append("objective 'joint_vae' needs model.categorical_sizes, e.g. (3,).")

  try:
    parse_metric_names(config.eval.metrics)
  except ValueError as error:
    problems.append(f"eval.metrics: {error}")
  for metric in ("mig_chen", "mig_dlib", "beta_vae", "factor_vae", "dci", "sap", "modularity"):
    for key in config.eval[metric]:
      _positive_int(problems, config, f"eval.{metric}.{key}")
  if problems:
    raise ConfigError("\n".join(problems))
  return config


def _check_layout(problems: list[str], config) -> None:
  from disentangle_jax.distributions import lp_nested  # the prior's own checks

  try:
    spec = parse_layout(config.prior.layout)
    lp_nested.LpNested.from_spec(spec, event_size=config.model.latent_dim)
  except ValueError as error:
    problems.append(f"prior.layout: {error}")


def load_saved_config(path) -> ml_collections.ConfigDict:
  """The config a run saved as JSON (workdir/config.json), on top of today's defaults.

  Keys added to the defaults since the run keep their default values; lists go back to tuples
  where the default is a tuple. The result is locked, like an experiment config.

  Raises:
    FileNotFoundError: naming the file, when it does not exist.
    ValueError: for a key today's config does not have.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: pass the workdir of a run made by experiments/main.py, or --config."
    )
  config = base_config()

  def merge(node, saved, prefix):
    for key, value in saved.items():
      if key not in node:
        raise ValueError(f"{path}: unknown config key {prefix}{key}.")
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(node[key], value, f"{prefix}{key}.")
      elif isinstance(node[key], tuple) and isinstance(value, list):
        node[key] = tuple(value)
      else:
        node[key] = value

  merge(config, json.loads(path.read_text()), "")
  return config.lock()


def use_isa_prior(
  config: ml_collections.ConfigDict, p0: float = 2.0, subspaces=((2.1, 6),) * 3
) -> ml_collections.ConfigDict:
  """Switches a config to the Lp-nested ISA prior with learned exponents (ISA-VAE defaults).

  The default layout [2.0, [(2.1, 6)] * 3] is the ISA-VAE reference code's; the latent size is
  set to the number of leaves.
  """
  config.model.latent_dim = sum(int(n) for _, n in subspaces)
  config.prior.name = "lp_nested"
  config.prior.layout = isa_layout_string(p0, subspaces)
  config.prior.scale = 1.0
  config.prior.learn_exponents = True
  config.prior.learning_rate = 5e-4
  return config


def apply_presets(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """The `:arg` presets every experiment config shares, then locks the config.

  Presets (comma-separated after the colon): `model=mlp|conv` picks the architecture with its
  paper set-up (conv: disentanglement_lib's batch 64, Adam 1e-4, 300k steps); `quick` shrinks
  the run to minutes on a laptop CPU (batch 256, 4000 steps: 1.4 epochs of dSprites;
  evaluation on 5000 images; BetaVAE, FactorVAE and DCI on 2000 points, 2000 z samples for
  Chen et al.'s MIG).
  """
  arg = parse_arg(arg, quick=False, model="")
  if arg.model == "conv":
    config.model.encoder, config.model.decoder = "conv", "conv"
    config.batch_size, config.learning_rate, config.num_steps = 64, 1e-4, 300_000
  elif arg.model == "mlp":
    config.model.encoder, config.model.decoder = "mlp", "mlp"
  elif arg.model:
    raise ValueError(f"model must be mlp or conv, got {arg.model!r}.")
  if arg.quick:
    config.batch_size, config.num_steps = 256, 4000
    config.learning_rate = max(config.learning_rate, 5e-4)
    config.log_every, config.checkpoint_every = 100, 500
    config.eval.num_examples = 5000
    # The report's slow parts shrink 5x: DCI's trees, the ~10^6 images that BetaVAE and
    # FactorVAE encode, and the z samples of Chen et al.'s MIG (its mixtures still hold every
    # posterior of the dataset).
    config.eval.mig_chen.num_samples = 2000
    config.eval.dci.num_train, config.eval.dci.num_test = 2000, 1000
    config.eval.beta_vae.num_train, config.eval.beta_vae.num_eval = 2000, 1000
    config.eval.factor_vae.num_train, config.eval.factor_vae.num_eval = 2000, 1000
    # Schedules shrink with the run, so capacities are reached within it.
    config.objective.annealed_vae.capacity_steps = 3000
    config.objective.joint_vae.capacity_steps = 3000
  return config.lock()
