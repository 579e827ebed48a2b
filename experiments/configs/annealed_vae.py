"""Capacity-annealed beta-VAE (Burgess et al. 2018): C 0 -> 25 nats over 100k steps, gamma 1000.

  python experiments/main.py --config=experiments/configs/annealed_vae.py:model=conv \
      --workdir=workdirs/annealed
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "annealed_vae"
  config.objective.annealed_vae.update(gamma=1000.0, capacity_max=25.0, capacity_steps=100_000)
  config.num_steps = 100_000
  return common.apply_presets(config, arg)
