"""Lp-nested symmetric distributions and the ISA (independent subspace analysis) prior.

An Lp-nested function is defined on a tree whose leaves are the coordinates of z. An inner node I
with exponent p_I and children c_1..c_l has the value v_I = (sum_k |v_ck|**p_I)**(1/p_I); f(z) is
the value of the root. The ISA layout is a two-level tree: a root with exponent p_0 over subspaces
V_1..V_L, subspace i with exponent p_i and n_i leaves:

  f(z) = (sum_i (sum_{j in V_i} |z_j|**p_i)**(p_0/p_i))**(1/p_0).

Tree specification (the ISA-VAE reference layout syntax, generalised): a node is
`[p, children]` (list or tuple); `children` is a list whose entries are either nodes or positive
integers m, meaning m leaves directly under this node; `(p, m)` with an integer m is short for
`(p, [m])`. Leaves are numbered depth first, so every node covers a contiguous range of z.
Examples: `[2.0, [(2.1, 6)] * 3]` (ISA, n = 18); `[1.5, [(3.0, 2), 1]]` (a leaf beside a
subspace); `[2.0, [4]]` (one node: the p-generalised normal family).

The structure (`LpNestedTree`) is static Python data, so jit specialises on it; the exponents
are a float array in the tree's pre-order (root first), so they can be traced and learned.

References:
  Sinz & Bethge, `Lp-Nested Symmetric Distributions <https://jmlr.org/papers/v11/sinz10a.html>`_,
  JMLR 2010.
  Stuehmer, Turner & Nowozin, `Independent Subspace Analysis for Unsupervised Learning of
  Disentangled Representations <https://arxiv.org/abs/1909.05063>`_, AISTATS 2020.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from disentangle_jax.distributions.generalized_normal import safe_abs_pow


@dataclasses.dataclass(frozen=True)
class LpNestedNode:
  """One inner node of the static tree structure.

  Attributes:
    leaf_start: first leaf (coordinate of z) under this node.
    leaf_stop: one past the last leaf under this node.
    leaf_runs: (start, stop) ranges of leaves that are direct children of this node.
    child_nodes: pre-order indices of the inner nodes that are direct children.
    child_sizes: number of leaves under each direct child, in child order (a leaf counts 1).
  """

  leaf_start: int
  leaf_stop: int
  leaf_runs: tuple[tuple[int, int], ...]
  child_nodes: tuple[int, ...]
  child_sizes: tuple[int, ...]

  @property
  def num_leaves(self) -> int:
    return self.leaf_stop - self.leaf_start


@dataclasses.dataclass(frozen=True)
class LpNestedTree:
  """Static (hashable) structure of an Lp-nested function; exponents live outside it.

  Attributes:
    nodes: inner nodes in pre-order; nodes[0] is the root and exponents[i] belongs to nodes[i].
  """

  nodes: tuple[LpNestedNode, ...]

  @property
  def num_leaves(self) -> int:
    """n, the dimension of z."""
    return self.nodes[0].num_leaves

  @property
  def num_nodes(self) -> int:
    """Number of inner nodes, i.e. of exponents."""
    return len(self.nodes)

  def subspace_slices(self) -> tuple[tuple[int, int], ...]:
    """(start, stop) leaf ranges of the root's children: the subspaces of an ISA layout."""
    root = self.nodes[0]
    ranges = [self.nodes[i] for i in root.child_nodes]
    out = [(n.leaf_start, n.leaf_stop) for n in ranges]
    out += [(i, i + 1) for start, stop in root.leaf_runs for i in range(start, stop)]
    return tuple(sorted(out))


