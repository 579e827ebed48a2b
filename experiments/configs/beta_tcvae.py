"""beta-TCVAE (Chen et al. 2018): alpha = gamma = 1, beta = 6, MSS estimator, MLP, batch 2048.

  python experiments/main.py --config=experiments/configs/beta_tcvae.py --workdir=workdirs/tc
  python experiments/main.py --config=experiments/configs/beta_tcvae.py \
      --config.objective.beta_tcvae.estimator=mws --workdir=workdirs/tc_mws
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "beta_tcvae"
  config.objective.beta_tcvae.update(alpha=1.0, beta=6.0, gamma=1.0, estimator="mss")
  return common.apply_presets(config, arg)
