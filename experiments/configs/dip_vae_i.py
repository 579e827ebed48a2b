"""DIP-VAE-I (Kumar et al. 2018): lambda_od = 10, lambda_d = 10 * lambda_od.

python experiments/main.py --config=experiments/configs/dip_vae_i.py --workdir=workdirs/dip1
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "dip_vae"
  config.objective.dip_vae.update(kind="i", lambda_od=10.0, lambda_d=100.0)
  return common.apply_presets(config, arg)
