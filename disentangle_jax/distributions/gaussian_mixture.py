"""Marginal log-densities of a large uniform mixture of diagonal Gaussians (aggregate posterior).

The aggregate posterior of a dataset, q(z) = (1/N) sum_n q(z|x_n), is such a mixture. Its entropy
and its marginals' entropies drive the ELBO decomposition and Chen et al.'s MIG. Both need, for S
points and N ~ 10^6 components, a log-sum-exp over all N: S * N * K Gaussian terms. This module
computes it compiled, in chunks of components, in one pass.

One pass, because the usual log-sum-exp first finds the maximum. For a coordinate group g (a
latent, a subspace, or all of z) every term is bounded by the component's peak density:
  log q(z_g | x_n) <= sum_{j in g} -0.5 * (log(2 pi) + log_var_nj) <= c_g,
with c_g = sum_{j in g} max_n -0.5 * (log(2 pi) + log_var_nj). Shifting by c_g makes every term
<= 1, so the sum cannot overflow. It underflows (to 0 in float32) only when every component's
term is below exp(-87) relative to the sharpest component's peak. That does not happen when the
points are drawn from the mixture itself, but it can on adversarial inputs, so any such point
sends the whole call through the exact two-pass (running maximum) version instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)
# Below this the shifted float32 sum has lost precision (denormals begin at 1.2e-38).
_UNDERFLOW = 1e-30

Groups = tuple[tuple[int, ...], ...]


def per_dimension_groups(num_dims: int) -> Groups:
  """((0,), (1,), ..., (K-1,)): every coordinate its own group."""
  return tuple((j,) for j in range(num_dims))


def _check_groups(groups: Sequence[Sequence[int]], num_dims: int) -> Groups:
  groups = tuple(tuple(int(j) for j in g) for g in groups)
  if not groups or any(not g for g in groups):
    raise ValueError(f"groups must be a non-empty list of non-empty index lists; got {groups}.")
  bad = [j for g in groups for j in g if not 0 <= j < num_dims]
  if bad:
    raise ValueError(f"group index {bad[0]} is out of range for {num_dims} dimensions.")
  return groups


def _chunked(x: jax.Array, chunk_size: int, fill: float) -> jax.Array:
  """[N, K] -> [N / chunk, K, chunk], padding N with `fill`."""
  n, k = x.shape
  num_chunks = -(-n // chunk_size)
  x = jnp.pad(x, ((0, num_chunks * chunk_size - n), (0, 0)), constant_values=fill)
  return x.reshape(num_chunks, chunk_size, k).transpose(0, 2, 1)


def _group_sums(per_dim: jax.Array, groups: Groups) -> jax.Array:
  """[K, ...] -> [G, ...]: the sum of each group's rows (static slices, no matmul)."""
  return jnp.stack([sum(per_dim[j] for j in g) for g in groups])


def _shifted_log_sum(z, mean, log_var, groups, chunk_size):
  """(log sum_n prod_{j in g} N(z_sj; ...) - shift_g, shift_g): one pass, may underflow."""
  peak = -0.5 * (_LOG_2PI + log_var)  # [N, K], log of each component's peak density
  shift = _group_sums(jnp.max(peak, axis=0), groups)  # [G]
  # Per component and coordinate: log N(z; m, v) - max peak = a * (z - m)**2 + b.
  a = _chunked(-0.5 * jnp.exp(-log_var), chunk_size, 0.0)
  b = _chunked(peak - jnp.max(peak, axis=0), chunk_size, -jnp.inf)  # padding -> exp(-inf) = 0
  m = _chunked(mean, chunk_size, 0.0)
  z_t = z.T  # [K, S]: the chunk axis is minor, so the sums below reduce contiguous memory

  def step(total, chunk):
    m_c, a_c, b_c = chunk  # [K, C]

    def exponent(j):  # [S, C]
      return a_c[j] * jnp.square(z_t[j][:, None] - m_c[j]) + b_c[j]

    # One fused exp-and-sum per group: no [K, S, C] intermediate is ever stored.
    sums = [jnp.sum(jnp.exp(sum(exponent(j) for j in g)), axis=-1) for g in groups]
    return total + jnp.stack(sums), None  # [G, S]

  total, _ = jax.lax.scan(step, jnp.zeros((len(groups), z.shape[0]), z.dtype), (m, a, b))
  return total.T, shift  # [S, G], [G]


