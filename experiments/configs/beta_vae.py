"""beta-VAE (Higgins et al. 2017) on dSprites, beta = 4.

  python experiments/main.py --config=experiments/configs/beta_vae.py --workdir=workdirs/bvae
  python experiments/main.py --config=experiments/configs/beta_vae.py:model=conv \
      --config.objective.beta_vae.beta=6 --workdir=workdirs/bvae_conv
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "beta_vae"
  config.objective.beta_vae.beta = 4.0
  return common.apply_presets(config, arg)
