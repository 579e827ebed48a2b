"""JointVAE (Dupont 2018) on dSprites: 6 continuous + one 3-way categorical latent.

C_z 0 -> 40 nats and C_c 0 -> 1.1 nats over 300k steps, gamma 150, lr 5e-4, batch 64,
temperature 0.67, the conv architecture.

  python experiments/main.py --config=experiments/configs/joint_vae.py --workdir=workdirs/joint
"""

from disentangle_jax.training import config as common


def get_config(arg=None):
  config = common.base_config()
  config.objective.name = "joint_vae"
  config.model.encoder, config.model.decoder = "conv", "conv"
  config.model.latent_dim = 6
  config.model.categorical_sizes = (3,)
  config.model.temperature = 0.67
  config.objective.joint_vae.update(
    continuous_capacity_max=40.0, discrete_capacity_max=1.1, capacity_steps=300_000, gamma=150.0
  )
  config.batch_size, config.learning_rate, config.num_steps = 64, 5e-4, 300_000
  return common.apply_presets(config, arg)
