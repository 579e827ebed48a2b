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
import numpy as np

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


# ------------------------------------------------------------ conditionals on labelled components
#
# Chen et al.'s MIG needs, besides log q(z_g), the log-density of every sample under the
# sub-mixture of the components that share one value of a factor: q(z_g | v_f = v). With the
# samples' own labels, one pass over all N components gives both for every factor whose label is
# constant within each chunk of components (on a full factor grid in index order, the factors
# before the chunk's trailing block): the chunk's sum goes to the total and, where the chunk's
# label equals the sample's, to that factor's conditional sum. Factors that vary within a chunk
# (the trailing ones) are computed on their own, one label value at a time: the samples with
# that value against the components with that value, S * N / |V_f| terms for the whole factor.


def chunk_constant_labels(component_labels: np.ndarray, chunk_size: int) -> np.ndarray:
  """bool [F]: which label columns are constant within every chunk of `chunk_size` components.

  The last chunk is padded with its last row (padding contributes nothing to any sum).
  """
  labels = np.asarray(component_labels)
  n, f = labels.shape
  pad = -n % chunk_size
  if pad:
    labels = np.concatenate([labels, np.repeat(labels[-1:], pad, axis=0)])
  blocks = labels.reshape(-1, chunk_size, f)
  return np.all(blocks == blocks[:, :1], axis=(0, 1))


def auto_chunk_size(component_labels: np.ndarray, *, step_cost: float = 8.0) -> int:
  """The chunk size (a power of two, 32..4096) of least estimated work for the one-pass kernel.

  Work per sample, in Gaussian terms: N for the pass, N / |V_f| for each label column f that is
  not constant within chunks, and `step_cost` terms' worth of overhead per chunk (measured: a
  scan step costs about as much as a few terms per sample).
  """
  labels = np.asarray(component_labels)
  n = labels.shape[0]
  sizes = np.array([len(np.unique(labels[:, f])) for f in range(labels.shape[1])])
  best, best_cost = 32, np.inf
  for chunk in (32, 64, 128, 256, 512, 1024, 2048, 4096):
    if chunk > max(n, 32):
      break
    constant = chunk_constant_labels(labels, chunk)
    cost = 1.0 + np.sum(1.0 / sizes[~constant]) + step_cost / chunk
    if cost <= best_cost:
      best, best_cost = chunk, cost
  return best