def parse_lp_nested(spec) -> tuple[LpNestedTree, tuple[float, ...]]:
  """Parses a tree specification into its static structure and its exponents.

  Args:
    spec: a node `[p, children]` as described in the module docstring.

  Returns:
    (tree, exponents): exponents in the tree's pre-order, root first.

  Raises:
    ValueError: naming the offending part for a malformed tree or a non-positive exponent.
  """
  nodes: list[LpNestedNode | None] = []
  exponents: list[float] = []

  def visit(node, path: str, leaf_start: int) -> int:
    if not isinstance(node, (list, tuple)) or len(node) != 2:
      raise ValueError(
        f"Malformed Lp-nested tree at {path}: expected a node [p, children], got {node!r}."
      )
    p, children = node
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p):
      raise ValueError(f"Malformed Lp-nested tree at {path}: exponent must be a number, got {p!r}.")
    if p <= 0:
      raise ValueError(f"Lp-nested exponent at {path} must be > 0, got {p}.")
    if isinstance(children, numbers.Integral) and not isinstance(children, bool):
      children = [children]
    if not isinstance(children, (list, tuple)) or not children:
      raise ValueError(
        f"Malformed Lp-nested tree at {path}: children must be a non-empty list of nodes or "
        f"leaf counts, got {children!r}."
      )
    index = len(nodes)
    nodes.append(None)  # reserve the pre-order slot
    exponents.append(float(p))
    cursor = leaf_start
    runs, child_nodes, sizes = [], [], []
    for k, child in enumerate(children):
      child_path = f"{path}.children[{k}]"
      if isinstance(child, numbers.Integral) and not isinstance(child, bool):
        if child <= 0:
          raise ValueError(f"Leaf count at {child_path} must be a positive integer, got {child}.")
        runs.append((cursor, cursor + int(child)))
        sizes.extend([1] * int(child))
        cursor += int(child)
      else:
        child_index = len(nodes)
        stop = visit(child, child_path, cursor)
        child_nodes.append(child_index)
        sizes.append(stop - cursor)
        cursor = stop
    nodes[index] = LpNestedNode(leaf_start, cursor, tuple(runs), tuple(child_nodes), tuple(sizes))
    return cursor

  visit(spec, "root", 0)
  return LpNestedTree(tuple(nodes)), tuple(exponents)


def isa_layout(p0: float, subspaces: Sequence[tuple[float, int]]) -> list:
  """The ISA tree specification `[p0, [(p1, n1), (p2, n2), ...]]` from its parts."""
  return [p0, [(float(p), int(n)) for p, n in subspaces]]


def check_exponents(tree: LpNestedTree, exponents) -> jax.Array:
  """Returns exponents as an array of shape [num_nodes], raising ValueError if it cannot be."""
  exponents = jnp.asarray(exponents)
  if exponents.shape != (tree.num_nodes,):
    raise ValueError(
      f"This Lp-nested tree has {tree.num_nodes} inner nodes, so exponents must have shape "
      f"({tree.num_nodes},), got {exponents.shape}."
    )
  return exponents


def _as_float_array(z) -> jax.Array:
  """z as a JAX array of a floating dtype JAX supports in the current mode.

  A float64 numpy array under the default (32-bit) mode becomes float32 here, silently, as any
  jnp function would convert it, instead of triggering JAX's "float64 is not available" warning
  from inside this module later; integer input becomes the default float dtype.
  """
  return jnp.asarray(z, dtype=jnp.result_type(z, float))


def _check_event_size(tree: LpNestedTree, z: jax.Array) -> None:
  if z.ndim == 0 or z.shape[-1] != tree.num_leaves:
    raise ValueError(
      f"Lp-nested tree has {tree.num_leaves} leaves, but z has shape {z.shape}: its last axis "
      f"must have size {tree.num_leaves}."
    )


def _safe_pow(x: jax.Array, a: jax.Array) -> jax.Array:
  """x**a for x >= 0, with value 0 and zero gradients at x = 0 (any a > 0)."""
  positive = x > 0
  return jnp.where(positive, jnp.where(positive, x, 1.0) ** a, 0.0)


def _power_sum(tree: LpNestedTree, exponents: jax.Array, z: jax.Array, index: int) -> jax.Array:
  """s_I = sum_k v_ck**p_I for node I, so that v_I = s_I**(1/p_I). Shape z.shape[:-1]."""
  node = tree.nodes[index]
  p = exponents[index]
  total = jnp.zeros(z.shape[:-1], dtype=z.dtype)
  for start, stop in node.leaf_runs:
    total = total + jnp.sum(safe_abs_pow(z[..., start:stop], p), axis=-1)
  for child in node.child_nodes:
    child_sum = _power_sum(tree, exponents, z, child)
    total = total + _safe_pow(child_sum, p / exponents[child])
  return total


