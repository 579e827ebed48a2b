"""beta-TCVAE (Chen et al. 2018): alpha = gamma = 1, beta = 6, MSS estimator, MLP, batch 2048.

  python experiments/main.py --config=experiments/configs/beta_tcvae.py --workdir=workdirs/tc
  python experiments/main.py --config=experiments/configs/beta_tcvae.py \
      --config.objective.estimator=mws --workdir=workdirs/tc_mws
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "beta_tcvae"
  config.objective.alpha, config.objective.beta, config.objective.gamma = 1.0, 6.0, 1.0
  config.objective.estimator = "mss"
  return common.apply_presets(config, arg)