def _chunk_rows(x: jax.Array, chunk_size: int, fill) -> jax.Array:
  """[..., N, D] -> [..., N / chunk, D, chunk] (chunk axis minor), padding N with `fill`."""
  *lead, n, d = x.shape
  num_chunks = -(-n // chunk_size)
  widths = [(0, 0)] * len(lead) + [(0, num_chunks * chunk_size - n), (0, 0)]
  x = jnp.pad(x, widths, constant_values=fill)
  x = x.reshape(*lead, num_chunks, chunk_size, d)
  return jnp.swapaxes(x, -1, -2)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _shifted_pass(z, mean, log_var, sample_labels, chunk_labels, groups, chunk_size):
  """One pass, shifted by the largest peak: (total [G, S], per-label sums [F, G, S], shift [G]).

  sample_labels: int [F, S]; chunk_labels: int [L, F], the (constant) label of each chunk.
  The per-label sum of factor f at sample s adds the chunks whose label equals the sample's.
  """
  peak = -0.5 * (_LOG_2PI + log_var)
  top = jnp.max(peak, axis=0)
  shift = _group_sums(top, groups)
  a = _chunk_rows(-0.5 * jnp.exp(-log_var), chunk_size, 0.0)
  b = _chunk_rows(peak - top, chunk_size, -jnp.inf)
  m = _chunk_rows(mean, chunk_size, 0.0)
  z_t = z.T

  def step(carry, chunk):
    total, by_label = carry
    m_c, a_c, b_c, label_c = chunk

    def exponent(j):  # [S, C]
      return a_c[j] * jnp.square(z_t[j][:, None] - m_c[j]) + b_c[j]

    sums = jnp.stack([jnp.sum(jnp.exp(sum(exponent(j) for j in g)), axis=-1) for g in groups])
    match = sample_labels == label_c[:, None]  # [F, S]
    return (total + sums, by_label + jnp.where(match[:, None, :], sums, 0.0)), None

  num_groups, num_samples = len(groups), z.shape[0]
  init = (
    jnp.zeros((num_groups, num_samples), z.dtype),
    jnp.zeros((sample_labels.shape[0], num_groups, num_samples), z.dtype),
  )
  (total, by_label), _ = jax.lax.scan(step, init, (m, a, b, chunk_labels))
  return total, by_label, shift


@functools.partial(jax.jit, static_argnums=(5, 6))
def _exact_pass(z, mean, log_var, sample_labels, chunk_labels, groups, chunk_size):
  """The same sums in log space with running maxima: (log total [G, S], log per-label [F, G, S])."""
  mean_c = _chunk_rows(mean, chunk_size, 0.0)
  log_var_c = _chunk_rows(log_var, chunk_size, 0.0)
  valid = _chunk_rows(jnp.ones((mean.shape[0], 1), bool), chunk_size, False)[:, 0]
  z_t = z.T

  def merge(max1, sum1, max2, sum2):
    new_max = jnp.maximum(max1, max2)
    safe = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    return new_max, sum1 * jnp.exp(max1 - safe) + sum2 * jnp.exp(max2 - safe)

  def step(carry, chunk):
    (tot_max, tot_sum), (lab_max, lab_sum) = carry
    m_c, lv_c, ok, label_c = chunk
    log_p = -0.5 * (
      _LOG_2PI
      + lv_c[:, None, :]
      + jnp.square(z_t[:, :, None] - m_c[:, None, :]) * jnp.exp(-lv_c)[:, None, :]
    )
    log_p = jnp.where(ok, _group_sums(log_p, groups), -jnp.inf)  # [G, S, C]
    c_max = jnp.max(log_p, axis=-1)
    safe = jnp.where(jnp.isfinite(c_max), c_max, 0.0)
    c_sum = jnp.sum(jnp.exp(log_p - safe[..., None]), axis=-1)
    match = (sample_labels == label_c[:, None])[:, None, :]  # [F, 1, S]
    lab = merge(lab_max, lab_sum, jnp.where(match, c_max, -jnp.inf), jnp.where(match, c_sum, 0.0))
    return (merge(tot_max, tot_sum, c_max, c_sum), lab), None

  shape = (len(groups), z.shape[0])
  lab_shape = (sample_labels.shape[0], *shape)
  init = (
    (jnp.full(shape, -jnp.inf, z.dtype), jnp.zeros(shape, z.dtype)),
    (jnp.full(lab_shape, -jnp.inf, z.dtype), jnp.zeros(lab_shape, z.dtype)),
  )
  ((tot_max, tot_sum), (lab_max, lab_sum)), _ = jax.lax.scan(
    step, init, (mean_c, log_var_c, valid, chunk_labels)
  )
  return tot_max + jnp.log(tot_sum), lab_max + jnp.log(lab_sum)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _stacked_shifted_pass(z, mean, log_var, sample_labels, chunk_labels, groups, chunk_size):
  """`_shifted_pass` for a stack of M models: z [M, S, K], mean and log_var [M, N, K]."""
  return jax.vmap(
    lambda zz, mm, lv: _shifted_pass(zz, mm, lv, sample_labels, chunk_labels, groups, chunk_size)
  )(z, mean, log_var)


def _log_sums(z, mean, log_var, sample_labels, chunk_labels, groups, chunk_size):
  """log of the unnormalised sums for a stack: (total [M, G, S], per-label [M, F, G, S]).

  The one-pass kernel runs for all models at once; a model with any sum below `_UNDERFLOW`
  (possible only for points far from every component) is recomputed exactly, on its own.
  """
  args = (jnp.asarray(sample_labels, jnp.int32), jnp.asarray(chunk_labels, jnp.int32))
  total, by_label, shift = _stacked_shifted_pass(z, mean, log_var, *args, groups, chunk_size)
  log_total = jnp.log(total) + shift[:, :, None]
  log_by_label = jnp.log(by_label) + shift[:, None, :, None]
  smallest = np.asarray(
    jnp.minimum(jnp.min(total, axis=(1, 2)), jnp.min(by_label, axis=(1, 2, 3), initial=jnp.inf))
  )
  bad = np.flatnonzero(~(smallest > _UNDERFLOW))
  if bad.size:
    exact = [_exact_pass(z[i], mean[i], log_var[i], *args, groups, chunk_size) for i in bad]
    log_total = log_total.at[bad].set(jnp.stack([e[0] for e in exact]))
    log_by_label = log_by_label.at[bad].set(jnp.stack([e[1] for e in exact]))
  return log_total, log_by_label


def gaussian_mixture_log_conditionals(
  z: jax.Array,
  sample_labels: np.ndarray,
  mean: jax.Array,
  log_var: jax.Array,
  component_labels: np.ndarray,
  *,
  groups: Groups,
  chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Log-densities of points under the mixture and under its sub-mixture of each point's label.

  Formula: with N components, labels c_nf and point labels l_sf,
    marginal[s, g] = log (1/N) sum_n prod_{j in g} N(z_sj; mean_nj, exp(log_var_nj)),
    conditional[s, f, g] = log (1/N_f(l_sf)) sum_{n: c_nf = l_sf} prod_{j in g} N(z_sj; ...),
  N_f(v) the number of components with c_nf = v. Exact (no sampling). One pass over the
  components serves the marginal and every label column that is constant within chunks (on a
  factor grid in index order, the leading factors); each other column adds S * N / |V_f| terms.
  The cost is dominated by S * N * K Gaussian terms (one exp each).

  Args:
    z: [S, K] points, or [M, S, K] for a stack of M mixtures (models).
    sample_labels: int [S, F] the label of each point in every column (shared by the stack).
    mean: [N, K] component means, or [M, N, K].
    log_var: [N, K] component log-variances, or [M, N, K].
    component_labels: int [N, F] labels of the components (shared by the stack); every label
      of a point must occur among the components.
    groups: tuple of tuples of coordinate indices (static).
    chunk_size: components per scan step; None picks one (`auto_chunk_size`).

  Returns:
    (marginal [S, G], conditional [S, F, G]), with a leading M axis for a stack.

  References:
    Chen et al., `Isolating Sources of Disentanglement in Variational Autoencoders
    <https://arxiv.org/abs/1802.04942>`_, NeurIPS 2018 (the estimator over the whole dataset).
  """
  z, mean, log_var = jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var)
  stacked = z.ndim == 3
  if not stacked:
    z, mean, log_var = z[None], mean[None], log_var[None]
  sample_labels = np.asarray(sample_labels)
  component_labels = np.asarray(component_labels)
  if (
    z.ndim != 3
    or mean.ndim != 3
    or mean.shape != log_var.shape
    or z.shape[::2] != mean.shape[::2]
    or sample_labels.shape[:1] != z.shape[1:2]
    or sample_labels.ndim != 2
    or component_labels.shape != (mean.shape[1], sample_labels.shape[1])
  ):
    raise ValueError(
      "gaussian_mixture_log_conditionals needs z [(M,) S, K], sample_labels [S, F], mean and "
      "log_var [(M,) N, K] and component_labels [N, F]; got "
      f"{z.shape}, {sample_labels.shape}, {mean.shape}, {log_var.shape}, {component_labels.shape}."
    )
  groups = _check_groups(groups, z.shape[-1])
  num_models, num_samples = z.shape[:2]
  num_labels = sample_labels.shape[1]
  log_counts = []
  for f in range(num_labels):
    values, counts = np.unique(component_labels[:, f], return_counts=True)
    where = np.searchsorted(values, sample_labels[:, f])
    where = np.minimum(where, len(values) - 1)
    if np.any(values[where] != sample_labels[:, f]):
      missing = sample_labels[values[where] != sample_labels[:, f], f][0]
      raise ValueError(f"label {missing} of column {f} occurs among no component.")
    log_counts.append(np.log(counts[where]))
  log_counts = np.stack(log_counts, axis=1)  # [S, F]

  n = mean.shape[1]
  chunk = auto_chunk_size(component_labels) if chunk_size is None else int(chunk_size)
  chunk = max(1, min(chunk, n))
  constant = chunk_constant_labels(component_labels, chunk)
  leading = np.flatnonzero(constant)
  trailing = np.flatnonzero(~constant)
  padded = np.concatenate([component_labels, np.repeat(component_labels[-1:], -n % chunk, axis=0)])
  chunk_labels = padded[::chunk][:, leading]  # [L, F_lead]
  log_total, log_by_label = _log_sums(
    z, mean, log_var, sample_labels[:, leading].T, chunk_labels, groups, chunk
  )
  marginal = jnp.swapaxes(log_total, 1, 2) - math.log(n)  # [M, S, G]
  conditional = jnp.zeros((num_models, num_samples, num_labels, len(groups)), z.dtype)
  if leading.size:
    conditional = conditional.at[:, :, leading].set(jnp.transpose(log_by_label, (0, 3, 1, 2)))
  for f in trailing:
    # All values of the column at once: the points of each value padded to one length, the
    # components of each value padded with absent ones (log_var = +inf: their terms are 0).
    values = np.unique(sample_labels[:, f])
    rows = [np.flatnonzero(sample_labels[:, f] == v) for v in values]
    members = [np.flatnonzero(component_labels[:, f] == v) for v in values]
    num_rows = -(-max(map(len, rows)) // 64) * 64  # a few compiled programs serve every call
    num_members = max(map(len, members))
    row_index = np.stack([np.resize(r, num_rows) for r in rows])  # [V, S_v], repeats as padding
    member_index = np.stack([np.resize(m, num_members) for m in members])
    absent = np.arange(num_members)[None, :] >= np.array([len(m) for m in members])[:, None]
    sub_log_var = jnp.where(absent[None, :, :, None], jnp.inf, log_var[:, member_index])
    sub_chunk = min(chunk, num_members)
    log_sub, _ = _log_sums(
      z[:, row_index].reshape(-1, num_rows, z.shape[-1]),
      mean[:, member_index].reshape(-1, num_members, mean.shape[-1]),
      sub_log_var.reshape(-1, num_members, mean.shape[-1]),
      np.zeros((0, num_rows), np.int32),
      np.zeros((-(-num_members // sub_chunk), 0), np.int32),
      groups,
      sub_chunk,
    )
    log_sub = jnp.swapaxes(log_sub, 1, 2).reshape(num_models, len(values), num_rows, -1)
    for i, r in enumerate(rows):
      conditional = conditional.at[:, r, f].set(log_sub[:, i, : len(r)])
  conditional = conditional - jnp.asarray(log_counts, z.dtype)[None, :, :, None]
  if not stacked:
    return marginal[0], conditional[0]
  return marginal, conditional
