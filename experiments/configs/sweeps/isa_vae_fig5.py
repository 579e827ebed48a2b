"""The ISA-VAE paper's dSprites grid: 4 methods x 9 betas, Chen et al.'s MLP, batch 2048, Adam
1e-3, Bernoulli likelihood, 20 epochs (7200 steps).

  python experiments/sweep.py --config=experiments/configs/sweeps/isa_vae_fig5.py \
      --workdir=workdirs/fig5
  python experiments/sweep.py --config=experiments/configs/sweeps/isa_vae_fig5.py:seeds=3 \
      --workdir=workdirs/fig5_3seeds

Methods (Stuehmer, Turner and Nowozin 2020, figure 5): beta-VAE, beta-TCVAE, beta-ISA-VAE
(the Lp-nested ISA prior with learned exponents, KL weighted by beta) and beta-ISA-TCVAE (the
ISA prior inside beta-TCVAE's decomposition, TC weighted by beta). All four have 18 latents, the
ISA layout [2.0, [(2.1, 6)] * 3] of the paper's reference code, so that they differ only in
prior and objective. The 36 models form 4 programs (one per method, the 9 betas as arrays).

Size: 36 models x 7200 steps of the MLP at batch 2048 is 0.26 M model-steps, about 40 PFLOP
(0.075 GFLOP per image and step). Sized for one seed on one H100 in about 15 minutes at
~45 TFLOP/s sustained in float32 matrix products; `seeds=K` multiplies that by K. Not yet
measured on a GPU (docs/benchmarks.md).
"""

from disentangle_jax.training import config as common
from disentangle_jax.training import sweep as sweep_lib

BETAS = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]
ISA = {
  "prior.name": "lp_nested",
  "prior.layout": common.isa_layout_string(2.0, [(2.1, 6)] * 3),
  "prior.learn_exponents": True,
}


def get_config(arg=None):
  arg = common.parse_arg(arg, seeds=1)
  base = common.base_config()
  base.model.latent_dim = 18
  base.batch_size, base.learning_rate, base.num_steps = 2048, 1e-3, 7200
  base.log_every, base.checkpoint_every = 100, 1800
  config = sweep_lib.sweep_config(base)
  config.methods = repr(
    {
      "beta_vae": {"objective.name": "beta_vae"},
      "beta_tcvae": {"objective.name": "beta_tcvae"},
      "beta_isa_vae": {"objective.name": "beta_vae", **ISA},
      "beta_isa_tcvae": {"objective.name": "beta_tcvae", **ISA},
    }
  )
  config.axes = repr({"objective.beta": BETAS, "seed": list(range(arg.seeds))})
  config.study.metrics = "mig_chen,mig_dlib,dci,sap,modularity"
  return config.lock()
