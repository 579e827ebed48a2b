"""DIP-VAE-II (Kumar et al. 2018): lambda_od = lambda_d = 10.

python experiments/main.py --config=experiments/configs/dip_vae_ii.py --workdir=workdirs/dip2
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "dip_vae"
  config.objective.dip_vae.update(kind="ii", lambda_od=10.0, lambda_d=10.0)
  return common.apply_presets(config, arg)
