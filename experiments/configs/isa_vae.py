"""ISA-VAE (Stuehmer et al. 2020): the Lp-nested ISA prior [2.0, [(2.1, 6)] * 3], K = 18.

Exponents are learned (their own Adam, lr 5e-4); Chen et al. MLP, batch 2048, 20 epochs.

  python experiments/main.py --config=experiments/configs/isa_vae.py --workdir=workdirs/isa
  python experiments/main.py --config=experiments/configs/isa_vae.py:quick --workdir=workdirs/q
  python experiments/main.py --config=experiments/configs/isa_vae.py \
      --config.prior.layout="[2.1, [(2.2, 6), (2.2, 6), (2.2, 6)]]" --workdir=workdirs/isa2
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.use_isa_prior(common.base_config())
  config.objective.name = "beta_vae"
  config.objective.beta_vae.beta = 1.0
  config.num_steps = 7200  # 20 epochs of dSprites at batch 2048
  return common.apply_presets(config, arg)
