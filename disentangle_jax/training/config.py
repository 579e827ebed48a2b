"""The base experiment config and the `:arg` preset parser used by experiments/configs/*.py.

Every key a run can use exists here with a default, and the returned ConfigDict is locked: a
misspelt override (`--config.objectiv.beta=4`) or a wrong type (`--config.batch_size=big`) is an
error before anything is built or compiled.
"""

from __future__ import annotations

import ml_collections

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
  return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the choices made by name (experiment configs lock themselves against new keys)."""
  for value, valid, what in (
    (config.objective.name, OBJECTIVES, "objective.name"),
    (config.prior.name, PRIORS, "prior.name"),
    (config.likelihood, LIKELIHOODS, "likelihood"),
  ):
    if value not in valid:
      raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(valid)}.")
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
  evaluation on 5000 images).
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
    # Schedules shrink with the run, so capacities are reached within it.
    config.objective.capacity_steps = 3000
    config.objective.joint_capacity_steps = 3000
  return config.lock()
