"""Relaxed categorical latents (Gumbel-softmax / Concrete) for JointVAE."""

import jax
import jax.numpy as jnp


def gumbel_softmax_sample(
  key: jax.Array, logits: jax.Array, *, temperature: float | jax.Array = 0.67
) -> jax.Array:
  """Reparameterised sample of a relaxed one-hot categorical vector.

  Formula: y = softmax((log alpha + g) / temperature), g_c ~ Gumbel(0, 1) i.i.d.,
  where log alpha = log_softmax(logits). As temperature -> 0 the sample tends to the one-hot
  vector of argmax(log alpha + g), a draw from Categorical(alpha).

  Args:
    key: a PRNG key.
    logits: [..., C] unnormalised log-probabilities of the categorical.
    temperature: relaxation temperature tau > 0 (JointVAE uses 0.67).

  Returns:
    [..., C] points on the probability simplex.

  References:
    Jang et al., `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2017.
    Maddison et al., `The Concrete Distribution <https://arxiv.org/abs/1611.00712>`_, 2017.
  """
  gumbel = jax.random.gumbel(key, jnp.shape(logits), dtype=jnp.result_type(logits))
  return jax.nn.softmax((jax.nn.log_softmax(logits, axis=-1) + gumbel) / temperature, axis=-1)


def categorical_kl_to_uniform(logits: jax.Array) -> jax.Array:
  """KL(Categorical(alpha) || Uniform(C)) of the unrelaxed categorical.

  Formula: KL = log C + sum_c alpha_c log alpha_c, alpha = softmax(logits)

  Args:
    logits: [..., C] unnormalised log-probabilities.

  Returns:
    [...] KL in nats, between 0 and log C.

  References:
    Dupont, `Learning Disentangled Joint Continuous and Discrete Representations
    <https://arxiv.org/abs/1804.00104>`_, 2018.
  """
  log_alpha = jax.nn.log_softmax(logits, axis=-1)
  num_categories = logits.shape[-1]
  return jnp.log(num_categories) + jnp.sum(jnp.exp(log_alpha) * log_alpha, axis=-1)


def categorical_mode_one_hot(logits: jax.Array) -> jax.Array:
  """One-hot vector of the most probable category (JointVAE's code at evaluation): [..., C]."""
  return jax.nn.one_hot(
    jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.result_type(logits)
  )
