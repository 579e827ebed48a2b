"""JointVAE: continuous and discrete latents, each channel with its own capacity."""

import jax
import jax.numpy as jnp

from disentangle_jax.objectives._checks import check_same_shape


def joint_vae_loss(
  log_likelihood: jax.Array,
  kl_continuous: jax.Array,
  kl_discrete: jax.Array,
  capacity_continuous: float | jax.Array,
  capacity_discrete: float | jax.Array,
  *,
  gamma_continuous: float | jax.Array = 150.0,
  gamma_discrete: float | jax.Array = 150.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative JointVAE objective with capacity constraints on both latent channels.

  Formula: loss = mean_i[-log p(x_i|z_i, c_i)] + gamma_z |mean_i KL_z,i - C_z(t)|
                  + gamma_c |mean_i KL_c,i - C_c(t)|
  KL_z is the Gaussian KL (`gaussian_kl`), KL_c the sum over categorical latents of their KL to
  the uniform prior (`categorical_kl_to_uniform`); capacities from `capacity_schedule` and
  `discrete_capacity_schedule`. dSprites: C_z 0 -> 40 nats, C_c 0 -> 1.1 nats, 300k steps,
  gamma 150 for both.

  Args:
    log_likelihood: [B] log p(x|z, c) with z and c sampled (Gumbel-softmax for c).
    kl_continuous: [B] KL of the continuous latents.
    kl_discrete: [B] summed KL of the categorical latents.
    capacity_continuous: C_z(t), nats.
    capacity_discrete: C_c(t), nats.
    gamma_continuous: weight of the continuous constraint.
    gamma_discrete: weight of the discrete constraint.

  Returns:
    (loss, {"log_likelihood", "kl", "elbo", "kl_continuous", "kl_discrete",
     "capacity_continuous", "capacity_discrete"}).

  References:
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, NeurIPS 2018.
  """
  check_same_shape(
    log_likelihood=log_likelihood, kl_continuous=kl_continuous, kl_discrete=kl_discrete
  )
  ll = jnp.mean(log_likelihood)
  kl_z, kl_c = jnp.mean(kl_continuous), jnp.mean(kl_discrete)
  loss = (
    -ll
    + gamma_continuous * jnp.abs(kl_z - capacity_continuous)
    + gamma_discrete * jnp.abs(kl_c - capacity_discrete)
  )
  terms = {"log_likelihood": ll, "kl": kl_z + kl_c, "elbo": ll - kl_z - kl_c}
  terms.update(kl_continuous=kl_z, kl_discrete=kl_c)
  terms.update(
    capacity_continuous=jnp.asarray(capacity_continuous, loss.dtype),
    capacity_discrete=jnp.asarray(capacity_discrete, loss.dtype),
  )
  return loss, terms
