"""models.layers.Conv / ConvTranspose are nn.Conv / nn.ConvTranspose written as matrix products:
same parameters, same outputs, same gradients, on the fast (stride-2 "SAME", even kernel) path
and on the fallback."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disentangle_jax.models import layers

# (kernel, strides, padding, input H x W): the nets' layers (k4/k2, stride 2, SAME, 64 -> 4
# and back), uneven kernels and sizes on the fast path, and settings that take the fallback.
CASES = [
  ((4, 4), 2, "SAME", (8, 8)),
  ((2, 2), 2, "SAME", (8, 8)),
  ((6, 4), 2, "SAME", (6, 10)),
  ((4, 2), 2, "SAME", (4, 6)),
  ((3, 3), 2, "SAME", (8, 8)),  # odd kernel: fallback
  ((4, 4), 2, "SAME", (7, 5)),  # odd input: fallback for Conv, fast for ConvTranspose
  ((4, 4), 1, "SAME", (8, 8)),  # stride 1: fallback
  ((4, 4), 2, "VALID", (8, 8)),  # VALID: fallback
]
PAIRS = {"conv": (layers.Conv, nn.Conv), "conv_transpose": (layers.ConvTranspose, nn.ConvTranspose)}


def _setup(pair, kernel, strides, padding, size, channels=3, features=5):
  ours, reference = (cls(features, kernel, strides=strides, padding=padding) for cls in PAIRS[pair])
  x = jax.random.normal(jax.random.key(0), (2, *size, channels))
  return ours, reference, x


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("kernel, strides, padding, size", CASES)
def test_same_parameters_as_flax(pair, kernel, strides, padding, size):
  """init gives Flax's parameter tree, bitwise (same names, shapes, initialisers, keys), so
  checkpoints move between conv_impl "flax" and "linen"."""
  ours, reference, x = _setup(pair, kernel, strides, padding, size)
  chex.assert_trees_all_equal(ours.init(jax.random.key(1), x), reference.init(jax.random.key(1), x))


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("kernel, strides, padding, size", CASES)
def test_outputs_and_gradients_match_flax(pair, kernel, strides, padding, size):
  """Outputs and the gradients w.r.t. parameters and input equal Flax's layer's.

  The same float32 sums in another order: each output sums kh*kw*C = 72 products of O(1) terms,
  so the rounding difference is a few ulps of ~sqrt(72) ~ 8, far below 1e-5 absolute.
  """
  ours, reference, x = _setup(pair, kernel, strides, padding, size)
  params = reference.init(jax.random.key(1), x)
  y = ours.apply(params, x)
  np.testing.assert_allclose(y, reference.apply(params, x), rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

  grads = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  expected = jax.grad(loss(reference), argnums=(0, 1))(params, x)
  chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-5)


def test_no_bias_matches_flax():
  """use_bias=False creates no bias and computes kernel products only, as Flax does."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  for ours, reference in PAIRS.values():
    a, b = (
      ours(4, (4, 4), strides=2, use_bias=False),
      reference(4, (4, 4), strides=2, use_bias=False),
    )
    params = b.init(jax.random.key(1), x)
    assert "bias" not in params["params"]
    np.testing.assert_allclose(a.apply(params, x), b.apply(params, x), rtol=1e-5, atol=1e-5)


def test_space_to_depth_round_trip():
  """depth_to_space inverts space_to_depth; channel (i, j, c) holds pixel (2p + i, 2q + j)."""
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  s = layers.space_to_depth(x)
  chex.assert_shape(s, (2, 2, 3, 12))
  np.testing.assert_array_equal(layers.depth_to_space(s), x)
  np.testing.assert_array_equal(s[:, 1, 2, 3 * 3 : 3 * 4], x[:, 3, 5, :])  # (i, j) = (1, 1)


@pytest.mark.parametrize("rows", [1, 7, 4096 * 3 + 5, 4096 * 4])
def test_pixel_matmul_is_a_matmul(rows):
  """The grouped product equals x @ w for row counts with and without a divisor near 4096."""
  x = jax.random.normal(jax.random.key(0), (rows, 6))
  w = jax.random.normal(jax.random.key(1), (6, 4))
  np.testing.assert_allclose(layers.pixel_matmul(x, w), x @ w, rtol=1e-5, atol=1e-5)
