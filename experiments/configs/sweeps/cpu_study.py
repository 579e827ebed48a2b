"""A study that fits a 2-core CPU: beta-VAE, beta-TCVAE (beta = 6), ISA-VAE and ISA-beta-TCVAE,
2 seeds each, Chen et al.'s MLP at batch 2048 (Adam 1e-3), for `epochs` epochs of dSprites.

  python experiments/sweep.py --config=experiments/configs/sweeps/cpu_study.py \
      --workdir=workdirs/cpu_study
  python experiments/sweep.py --config=experiments/configs/sweeps/cpu_study.py:epochs=1,seeds=3 \
      --workdir=workdirs/cpu_study_3

All methods have 18 latents (the ISA layout [2.0, [(2.1, 6)] * 3]). The metrics are Chen et
al.'s MIG and disentanglement_lib's MIG, DCI, SAP and modularity at their default sizes.
"""

from disentangle_jax.training import config as common
from disentangle_jax.training import sweep as sweep_lib

ISA = {
  "prior.name": "lp_nested",
  "prior.layout": common.isa_layout_string(2.0, [(2.1, 6)] * 3),
  "prior.learn_exponents": True,
}
STEPS_PER_EPOCH = 737_280 // 2048  # 360


def get_config(arg=None):
  arg = common.parse_arg(arg, epochs=2, seeds=2)
  base = common.base_config()
  base.model.latent_dim = 18
  base.batch_size, base.learning_rate = 2048, 1e-3
  base.num_steps = arg.epochs * STEPS_PER_EPOCH
  base.log_every, base.checkpoint_every = 30, 180
  config = sweep_lib.sweep_config(base)
  config.methods = repr(
    {
      "beta_vae": {"objective.name": "beta_vae", "objective.beta": 4.0},
      "beta_tcvae": {"objective.name": "beta_tcvae", "objective.beta": 6.0},
      "isa_vae": {"objective.name": "beta_vae", "objective.beta": 1.0, **ISA},
      "isa_beta_tcvae": {"objective.name": "beta_tcvae", "objective.beta": 6.0, **ISA},
    }
  )
  config.axes = repr({"seed": list(range(arg.seeds))})
  config.study.metrics = "mig_chen,mig_dlib,dci,sap,modularity"
  return config.lock()