def _exact_log_sum(z, mean, log_var, groups, chunk_size):
  """log sum_n prod_{j in g} N(z_sj; ...) [S, G] with a running maximum (two passes per chunk)."""
  mean_c = _chunked(mean, chunk_size, 0.0)
  log_var_c = _chunked(log_var, chunk_size, 0.0)
  valid = _chunked(jnp.ones((mean.shape[0], 1), bool), chunk_size, False)[:, 0]  # [chunks, C]
  z_t = z.T

  def step(carry, chunk):
    running_max, total = carry
    m_c, lv_c, ok = chunk
    log_p = -0.5 * (
      _LOG_2PI
      + lv_c[:, None, :]
      + jnp.square(z_t[:, :, None] - m_c[:, None, :]) * jnp.exp(-lv_c)[:, None, :]
    )
    log_p = jnp.where(ok, _group_sums(log_p, groups), -jnp.inf)  # [G, S, C]
    new_max = jnp.maximum(running_max, jnp.max(log_p, axis=-1))
    safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    total = total * jnp.exp(running_max - safe_max) + jnp.sum(
      jnp.exp(log_p - safe_max[..., None]), axis=-1
    )
    return (new_max, total), None

  shape = (len(groups), z.shape[0])
  init = (jnp.full(shape, -jnp.inf, z.dtype), jnp.zeros(shape, z.dtype))
  (running_max, total), _ = jax.lax.scan(step, init, (mean_c, log_var_c, valid))
  return (running_max + jnp.log(total)).T


def gaussian_mixture_log_marginals(
  z: jax.Array,
  mean: jax.Array,
  log_var: jax.Array,
  *,
  groups: Groups,
  chunk_size: int = 2048,
) -> jax.Array:
  """Log-density of coordinate groups of points under a uniform mixture of diagonal Gaussians.

  Formula: out[s, g] = log (1/N) sum_n prod_{j in g} N(z_sj; mean_nj, exp(log_var_nj))
  With groups ((0,), ..., (K-1,)) these are the marginals log q(z_sk) of each latent; with one
  group of all K dimensions, the joint log q(z_s); with an ISA layout's subspaces, the subspace
  marginals. Exact (no sampling); memory K * S * chunk_size floats.

  Args:
    z: [S, K] points.
    mean: [N, K] component means.
    log_var: [N, K] component log-variances.
    groups: tuple of tuples of coordinate indices (static).
    chunk_size: components per step of the scan over N.

  Returns:
    [S, G] log-densities.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018 (the estimator over the whole dataset).
  """
  if z.ndim != 2 or mean.ndim != 2 or mean.shape != log_var.shape or z.shape[1] != mean.shape[1]:
    raise ValueError(
      f"gaussian_mixture_log_marginals needs z [S, K] and mean, log_var [N, K]; got "
      f"{z.shape}, {mean.shape}, {log_var.shape}."
    )
  groups = _check_groups(groups, z.shape[1])
  return _log_marginals(z, mean, log_var, groups, max(1, min(int(chunk_size), mean.shape[0])))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _log_marginals(z, mean, log_var, groups, chunk_size):
  log_n = math.log(mean.shape[0])
  total, shift = _shifted_log_sum(z, mean, log_var, groups, chunk_size)
  fast = jnp.log(total) + shift - log_n
  return jax.lax.cond(
    jnp.all(total > _UNDERFLOW),
    lambda: fast,
    lambda: _exact_log_sum(z, mean, log_var, groups, chunk_size) - log_n,
  )