def lp_nested_power(z: jax.Array, tree: LpNestedTree, exponents: jax.Array) -> jax.Array:
  """f(z)**p_0, the quantity in the exponent of the density: [..., n] -> [...].

  Computed from power sums without taking roots, so it and its gradients in z and in every
  exponent are finite everywhere, z = 0 and coordinate hyperplanes included (subgradient 0).
  """
  z = _as_float_array(z)
  _check_event_size(tree, z)
  exponents = check_exponents(tree, exponents).astype(z.dtype)
  return _power_sum(tree, exponents, z, 0)


def lp_nested_function(z: jax.Array, tree: LpNestedTree, exponents: jax.Array) -> jax.Array:
  """The Lp-nested function f(z) (a norm when all exponents are >= 1): [..., n] -> [...].

  Formula: v_I = (sum_k |v_ck|**p_I)**(1/p_I) at every inner node; f(z) = v_root.
  """
  z = _as_float_array(z)
  exponents = check_exponents(tree, exponents)
  return _safe_pow(lp_nested_power(z, tree, exponents), 1.0 / exponents[0].astype(z.dtype))


def lp_nested_log_surface(tree: LpNestedTree, exponents: jax.Array) -> jax.Array:
  """log S_f(1), the log surface area of the Lp-nested unit sphere {z : f(z) = 1}.

  Formula: S_f(1) = 2**n prod_I [ p_I**-(l_I - 1)
                      prod_{k=1}^{l_I-1} Beta((sum_{i<=k} n_{I,i}) / p_I, n_{I,k+1} / p_I) ],
  I over inner nodes, l_I the number of children of I, n_{I,i} the number of leaves under child
  i (a leaf counts 1). One node gives 2**n Gamma(1/p)**n / (p**(n-1) Gamma(n/p)).

  The Beta product of a node telescopes to prod_i Gamma(n_{I,i}/p_I) / Gamma(n_I/p_I), which is
  what is computed, with lnGamma: where the larger argument is >= 8 `jax.scipy.special.betaln`
  uses a float32-grade series, off by up to 1.2e-6 per term even in float64 (2.3e-5 summed over
  a 10 x 10 ISA tree), while these lnGamma differences match scipy's betaln to 1e-15 relative in
  float64. Their rounding error, about eps * lnGamma(n_I/p_I), is that of the lnGamma(n/p_0)
  term the log-density has anyway.

  Args:
    tree: the static tree.
    exponents: [num_nodes] exponents in pre-order.

  Returns:
    Scalar log S_f(1), differentiable in the exponents.

  References:
    Sinz & Bethge, `Lp-Nested Symmetric Distributions
    <https://jmlr.org/papers/v11/sinz10a.html>`_, JMLR 2010 (Proposition 1).
  """
  exponents = check_exponents(tree, exponents)
  dtype = jnp.result_type(exponents, float)
  log_s = jnp.asarray(tree.num_leaves * math.log(2.0), dtype)
  for index, node in enumerate(tree.nodes):
    p = exponents[index].astype(dtype)
    sizes = node.child_sizes
    if len(sizes) > 1:
      # prod_k Beta(cum_k / p, n_{k+1} / p) = prod_i Gamma(n_i / p) / Gamma(n_I / p).
      log_s = log_s - (len(sizes) - 1) * jnp.log(p)
      log_s = log_s + jnp.sum(gammaln(jnp.asarray(sizes, dtype) / p)) - gammaln(sum(sizes) / p)
  return log_s


