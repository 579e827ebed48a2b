"""Stride-2 convolutions written as stride-1 ones: the conv nets' default layers.

`Conv` and `ConvTranspose` have the parameters (names, shapes, initialisers) and the outputs of
`flax.linen.Conv` and `flax.linen.ConvTranspose`, so either can load the other's checkpoints.
They differ in how a stride-2 "SAME" layer reaches XLA:

* `Conv` reorders the padded input space-to-depth (2x2 pixel blocks become channels) and runs a
  stride-1 convolution with the kernel regrouped to [k/2, k/2, 4 C_in, C_out];
* `ConvTranspose` runs one stride-1 convolution whose 4 C_out output channels are the four
  output pixel phases (sub-pixel convolution), then interleaves them depth-to-space.

and both run that stride-1 convolution as matrix products of shifted copies (`window_conv`).
Both are exact rewrites (the same sums, in another order). The point is speed on XLA:CPU: the
gradient of a strided convolution and a transposed convolution are convolutions with dilated
inputs, which it runs in a generic loop, and even its stride-1 convolutions with these nets' few
channels are several times slower than the same sums as matrix products. Everything here is
slices, pads, reshapes and dots, so `jax.jvp`, `jax.hessian` and `jax.vmap` apply as to any layer.
Other strides, paddings, odd kernels or odd sizes take lax's strided/dilated convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")


def space_to_depth(x: jax.Array) -> jax.Array:
  """[B, 2H, 2W, C] -> [B, H, W, 4C]; channel index (row parity, column parity, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
  """[B, H, W, 4C] -> [B, 2H, 2W, C]; inverse of `space_to_depth`."""
  b, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


# Rows (pixels) per group of `pixel_matmul`'s batched products.
MATMUL_ROWS = 4096


def pixel_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x @ w for x [..., K] with many rows, as a batched product over groups of ~MATMUL_ROWS rows.

  The same sums as `x @ w`; written with w broadcast over the groups so that the gradient with
  respect to w is a batched product per group plus a sum over groups, which XLA:CPU runs without
  transposing the whole of x (about 1.5x faster than one product over all rows here).
  """
  rows = x.size // x.shape[-1]
  groups = max(1, rows // MATMUL_ROWS)
  while rows % groups:
    groups -= 1
  xg = x.reshape(groups, rows // groups, x.shape[-1])
  y = jnp.einsum("grk,gkn->grn", xg, jnp.broadcast_to(w, (groups, *w.shape)))
  return y.reshape(*x.shape[:-1], w.shape[-1])


def window_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 "VALID" convolution with a small window, as matrix products.

  Args:
    x: [B, P + n - 1, Q + m - 1, K].
    kernel: [n, m, K, N].

  Returns:
    y [B, P, Q, N], y[p, q] = sum_{a < n, b < m} x[p + a, q + b] @ kernel[a, b].

  With K <= N the n*m shifted copies of x are concatenated along channels (im2col) and multiplied
  by the [n*m*K, N] kernel; otherwise x is multiplied once by the [K, n*m*N] kernel and the n*m
  partial outputs are added at their shifts: the widest temporary has n*m*min(K, N) channels.
  XLA:CPU runs these products, and their derivatives, several times faster than its convolutions
  with the few channels of these nets.
  """
  n, m, k, c_out = kernel.shape
  p, q = x.shape[1] - n + 1, x.shape[2] - m + 1
  if n * m == 1:
    return pixel_matmul(x, kernel[0, 0])
  if k <= c_out:
    cols = [x[:, a : a + p, b : b + q, :] for a in range(n) for b in range(m)]
    return pixel_matmul(jnp.concatenate(cols, -1), kernel.reshape(n * m * k, c_out))
  parts = pixel_matmul(x, kernel.transpose(2, 0, 1, 3).reshape(k, n * m * c_out))
  parts = parts.reshape(*parts.shape[:3], n, m, c_out)
  return sum(parts[:, a : a + p, b : b + q, a, b, :] for a in range(n) for b in range(m))


def _fast_path(x: jax.Array, kernel_size: Sequence[int], strides, padding, even_input) -> bool:
  pair = tuple(strides) if isinstance(strides, Sequence) else (strides, strides)
  even = not even_input or (x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0)
  return (
    x.ndim == 4
    and pair == (2, 2)
    and padding == "SAME"
    and len(kernel_size) == 2
    and all(k % 2 == 0 for k in kernel_size)
    and even
  )


def conv_s2_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (2, 2), "SAME") for even sizes and kernels, stride-1.

  Args:
    x: [B, H, W, C_in] with H, W even.
    kernel: [kh, kw, C_in, C_out] with kh, kw even.

  Returns:
    [B, H/2, W/2, C_out].

  With the input padded as "SAME" pads it (p_lo = (k - 2) / 2 on each side), output m sums
  x_pad[2m + t] K[t] over taps t = 2a + r: with s[j, r] = x_pad[2j + r] (space-to-depth) that
  is sum_a s[m + a, r] K[2a + r], a stride-1 convolution of s with K regrouped per (a, r).
  """
  kh, kw, c_in, c_out = kernel.shape
  pad_h, pad_w = (kh - 2) // 2, (kw - 2) // 2
  x = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
  # [kh, kw, C_in, C_out] -> [kh/2, 2, kw/2, 2, C_in, C_out] -> [kh/2, kw/2, (2, 2, C_in), C_out].
  k = kernel.reshape(kh // 2, 2, kw // 2, 2, c_in, c_out).transpose(0, 2, 1, 3, 4, 5)
  k = k.reshape(kh // 2, kw // 2, 4 * c_in, c_out)
  return window_conv(space_to_depth(x), k)


def _phase_taps(k: int, r: int) -> tuple[int, list[int]]:
  """Output phase r of a k-tap, stride-2, "SAME" transposed convolution (lax's padding).

  lax pads the 2x-dilated input by p_lo = ceil(k / 2) in front (k - 1 = 1 for k = 2), so
  output 2m + r sums x[m + d] K[t] over the taps t with r + t - p_lo = 2d.
  Returns the smallest d and the taps in increasing d.
  """
  pad_lo = k - 1 if k < 3 else -(-k // 2)
  taps = [t for t in range(k) if (r + t - pad_lo) % 2 == 0]
  return (r + taps[0] - pad_lo) // 2, taps


def conv_transpose_s2_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_transpose(x, kernel, (2, 2), "SAME") for even kernels, as a sub-pixel convolution.

  Args:
    x: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out] with kh, kw even (not flipped: Flax's convention).

  Returns:
    [B, 2H, 2W, C_out].

  Output pixel (2m + r, 2n + c) only meets the k/2 x k/2 taps of its phase (r, c), each at input
  (m + d_r, n + d_c). One stride-1 convolution computes all four phases as 4 C_out channels over
  the input padded to cover every phase's offsets; each phase is then cut at its own offset and
  the four are interleaved depth-to-space.
  """
  kh, kw, c_in, c_out = kernel.shape
  b, h, w, _ = x.shape
  rows = [_phase_taps(kh, r) for r in (0, 1)]
  cols = [_phase_taps(kw, c) for c in (0, 1)]
  lo_h, hi_h = min(d for d, _ in rows), max(d for d, _ in rows)
  lo_w, hi_w = min(d for d, _ in cols), max(d for d, _ in cols)
  # Pad so that every phase's taps stay inside: d from lo to hi + k/2 - 1 around each pixel.
  x = jnp.pad(
    x,
    ((0, 0), (-lo_h, hi_h + kh // 2 - 1), (-lo_w, hi_w + kw // 2 - 1), (0, 0)),
  )
  blocks = []
  for _, taps_r in rows:
    for _, taps_c in cols:
      blocks.append(kernel[jnp.array(taps_r)][:, jnp.array(taps_c)])
  # [4, kh/2, kw/2, C_in, C_out] -> [kh/2, kw/2, C_in, (4, C_out)]
  k = jnp.stack(blocks).transpose(1, 2, 3, 0, 4).reshape(kh // 2, kw // 2, c_in, 4 * c_out)
  y = window_conv(x, k)
  y = y.reshape(*y.shape[:3], 4, c_out)
  phases = [
    y[:, dr - lo_h : dr - lo_h + h, dc - lo_w : dc - lo_w + w, 2 * i + j]
    for i, (dr, _) in enumerate(rows)
    for j, (dc, _) in enumerate(cols)
  ]
  return depth_to_space(jnp.stack(phases, axis=3).reshape(b, h, w, 4 * c_out))


class Conv(nn.Module):
  """`flax.linen.Conv`'s parameters and outputs; stride-2 "SAME" layers run stride-1.

  Attributes:
    features: C_out.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: "SAME", "VALID" or explicit pairs, as in lax.
    use_bias: add a bias per output channel.
    dtype, param_dtype, kernel_init, bias_init: as in `flax.linen.Conv`.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Any = 1
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H', W', C_out]."""
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if _fast_path(x, self.kernel_size, self.strides, self.padding, even_input=True):
      y = conv_s2_same(x, kernel)
    else:
      strides = self.strides if isinstance(self.strides, Sequence) else (self.strides,) * 2
      y = lax.conv_general_dilated(x, kernel, strides, self.padding, dimension_numbers=_DIMS)
    return y if bias is None else y + bias


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose`'s parameters and outputs; stride-2 "SAME" layers run sub-pixel.

  Attributes: as `Conv`'s.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Any = 1
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, s H, s W, C_out] (for "SAME")."""
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if _fast_path(x, self.kernel_size, self.strides, self.padding, even_input=False):
      y = conv_transpose_s2_same(x, kernel)
    else:
      strides = self.strides if isinstance(self.strides, Sequence) else (self.strides,) * 2
      y = lax.conv_transpose(x, kernel, strides, self.padding, dimension_numbers=_DIMS)
    return y if bias is None else y + bias
