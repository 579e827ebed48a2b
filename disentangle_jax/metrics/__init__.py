"""Disentanglement metrics: MIG (Chen et al. and disentanglement_lib), BetaVAE, FactorVAE, DCI,
SAP, modularity and explicitness, on any ground-truth dataset and any encoder function; active
latents; scoring stacks of models for sweeps."""

from disentangle_jax.metrics.activity import ACTIVITY_THRESHOLD as ACTIVITY_THRESHOLD
from disentangle_jax.metrics.activity import active_latents as active_latents
from disentangle_jax.metrics.activity import latent_information_bound as latent_information_bound
from disentangle_jax.metrics.beta_vae import compute_beta_vae as compute_beta_vae
from disentangle_jax.metrics.chen import (
  chen_mutual_information_stack as chen_mutual_information_stack,
)
from disentangle_jax.metrics.chen import (
  discrete_factor_mutual_information as discrete_factor_mutual_information,
)
from disentangle_jax.metrics.dci import compute_dci as compute_dci
from disentangle_jax.metrics.dci import dci_scores as dci_scores
from disentangle_jax.metrics.encoding import CodeTable as CodeTable
from disentangle_jax.metrics.encoding import Encoding as Encoding
from disentangle_jax.metrics.encoding import encode_all as encode_all
from disentangle_jax.metrics.encoding import (
  observations_are_deterministic as observations_are_deterministic,
)
from disentangle_jax.metrics.factor_vae import compute_factor_vae as compute_factor_vae
from disentangle_jax.metrics.mig import EncodeFn as EncodeFn
from disentangle_jax.metrics.mig import chen_mutual_information as chen_mutual_information
from disentangle_jax.metrics.mig import compute_mig_chen as compute_mig_chen
from disentangle_jax.metrics.mig import compute_mig_dlib as compute_mig_dlib
from disentangle_jax.metrics.mig import default_mig_factors as default_mig_factors
from disentangle_jax.metrics.mig import encode_dataset as encode_dataset
from disentangle_jax.metrics.mig import mig_from_codes as mig_from_codes
from disentangle_jax.metrics.mig import mutual_information_gap as mutual_information_gap
from disentangle_jax.metrics.modularity import (
  compute_modularity_explicitness as compute_modularity_explicitness,
)
from disentangle_jax.metrics.modularity import modularity_score as modularity_score
from disentangle_jax.metrics.sap import compute_sap as compute_sap
from disentangle_jax.metrics.sap import sap_from_score_matrix as sap_from_score_matrix
from disentangle_jax.metrics.stacked import binned_scores_stack as binned_scores_stack
from disentangle_jax.metrics.stacked import chen_mig_stack as chen_mig_stack
from disentangle_jax.metrics.stacked import score_models as score_models
from disentangle_jax.metrics.suite import METRICS as METRICS
from disentangle_jax.metrics.suite import compute_metrics as compute_metrics
from disentangle_jax.metrics.suite import headline_scores as headline_scores
from disentangle_jax.metrics.suite import metric_rng as metric_rng
from disentangle_jax.metrics.suite import parse_metric_names as parse_metric_names
from disentangle_jax.metrics.utils import RepresentationFn as RepresentationFn
