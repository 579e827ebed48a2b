"""FactorVAE (Kim & Mnih 2018): gamma = 35, discriminator MLP 6x1000 with Adam(1e-4, 0.5, 0.9).

  python experiments/main.py --config=experiments/configs/factor_vae.py:model=conv \
      --workdir=workdirs/factor
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "factor_vae"
  config.objective.factor_vae.gamma = 35.0
  config.objective.factor_vae.discriminator.update(learning_rate=1e-4, b1=0.5, b2=0.9)
  return common.apply_presets(config, arg)