def lp_nested_log_prob(
  z: jax.Array, tree: LpNestedTree, exponents: jax.Array, scale: float | jax.Array = 1.0
) -> jax.Array:
  """Log-density of the Lp-nested symmetric distribution with independent subspaces.

  The radial law is f(z)**p_0 ~ Gamma(n/p_0, scale s), the one under which the children of the
  root (the subspaces of an ISA layout) are independent:

  Formula: log p(z) = log p_0 - lnGamma(n/p_0) - (n/p_0) log s - log S_f(1) - f(z)**p_0 / s.

  (The (n-1) log f(z) terms of the radial density and of the surface element cancel, so the
  density is finite at z = 0.) With p = 2 everywhere and s = 2 this is N(0, I); with s = 1,
  N(0, I/2). One node with exponent p is a product of p-generalised normals with scale s.

  Args:
    z: [..., n] points.
    tree: the static tree, n leaves.
    exponents: [num_nodes] exponents (> 0) in pre-order.
    scale: s > 0.

  Returns:
    [...] log-densities, differentiable in z, exponents and scale.

  References:
    Sinz & Bethge, `Lp-Nested Symmetric Distributions
    <https://jmlr.org/papers/v11/sinz10a.html>`_, JMLR 2010.
    Stuehmer, Turner & Nowozin, `Independent Subspace Analysis for Unsupervised Learning of
    Disentangled Representations <https://arxiv.org/abs/1909.05063>`_, AISTATS 2020.
  """
  z = _as_float_array(z)
  exponents = check_exponents(tree, exponents).astype(z.dtype)
  n = tree.num_leaves
  p0 = exponents[0]
  log_norm = (
    jnp.log(p0)
    - gammaln(n / p0)
    - (n / p0) * jnp.log(scale)
    - lp_nested_log_surface(tree, exponents)
  )
  return log_norm - lp_nested_power(z, tree, exponents) / scale


def _sample_unit_sphere_log_abs(
  key: jax.Array, tree: LpNestedTree, exponents: jax.Array, batch_shape: tuple[int, ...], dtype
) -> jax.Array:
  """log|x| of points uniform (in the Lp-nested sense) on {f(x) = 1}: [*batch_shape, n]."""
  n = tree.num_leaves
  log_abs = [None] * n
  keys = jax.random.split(key, tree.num_nodes)

  def descend(index: int, log_value: jax.Array) -> None:
    node = tree.nodes[index]
    p = exponents[index]
    # u ~ Dirichlet(n_{I,1}/p, ..., n_{I,l}/p), drawn in log space as normalised Gamma variates.
    alpha = jnp.asarray(node.child_sizes, dtype) / p
    log_g = jax.random.loggamma(keys[index], jnp.broadcast_to(alpha, (*batch_shape, len(alpha))))
    log_u = log_g - jax.nn.logsumexp(log_g, axis=-1, keepdims=True)
    child_log_values = log_value[..., None] + log_u / p
    # Child k covers a contiguous leaf range starting at leaf_start + (sizes of children < k).
    node_at_start = {tree.nodes[c].leaf_start: c for c in node.child_nodes}
    starts = node.leaf_start + np.concatenate([[0], np.cumsum(node.child_sizes)[:-1]])
    for position, start in enumerate(starts.tolist()):
      if start in node_at_start:
        descend(node_at_start[start], child_log_values[..., position])
      else:
        log_abs[start] = child_log_values[..., position]

  descend(0, jnp.zeros(batch_shape, dtype))
  return jnp.stack(log_abs, axis=-1)


def lp_nested_sample(
  key: jax.Array,
  tree: LpNestedTree,
  exponents: jax.Array,
  scale: float | jax.Array = 1.0,
  *,
  sample_shape: tuple[int, ...] = (),
  dtype=jnp.float32,
) -> jax.Array:
  """Exact sampler of the Lp-nested distribution of `lp_nested_log_prob`.

  At each inner node I draw u ~ Dirichlet(n_{I,1}/p_I, ..., n_{I,l}/p_I) and give child k the
  value (parent value) * u_k**(1/p_I), starting from 1 at the root and descending to the leaves;
  attach a random sign to each leaf; then scale the point by r with r**p_0 ~ Gamma(n/p_0, s).
  All of it is done in log space, so exponents far from 1 do not underflow.

  Args:
    key: a PRNG key.
    tree: the static tree, n leaves.
    exponents: [num_nodes] exponents (> 0) in pre-order.
    scale: s > 0 (a scalar).
    sample_shape: leading shape of the sample.
    dtype: floating dtype.

  Returns:
    [*sample_shape, n] samples.

  References:
    Sinz & Bethge, `Lp-Nested Symmetric Distributions
    <https://jmlr.org/papers/v11/sinz10a.html>`_, JMLR 2010 (Section 5, sampling).
  """
  exponents = check_exponents(tree, exponents).astype(dtype)
  sample_shape = tuple(sample_shape)
  n = tree.num_leaves
  sphere_key, radius_key, sign_key = jax.random.split(key, 3)
  log_abs = _sample_unit_sphere_log_abs(sphere_key, tree, exponents, sample_shape, dtype)
  p0 = exponents[0]
  log_gamma = jax.random.loggamma(radius_key, jnp.broadcast_to(n / p0, sample_shape), dtype=dtype)
  log_radius = (log_gamma + jnp.log(jnp.asarray(scale, dtype))) / p0
  signs = jax.random.rademacher(sign_key, (*sample_shape, n), dtype=dtype)
  return signs * jnp.exp(log_abs + log_radius[..., None])


