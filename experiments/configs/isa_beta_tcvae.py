"""ISA-VAE combined with beta-TCVAE: Lp-nested ISA prior and the decomposed KL (beta = 6).

The last term of the decomposition is then KL(prod_k q(z_k) || p_ISA(z)).

  python experiments/main.py --config=experiments/configs/isa_beta_tcvae.py --workdir=workdirs/it
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.use_isa_prior(common.base_config())
  config.objective.name = "beta_tcvae"
  config.objective.beta_tcvae.update(alpha=1.0, beta=6.0, gamma=1.0)
  config.num_steps = 7200  # 20 epochs of dSprites at batch 2048
  return common.apply_presets(config, arg)
