"""Distributions: log-densities and exact samplers as pure JAX functions."""

from disentangle_jax.distributions.gaussian import gaussian_kl as gaussian_kl
from disentangle_jax.distributions.gaussian import gaussian_kl_per_dim as gaussian_kl_per_dim
from disentangle_jax.distributions.gaussian import gaussian_log_prob as gaussian_log_prob
from disentangle_jax.distributions.gaussian import gaussian_sample as gaussian_sample
from disentangle_jax.distributions.gaussian import (
  standard_normal_log_prob as standard_normal_log_prob,
)
from disentangle_jax.distributions.generalized_normal import (
  generalized_normal_log_prob as generalized_normal_log_prob,
)
from disentangle_jax.distributions.generalized_normal import (
  generalized_normal_sample as generalized_normal_sample,
)
from disentangle_jax.distributions.gumbel_softmax import (
  categorical_kl_to_uniform as categorical_kl_to_uniform,
)
from disentangle_jax.distributions.gumbel_softmax import (
  categorical_mode_one_hot as categorical_mode_one_hot,
)
from disentangle_jax.distributions.gumbel_softmax import (
  gumbel_softmax_sample as gumbel_softmax_sample,
)
from disentangle_jax.distributions.lp_nested import LpNested as LpNested
from disentangle_jax.distributions.lp_nested import LpNestedTree as LpNestedTree
from disentangle_jax.distributions.lp_nested import (
  exponents_from_unconstrained as exponents_from_unconstrained,
)
from disentangle_jax.distributions.lp_nested import (
  exponents_to_unconstrained as exponents_to_unconstrained,
)
from disentangle_jax.distributions.lp_nested import isa_layout as isa_layout
from disentangle_jax.distributions.lp_nested import lp_nested_function as lp_nested_function
from disentangle_jax.distributions.lp_nested import lp_nested_log_prob as lp_nested_log_prob
from disentangle_jax.distributions.lp_nested import (
  lp_nested_log_surface as lp_nested_log_surface,
)
from disentangle_jax.distributions.lp_nested import lp_nested_power as lp_nested_power
from disentangle_jax.distributions.lp_nested import lp_nested_sample as lp_nested_sample
from disentangle_jax.distributions.lp_nested import parse_lp_nested as parse_lp_nested