def exponents_from_unconstrained(raw: jax.Array, *, minimum: float = 0.0) -> jax.Array:
  """Maps unconstrained parameters to exponents p = minimum + softplus(raw) > minimum.

  Learned exponents are optimised through this map so that gradient steps never leave p > 0.
  """
  return minimum + jax.nn.softplus(raw)


def exponents_to_unconstrained(exponents, *, minimum: float = 0.0) -> jax.Array:
  """Inverse of `exponents_from_unconstrained` (softplus inverse: x + log(-expm1(-x)))."""
  x = jnp.asarray(exponents) - minimum
  if not isinstance(x, jax.core.Tracer) and bool(jnp.any(x <= 0)):
    raise ValueError(f"exponents must all be > {minimum}, got {exponents}.")
  return x + jnp.log(-jnp.expm1(-x))


@functools.partial(
  jax.tree_util.register_dataclass, data_fields=("exponents", "scale"), meta_fields=("tree",)
)
@dataclasses.dataclass(frozen=True)
class LpNested:
  """Lp-nested symmetric distribution (a pytree: exponents and scale are its leaves).

  Construct it from a tree specification in one line, e.g. the ISA-VAE default prior:

    prior = LpNested.from_spec([2.0, [(2.1, 6)] * 3], event_size=18)
    log_p = prior.log_prob(z)                       # [..., 18] -> [...]
    z = prior.sample(seed=key, sample_shape=(64,))  # [64, 18]

  Attributes:
    tree: static structure.
    exponents: [num_nodes] exponents in pre-order (root first).
    scale: s > 0 of the radial law f(z)**p_0 ~ Gamma(n/p_0, s).
  """

  tree: LpNestedTree
  exponents: jax.Array
  scale: jax.Array

  @classmethod
  def from_spec(cls, spec, *, scale: float = 1.0, event_size: int | None = None) -> LpNested:
    """Builds the distribution from `[p0, children]`; checks the tree, exponents and size.

    Raises:
      ValueError: for a malformed tree, a non-positive exponent or scale, or a number of leaves
        different from `event_size` (the latent size of the model it is meant for).
    """
    tree, exponents = parse_lp_nested(spec)
    if event_size is not None and tree.num_leaves != event_size:
      raise ValueError(
        f"Lp-nested tree {spec!r} has {tree.num_leaves} leaves, but the latent size is "
        f"{event_size}: the leaf counts must add up to the latent size."
      )
    if not scale > 0:
      raise ValueError(f"Lp-nested scale must be > 0, got {scale}.")
    dtype = jnp.result_type(float)  # float32, or float64 with x64 enabled
    return cls(tree, jnp.asarray(exponents, dtype), jnp.asarray(scale, dtype))

  @property
  def event_size(self) -> int:
    return self.tree.num_leaves

  def log_prob(self, value: jax.Array) -> jax.Array:
    """[..., n] -> [...] log-density."""
    return lp_nested_log_prob(value, self.tree, self.exponents, self.scale)

  def sample(self, *, seed: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    """[*sample_shape, n] exact samples, in the dtype of the exponents."""
    return lp_nested_sample(
      seed,
      self.tree,
      self.exponents,
      self.scale,
      sample_shape=sample_shape,
      dtype=self.exponents.dtype,
    )
