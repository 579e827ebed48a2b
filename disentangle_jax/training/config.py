"""The base experiment config and the `:arg` preset parser used by experiments/configs/*.py.

Every key a run can use exists here with a default, and the returned ConfigDict is locked: a
misspelt override (`--config.objectiv.beta=4`) or a wrong type (`--config.batch_size=big`) is an
error before anything is built or compiled.
"""

from __future__ import annotations

import ml_collections

from disentangle_jax.metrics.suite import parse_metric_names

OBJECTIVES = ("beta_vae", "annealed_vae", "beta_tcvae", "factor_vae", "dip_vae", "joint_vae")
PRIORS = ("normal", "lp_nested")
LIKELIHOODS = ("bernoulli", "gaussian")


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
  # Seeds config.seed, config.seed + 1, ... trained as one vmapped program (training/multi_seed.py)
  # with the data order of config.seed; each seed's metrics and results go to workdir/seed_<s>/.
  # Worth it on accelerators; on a CPU, K single runs one after another are faster.
  config.num_seeds = 1

  # Data section: any name of disentangle_jax.data.DATASET_NAMES.
  config.dataset = "dsprites"
  config.dataset_kwargs = ml_collections.ConfigDict()  # e.g. {"data_dir": ...} for tfds

  # Model section.
  config.model = ml_collections.ConfigDict()
  config.model.encoder = "mlp"  # mlp | conv | conv_k4
  config.model.decoder = "mlp"  # mlp | conv
  config.model.latent_dim = 10
  config.model.categorical_sizes = ()  # JointVAE's discrete latents, e.g. (3,)
  config.likelihood = "bernoulli"  # bernoulli | gaussian (unit variance)

  # Prior section: the standard normal, or an Lp-nested (ISA) prior [p0, [(p1, n1), ...]].
  config.prior = ml_collections.ConfigDict()
  config.prior.name = "normal"
  # A Python literal, e.g. "[2.0, [(2.1, 6), (2.1, 6), (2.1, 6)]]" (see isa_layout_string).
  config.prior.layout = ""
  config.prior.scale = 1.0
  config.prior.learn_exponents = False
  config.prior.learning_rate = 5e-4

  # Objective section: every hyperparameter of every objective, so overrides are checked.
  config.objective = ml_collections.ConfigDict()
  config.objective.name = "beta_vae"
  config.objective.beta = 1.0  # beta-VAE's KL weight; beta-TCVAE's TC weight
  config.objective.alpha = 1.0  # beta-TCVAE: MI weight
  config.objective.gamma = 1.0  # beta-TCVAE: DWKL weight; annealed VAE / FactorVAE: see below
  config.objective.estimator = "mss"  # beta-TCVAE: mss | mws
  config.objective.capacity_gamma = 1000.0  # annealed VAE
  config.objective.capacity_max = 25.0
  config.objective.capacity_steps = 100_000
  config.objective.factor_gamma = 35.0  # FactorVAE
  config.objective.dip_kind = "i"  # DIP-VAE: i | ii
  config.objective.lambda_od = 10.0
  config.objective.lambda_d = ml_collections.FieldReference(None, field_type=float)
  config.objective.temperature = 0.67  # JointVAE
  config.objective.continuous_capacity_max = 40.0
  config.objective.discrete_capacity_max = 1.1
  config.objective.joint_capacity_steps = 300_000
  config.objective.joint_gamma = 150.0

  # Optimizer section.
  config.batch_size = 2048
  config.num_steps = 18_000  # about 50 epochs of dSprites at batch 2048
  config.learning_rate = 1e-3
  config.discriminator = ml_collections.ConfigDict()  # FactorVAE's discriminator
  config.discriminator.learning_rate = 1e-4
  config.discriminator.b1 = 0.5
  config.discriminator.b2 = 0.9

  # Logging, checkpoints and evaluation.
  config.log_every = 100
  config.checkpoint_every = 1000
  config.keep_checkpoints = 2
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


def load_saved_config(path) -> ml_collections.ConfigDict:
  """The config a run saved as JSON (workdir/config.json), on top of today's defaults.

  Keys added to the defaults since the run keep their default values; lists go back to tuples
  where the default is a tuple. The result is locked, like an experiment config.

  Raises:
    FileNotFoundError: naming the file, when it does not exist.
  """
  import json
  import pathlib

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
        if key == "dataset_kwargs":  # free-form: replaced whole
          node[key] = ml_collections.ConfigDict(value)
        else:
          merge(node[key], value, f"{prefix}{key}.")
      elif isinstance(node[key], tuple) and isinstance(value, list):
        node[key] = tuple(value)
      else:
        node[key] = value

  merge(config, json.loads(path.read_text()), "")
  return config.lock()


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the choices made by name (experiment configs lock themselves against new keys)."""
  for value, valid, what in (
    (config.objective.name, OBJECTIVES, "objective.name"),
    (config.prior.name, PRIORS, "prior.name"),
    (config.likelihood, LIKELIHOODS, "likelihood"),
  ):
    if value not in valid:
      raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(valid)}.")
  if isinstance(config.num_seeds, bool) or not isinstance(config.num_seeds, int):
    raise ValueError(f"num_seeds must be an int >= 1; got {config.num_seeds!r}.")
  if config.num_seeds < 1 or config.seed < 0:
    raise ValueError(
      f"num_seeds must be >= 1 and seed >= 0; got num_seeds {config.num_seeds}, seed {config.seed}."
    )
  try:
    parse_metric_names(config.eval.metrics)
  except ValueError as error:
    raise ValueError(f"eval.metrics: {error}") from None
  return config


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
    # The report's slow parts shrink 5x: DCI's gradient-boosted trees, the ~10^6 images that
    # BetaVAE and FactorVAE encode, and the z samples of Chen et al.'s MIG (its mixtures still
    # hold every posterior of the dataset).
    config.eval.mig_chen.num_samples = 2000
    config.eval.dci.num_train, config.eval.dci.num_test = 2000, 1000
    config.eval.beta_vae.num_train, config.eval.beta_vae.num_eval = 2000, 1000
    config.eval.factor_vae.num_train, config.eval.factor_vae.num_eval = 2000, 1000
    # Schedules shrink with the run, so capacities are reached within it.
    config.objective.capacity_steps = 3000
    config.objective.joint_capacity_steps = 3000
  return config.lock()
