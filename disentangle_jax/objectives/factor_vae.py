"""FactorVAE: total correlation by the density-ratio trick with a discriminator.

The discriminator D tells samples of q(z) from samples of prod_k q(z_k); it outputs two logits
per sample, class 0 = "from q(z)" and class 1 = "from prod_k q(z_k)". Then
TC = KL(q(z) || prod_k q(z_k)) ~= E_q(z)[log D_0(z) / D_1(z)] = E[logit_0 - logit_1].

References:
  Kim & Mnih, `Disentangling by Factorising <https://arxiv.org/abs/1802.05983>`_, ICML 2018.
"""

import jax
import jax.numpy as jnp
import optax

from disentangle_jax.objectives._checks import check_rank, check_same_shape


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
  """Permutes every latent dimension independently across the batch.

  If the rows of z are samples of q(z), the rows of the result are (approximately) samples of
  prod_k q(z_k): the discriminator's negatives. Each column keeps its multiset of values.

  Args:
    key: a PRNG key.
    z: [B, K] samples.

  Returns:
    [B, K] with column k a random permutation of z[:, k], independently for each k.

  References:
    Kim & Mnih, `Disentangling by Factorising <https://arxiv.org/abs/1802.05983>`_, ICML 2018
    (Algorithm 1).
  """
  check_rank("z", z, 2)
  keys = jax.random.split(key, z.shape[1])
  return jax.vmap(lambda k, column: jax.random.permutation(k, column), in_axes=(0, 1), out_axes=1)(
    keys, z
  )


def discriminator_total_correlation(logits: jax.Array) -> jax.Array:
  """Per-example TC estimate logit_0 - logit_1 = log D(z) / (1 - D(z)).

  Args:
    logits: [B, 2] discriminator logits on samples of q(z).

  Returns:
    [B] density-ratio estimates of log q(z) / prod_k q(z_k).
  """
  if logits.ndim != 2 or logits.shape[-1] != 2:
    raise ValueError(f"Discriminator logits must have shape [B, 2], got {logits.shape}.")
  return logits[:, 0] - logits[:, 1]


def factor_vae_loss(
  log_likelihood: jax.Array,
  kl: jax.Array,
  discriminator_logits: jax.Array,
  *,
  gamma: float | jax.Array = 35.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative FactorVAE objective for the VAE's parameters.

  Formula: loss = mean_i [-log p(x_i|z_i) + KL_i + gamma (logit_0(z_i) - logit_1(z_i))]

  Args:
    log_likelihood: [B] log p(x|z).
    kl: [B] KL(q(z|x) || p(z)).
    discriminator_logits: [B, 2] logits of the discriminator on z (gradients flow to z).
    gamma: weight of the TC penalty (study grid 10..100).

  Returns:
    (loss, {"log_likelihood", "kl", "elbo", "tc"}).
  """
  check_same_shape(log_likelihood=log_likelihood, kl=kl)
  tc = discriminator_total_correlation(discriminator_logits)
  loss = jnp.mean(-log_likelihood + kl + gamma * tc)
  ll, kl_mean = jnp.mean(log_likelihood), jnp.mean(kl)
  return loss, {"log_likelihood": ll, "kl": kl_mean, "elbo": ll - kl_mean, "tc": jnp.mean(tc)}


def factor_vae_discriminator_loss(
  logits_joint: jax.Array, logits_permuted: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of the discriminator: class 0 for q(z) samples, 1 for permuted ones.

  Formula: loss = 0.5 * (mean CE(logits_joint, 0) + mean CE(logits_permuted, 1))

  Args:
    logits_joint: [B, 2] logits on samples of q(z) (stop the gradient to the encoder).
    logits_permuted: [B, 2] logits on `permute_dims` of (another batch of) samples.

  Returns:
    (loss, {"discriminator_loss", "discriminator_accuracy"}).
  """
  check_same_shape(logits_joint=logits_joint, logits_permuted=logits_permuted)
  zeros = jnp.zeros(logits_joint.shape[0], jnp.int32)
  ce_joint = optax.softmax_cross_entropy_with_integer_labels(logits_joint, zeros)
  ce_perm = optax.softmax_cross_entropy_with_integer_labels(logits_permuted, zeros + 1)
  loss = 0.5 * (jnp.mean(ce_joint) + jnp.mean(ce_perm))
  accuracy = 0.5 * (
    jnp.mean(jnp.argmax(logits_joint, -1) == 0) + jnp.mean(jnp.argmax(logits_permuted, -1) == 1)
  )
  return loss, {"discriminator_loss": loss, "discriminator_accuracy": accuracy}
