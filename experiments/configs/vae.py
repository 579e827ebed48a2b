"""VAE (Kingma & Welling 2014): beta = 1, Chen et al. MLP on dSprites, batch 2048, 50 epochs.

python experiments/main.py --config=experiments/configs/vae.py --workdir=workdirs/vae
python experiments/main.py --config=experiments/configs/vae.py:quick --workdir=workdirs/vae_q
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "beta_vae"
  config.objective.beta_vae.beta = 1.0
  return common.apply_presets(config, arg)
