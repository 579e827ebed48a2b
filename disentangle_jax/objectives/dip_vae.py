"""DIP-VAE I and II: match the covariance of the aggregate posterior to the identity.

References:
  Kumar, Sattigeri & Balakrishnan, `Variational Inference of Disentangled Latent Concepts from
  Unlabeled Observations <https://arxiv.org/abs/1711.00848>`_, ICLR 2018.
"""

import jax
import jax.numpy as jnp

from disentangle_jax.objectives._checks import check_rank, check_same_shape

KINDS = ("i", "ii")


def aggregate_posterior_covariance(mean: jax.Array, log_var: jax.Array, *, kind: str) -> jax.Array:
  """The covariance DIP-VAE pushes to I, estimated on the batch.

  Formula: type I:  C = Cov_batch[mean]
           type II: C = Cov_batch[mean] + mean_batch diag(exp(log_var))  (= Cov_q(z)[z])
  (Cov with the 1/B normalisation.)

  Args:
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    kind: "i" or "ii".

  Returns:
    [K, K] covariance.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown DIP-VAE kind {kind!r}: expected one of {KINDS}.")
  check_same_shape(mean=mean, log_var=log_var)
  check_rank("mean", mean, 2)
  centred = mean - jnp.mean(mean, axis=0, keepdims=True)
  cov = centred.T @ centred / mean.shape[0]
  if kind == "ii":
    cov = cov + jnp.diag(jnp.mean(jnp.exp(log_var), axis=0))
  return cov


def dip_regularizer(
  mean: jax.Array,
  log_var: jax.Array,
  *,
  lambda_od: float | jax.Array,
  lambda_d: float | jax.Array | None = None,
  kind: str = "i",
) -> jax.Array:
  """DIP regulariser lambda_od sum_{i != j} C_ij**2 + lambda_d sum_i (C_ii - 1)**2.

  Args:
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    lambda_od: off-diagonal weight.
    lambda_d: diagonal weight; default 10 * lambda_od for type I, lambda_od for type II (the
      paper's dSprites settings).
    kind: "i" or "ii".

  Returns:
    Scalar penalty for the batch.
  """
  if lambda_d is None:
    lambda_d = 10.0 * lambda_od if kind == "i" else lambda_od
  cov = aggregate_posterior_covariance(mean, log_var, kind=kind)
  diag = jnp.diagonal(cov)
  off_diagonal = jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(diag))
  return lambda_od * off_diagonal + lambda_d * jnp.sum(jnp.square(diag - 1.0))


def dip_vae_loss(
  log_likelihood: jax.Array,
  kl: jax.Array,
  mean: jax.Array,
  log_var: jax.Array,
  *,
  lambda_od: float | jax.Array = 10.0,
  lambda_d: float | jax.Array | None = None,
  kind: str = "i",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative DIP-VAE objective: negative ELBO plus the DIP regulariser.

  Formula: loss = mean_i[-log p(x_i|z_i) + KL_i] + dip_regularizer(mean, log_var)

  Args:
    log_likelihood: [B] log p(x|z).
    kl: [B] KL(q(z|x) || N(0, I)).
    mean: [B, K] posterior means.
    log_var: [B, K] posterior log-variances.
    lambda_od: off-diagonal weight.
    lambda_d: diagonal weight (default as in `dip_regularizer`).
    kind: "i" or "ii".

  Returns:
    (loss, {"log_likelihood", "kl", "elbo", "dip"}).
  """
  check_same_shape(log_likelihood=log_likelihood, kl=kl)
  dip = dip_regularizer(mean, log_var, lambda_od=lambda_od, lambda_d=lambda_d, kind=kind)
  ll, kl_mean = jnp.mean(log_likelihood), jnp.mean(kl)
  loss = -ll + kl_mean + dip
  return loss, {"log_likelihood": ll, "kl": kl_mean, "elbo": ll - kl_mean, "dip": dip}
