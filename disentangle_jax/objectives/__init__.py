"""Objectives: reconstruction terms, KLs, the ELBO decomposition and every model's loss.

Terms are per-example [B] arrays; objectives return (scalar loss to minimise, dict of terms).
"""

from disentangle_jax.objectives.beta_tcvae import beta_tcvae_loss as beta_tcvae_loss
from disentangle_jax.objectives.beta_vae import annealed_vae_loss as annealed_vae_loss
from disentangle_jax.objectives.beta_vae import beta_from_infomax_lambda as beta_from_infomax_lambda
from disentangle_jax.objectives.beta_vae import beta_vae_loss as beta_vae_loss
from disentangle_jax.objectives.beta_vae import vae_loss as vae_loss
from disentangle_jax.objectives.decomposition import ElboDecomposition as ElboDecomposition
from disentangle_jax.objectives.decomposition import (
  dataset_elbo_decomposition as dataset_elbo_decomposition,
)
from disentangle_jax.objectives.decomposition import elbo_decomposition as elbo_decomposition
from disentangle_jax.objectives.decomposition import (
  log_aggregate_posterior as log_aggregate_posterior,
)
from disentangle_jax.objectives.decomposition import mss_log_weights as mss_log_weights
from disentangle_jax.objectives.decomposition import (
  pairwise_gaussian_log_density as pairwise_gaussian_log_density,
)
from disentangle_jax.objectives.dip_vae import (
  aggregate_posterior_covariance as aggregate_posterior_covariance,
)
from disentangle_jax.objectives.dip_vae import dip_regularizer as dip_regularizer
from disentangle_jax.objectives.dip_vae import dip_vae_loss as dip_vae_loss
from disentangle_jax.objectives.factor_vae import (
  discriminator_total_correlation as discriminator_total_correlation,
)
from disentangle_jax.objectives.factor_vae import (
  factor_vae_discriminator_loss as factor_vae_discriminator_loss,
)
from disentangle_jax.objectives.factor_vae import factor_vae_loss as factor_vae_loss
from disentangle_jax.objectives.factor_vae import permute_dims as permute_dims
from disentangle_jax.objectives.isa_vae import isa_vae_loss as isa_vae_loss
from disentangle_jax.objectives.joint_vae import joint_vae_loss as joint_vae_loss
from disentangle_jax.objectives.kl import monte_carlo_kl as monte_carlo_kl
from disentangle_jax.objectives.kl import posterior_log_prob as posterior_log_prob
from disentangle_jax.objectives.reconstruction import (
  bernoulli_log_likelihood as bernoulli_log_likelihood,
)
from disentangle_jax.objectives.reconstruction import (
  gaussian_log_likelihood as gaussian_log_likelihood,
)
from disentangle_jax.objectives.schedules import capacity_schedule as capacity_schedule
from disentangle_jax.objectives.schedules import (
  discrete_capacity_schedule as discrete_capacity_schedule,
)
from disentangle_jax.objectives.schedules import kl_warmup_schedule as kl_warmup_schedule
