"""Fast XLA:CPU lowering of the stride-2 "SAME" convolutions of the conv encoder and decoder.

Two lowerings replace XLA's slow strided and transposed convolutions on CPU: oneDNN's JIT
convolutions as XLA custom calls (`conv_s2_onednn`, `conv_transpose_s2_onednn`; see
`disentangle_jax.kernels.onednn`), which "auto" takes for float32 layers where they build, and
the sub-pixel matrix products below, which it takes otherwise. With oneDNN a layer's bias and
its ReLU (`Conv(..., apply_relu=True)`) run inside the primitive and the bias gradient inside the
backward-weights primitive, so the network makes no passes over its activations of its own.

On XLA:CPU a convolution with input dilation (a transposed convolution, and so the input gradient
of every strided convolution) runs as a slow generic loop, kernel gradients need large transposes
of the activations, and even the forward strided convolutions with these few channels are slow.
Everything here is written as matrix products instead, NHWC with HWIO kernels
[kh, kw, C_in, C_out], stride 2 in both spatial dimensions, "SAME" padding, no dilation, one
feature group. A stride-2 layer and its gradients need three operators:

* the strided convolution y = A_K x (`conv_s2_matmul`): a 2m x 2m stride-2 convolution of x is an
  m x m stride-1 convolution of space_to_depth(padded x) (4 C channels), computed by
  `window_matmul` (shifted copies concatenated, or partial products added at their shifts);
* its adjoint A_K^T, a transposed convolution, as a *sub-pixel* convolution (`scatter_s2`):
  along each dimension the output pair (2u - s, 2u + 1 - s) reads the same window of input pixels
  (2 of them for k = 4, 1 for k = 2), so one `window_matmul` with a combined kernel gives all 2x2
  output parities (4 C_out channels) at once, and `depth_to_space` interleaves them;
* the kernel gradient of A_K (`_conv_kernel_grad`): sum over pixels of (window pixels) x (output
  gradient) products on the space-to-depth input, as batched matrix products.

Flax's `nn.ConvTranspose(strides=2, padding="SAME", transpose_kernel=False)` with kernel W is
exactly A_K^T for K = flip_swap(W) (spatially flipped, in/out swapped): its forward pass is
`scatter_s2`, its input gradient A_K dy and its kernel gradient the flip_swap of A_K's kernel
gradient at input dy and output cotangent x. `conv_s2_same` and `conv_transpose_s2_same` put
these together as `jax.custom_vjp`s; `Conv` and `ConvTranspose` are the Flax layers using them,
with the parameters and outputs of `nn.Conv` / `nn.ConvTranspose`.

Memory matters as much as arithmetic on XLA:CPU: a jitted step gets one temporary buffer per run,
fresh from the OS (page faults) once it is larger than glibc's mmap threshold (32 MiB), and big
intermediates fall out of cache. So ConvEncoder and ConvDecoder run their whole network
`NETWORK_CHUNK` examples at a time (`apply_in_chunks`: `lax.map` over chunks with
`jax.checkpoint`, which keeps each chunk's input and its small ReLU outputs for the backward pass
and recomputes the layers whose outputs are larger than `SAVED_ACTIVATION_BYTES`), and a single
layer on a large batch maps over chunks of about `CHUNK_BYTES`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from disentangle_jax.kernels import onednn

# Images per chunk are chosen so that a chunk's largest array stays below this many bytes.
CHUNK_BYTES = 16 << 20
# Rows (pixels) per group of the kernel gradient's batched products (`_conv_kernel_grad`).
KERNEL_GRAD_ROWS = 4096


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, H/b, W/b, b*b*C]; channel index (i, j, c) holds x[b*h + i, b*w + j, c]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """[B, H, W, b*b*C] -> [B, b*H, b*W, C], the inverse of `space_to_depth`."""
  b, h, w, c = x.shape
  c //= block * block
  x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c)


def same_padding(size: int, kernel: int, stride: int = 2) -> tuple[int, int, int]:
  """(output size, low pad, high pad) of a "SAME" convolution, as `lax.padtype_to_pads`."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def _pad_hw(x: jax.Array, h: tuple[int, int], w: tuple[int, int]) -> jax.Array:
  """Zero-pads (or, for negative pads, crops) the two spatial dimensions of [B, H, W, C]."""
  return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*h, 0), (*w, 0), (0, 0, 0)))


def flip_swap(kernel: jax.Array) -> jax.Array:
  """[kh, kw, I, O] -> [kh, kw, O, I] flipped in space: the kernel of the adjoint convolution."""
  return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def window_matmul(x: jax.Array, kernel: jax.Array, *, precision=None) -> jax.Array:
  """Stride-1 "VALID" convolution with a small window, as matrix products.

  Args:
    x: [B, P + n - 1, Q + m - 1, K].
    kernel: [n, m, K, N].
    precision: passed to the matrix products.

  Returns:
    y [B, P, Q, N], y[p, q] = sum_{a < n, b < m} x[p + a, q + b] @ kernel[a, b].

  With K <= N the n*m shifted copies of x are concatenated (im2col) and multiplied by the
  [n*m*K, N] kernel; otherwise x is multiplied once by the [K, n*m*N] kernel and the n*m partial
  outputs are added at their shifts. Either way the widest temporary has n*m*min(K, N) channels.
  """
  n, m, k, c_out = kernel.shape
  p, q = x.shape[1] - n + 1, x.shape[2] - m + 1
  if n * m == 1:
    return jnp.dot(x, kernel[0, 0], precision=precision)
  if k <= c_out:
    cols = [x[:, a : a + p, b : b + q, :] for a in range(n) for b in range(m)]
    return jnp.dot(jnp.concatenate(cols, -1), kernel.reshape(n * m * k, c_out), precision=precision)
  parts = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(k, n * m * c_out), precision=precision)
  parts = parts.reshape(*parts.shape[:3], n, m, c_out)
  return sum(parts[:, a : a + p, b : b + q, a, b, :] for a in range(n) for b in range(m))


def _subpixel_plan(kernel: int, offset: int) -> tuple[int, int, np.ndarray]:
  """1-D plan of `scatter_s2`: out[i] = sum over i = 2 p + t - offset of x[p] w[t].

  Output pairs (2 q - s, 2 q + 1 - s) read the inputs q + d, d = d_min .. d_min + n - 1. Returns
  (s, d_min, taps) with taps[a, r] the kernel tap feeding parity r from window position a, or -1;
  s in {0, 1} is chosen to make the window n as small as possible.
  """
  best = None
  for shift in (0, 1):
    # i = 2q + r - shift = 2(q + d) + t - offset  =>  t = r - shift + offset - 2d.
    pairs = [
      (r, (r - shift + offset - t) // 2, t)
      for r in (0, 1)
      for t in range(kernel)
      if (r - shift + offset - t) % 2 == 0
    ]
    ds = [d for _, d, _ in pairs]
    d_min, n = min(ds), max(ds) - min(ds) + 1
    taps = np.full((n, 2), -1)
    for r, d, t in pairs:
      taps[d - d_min, r] = t
    if best is None or n < best[2].shape[0]:
      best = (shift, d_min, taps)
  return best


def scatter_s2(
  x: jax.Array,
  kernel: jax.Array,
  offsets: tuple[int, int],
  out_size: tuple[int, int],
  *,
  precision=None,
  window: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array:
  """Stride-2 transposed convolution as a sub-pixel convolution.

  Args:
    x: [B, P, Q, C].
    kernel: [kh, kw, C, O].
    offsets: (oh, ow).
    out_size: (H, W) of the output.
    precision: passed to the matrix products.
    window: the stride-1 window convolution (x, kernel [n, m, K, N], pads) -> y of x zero-padded
      (negative pads: cropped) by pads ((top, bottom), (left, right)); None for
      `window_matmul` of the padded x.

  Returns:
    y [B, H, W, O] with y[i, j] = sum x[p, q] @ kernel[s, t] over i = 2 p + s - oh,
    j = 2 q + t - ow. With offsets = the low "SAME" pads of a stride-2 convolution A_K with
    kernel K = flip_swap(kernel), this is its adjoint A_K^T.

  Identity used: each output pair (2 u - s, 2 u + 1 - s) along a dimension reads the same window of
  n input pixels (n = k/2 for even k with the right s), so y in [B, U, V, 2*2*O] "space-to-depth"
  form is one `window_matmul` of the padded x with a combined [n, m, C, 2*2*O] kernel (zero where
  a parity has no tap); `depth_to_space` and a crop give y.
  """
  _, p, q, c = x.shape
  kh, kw, _, c_out = kernel.shape
  sh, dh, taps_h = _subpixel_plan(kh, offsets[0])
  sw, dw, taps_w = _subpixel_plan(kw, offsets[1])
  nh, nw = taps_h.shape[0], taps_w.shape[0]
  u, v = -(-(out_size[0] + sh) // 2), -(-(out_size[1] + sw) // 2)
  # Combined kernel [nh, nw, C, 2, 2, O]: a gather from the flat kernel plus one zero tap.
  index = np.where(
    (taps_h[:, None, :, None] >= 0) & (taps_w[None, :, None, :] >= 0),
    taps_h[:, None, :, None] * kw + taps_w[None, :, None, :],
    kh * kw,
  )  # [nh, nw, 2, 2]
  zero_tap = jnp.zeros((1, c, c_out), kernel.dtype)
  flat = jnp.concatenate([kernel.reshape(kh * kw, c, c_out), zero_tap])
  combined = flat[index].transpose(0, 1, 4, 2, 3, 5).reshape(nh, nw, c, 4 * c_out)
  pads = ((-dh, u + dh + nh - 1 - p), (-dw, v + dw + nw - 1 - q))
  if window is None:
    y = window_matmul(_pad_hw(x, *pads), combined, precision=precision)
  else:
    y = window(x, combined, pads)
  y = depth_to_space(y)
  return y[:, sh : sh + out_size[0], sw : sw + out_size[1], :]


def _space_to_depth_input(x, kernel_shape, out_size):
  """The padded, space-to-depth input of a stride-2 "SAME" convolution, and its 2x2-block taps.

  A kernel of odd size k gets a leading zero tap (and x one more leading zero row/column) so
  that every kernel is even, k = 2m. Returns (xs [B, P + mh - 1, Q + mw - 1, 4C], (mh, mw),
  (eh, ew)) with eh, ew = 1 where a zero tap was added.
  """
  kh, kw = kernel_shape[:2]
  _, h, w, _ = x.shape
  (_, lh, _), (_, lw, _) = same_padding(h, kh), same_padding(w, kw)
  eh, ew = kh % 2, kw % 2
  mh, mw = (kh + eh) // 2, (kw + ew) // 2
  ph, pw = out_size[0] + mh - 1, out_size[1] + mw - 1
  xs = space_to_depth(_pad_hw(x, (lh + eh, 2 * ph - h - lh - eh), (lw + ew, 2 * pw - w - lw - ew)))
  return xs, (mh, mw), (eh, ew)


def conv_s2_matmul(x, kernel, *, precision=None, window=None):
  """The stride-2 "SAME" convolution as `window_matmul` of the space-to-depth input.

  Identity: tap (2a + i, 2b + j) of a 2m x 2m kernel reads xs[p + (a, b)] channel (i, j, c), so
  the convolution is a stride-1 m x m convolution of xs with the kernel K[a, b, (i, j, c), o].
  `window` (xs, kernel [m, m, 4C, O]) -> y replaces `window_matmul` for that convolution.
  """
  kh, kw, c, c_out = kernel.shape
  out = (-(-x.shape[1] // 2), -(-x.shape[2] // 2))
  xs, (mh, mw), (eh, ew) = _space_to_depth_input(x, kernel.shape, out)
  kernel = jnp.pad(kernel, ((eh, 0), (ew, 0), (0, 0), (0, 0)))
  kernel = kernel.reshape(mh, 2, mw, 2, c, c_out).transpose(0, 2, 1, 3, 4, 5)
  kernel = kernel.reshape(mh, mw, 4 * c, c_out)
  if window is None:
    return window_matmul(xs, kernel, precision=precision)
  return window(xs, kernel)


def _largest_divisor(n: int, at_most: int) -> int:
  return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def _conv_kernel_grad(x, dy, kernel_shape, precision):
  """d<dy, A_K x>/dK, the kernel gradient of the strided convolution, as matrix products.

  With x padded as the "SAME" convolution pads it (plus one leading zero row/column for an odd
  kernel, whose kernel gets a leading zero tap) and xs = space_to_depth(x) [B, P + m - 1, .., 4C],
  the kernel taps (2a + i, 2b + j) are dK[a, b] = sum_p xs[p + (a, b)]^T dy[p]: either one
  product of xs with the m*m shifted copies of dy concatenated along channels, or of the m*m
  shifted copies of xs (im2col) with dy, whichever copies fewer channels. The sum over pixels is
  split into groups of a few thousand rows (a batched matmul, then a sum over groups), which
  XLA:CPU runs without transposing whole activations.
  """
  kh, kw, c, c_out = kernel_shape
  b = x.shape[0]
  _, oh, ow, _ = dy.shape
  xs, (mh, mw), (eh, ew) = _space_to_depth_input(x, kernel_shape, (oh, ow))
  offsets = [(a, bb) for a in range(mh) for bb in range(mw)]
  if 4 * c <= c_out:  # im2col of xs: [B, oh, ow, (a, b, i, j, c)]
    lhs = jnp.concatenate([xs[:, a : a + oh, bb : bb + ow] for a, bb in offsets], -1)
    rhs = dy
  else:  # shifted copies of dy: [B, ph, pw, (a, b, o)]
    lhs = xs
    rhs = jnp.concatenate(
      [_pad_hw(dy, (a, mh - 1 - a), (bb, mw - 1 - bb)) for a, bb in offsets], -1
    )
  rows = lhs.shape[1] * lhs.shape[2]
  groups = _largest_divisor(b, b * rows // KERNEL_GRAD_ROWS)
  lhs = lhs.reshape(groups, -1, lhs.shape[-1])
  rhs = rhs.reshape(groups, -1, rhs.shape[-1])
  m = jnp.einsum("gsk,gsn->gkn", lhs, rhs, precision=precision).sum(0)
  if 4 * c <= c_out:  # m[(a, b, i, j, c), o]
    m = m.reshape(mh, mw, 2, 2, c, c_out).transpose(0, 2, 1, 3, 4, 5)
  else:  # m[(i, j, c), (a, b, o)]
    m = m.reshape(2, 2, c, mh, mw, c_out).transpose(3, 0, 4, 1, 2, 5)
  # -> dK[2a + i, 2b + j, c, o]
  return m.reshape(2 * mh, 2 * mw, c, c_out)[eh:, ew:]


def _conv_adjoint(dy, kernel, in_size, precision):
  """A_K^T dy for A_K the stride-2 "SAME" convolution of [B, *in_size, C] images."""
  kh, kw = kernel.shape[:2]
  lows = (same_padding(in_size[0], kh)[1], same_padding(in_size[1], kw)[1])
  # x[p] = sum_t y[2p + t - lo] K[t]  =>  A_K^T: y[i] = sum over i = 2p + t - lo of x[p] K[t]^T.
  return scatter_s2(dy, kernel.transpose(0, 1, 3, 2), lows, in_size, precision=precision)


def _chunk_size(batch: int, bytes_per_image: int) -> int:
  """Images per chunk: the whole batch if it is small, else a divisor of it near CHUNK_BYTES."""
  target = max(1, CHUNK_BYTES // max(bytes_per_image, 1))
  if batch * bytes_per_image <= 4 * CHUNK_BYTES:
    return batch
  chunk = _largest_divisor(batch, target)
  return chunk if 4 * chunk >= target else batch


def map_chunks(fn: Callable[..., jax.Array], chunk: int, *xs: jax.Array) -> jax.Array:
  """fn(*xs) for a batch-wise fn, evaluated on `chunk` examples at a time with `lax.map`."""
  batch = xs[0].shape[0]
  if chunk >= batch:
    return fn(*xs)
  n = batch // chunk
  ys = lax.map(lambda a: fn(*a), tuple(x.reshape(n, chunk, *x.shape[1:]) for x in xs))
  return jax.tree.map(lambda y: y.reshape(batch, *y.shape[2:]), ys)


# Examples per chunk when a whole conv network runs a chunk at a time (`apply_in_chunks`).
NETWORK_CHUNK = 16


def network_chunk(batch: int, requested: int | None) -> int:
  """Examples per chunk of a whole conv network: `requested`, or NETWORK_CHUNK if it divides."""
  if requested is not None:
    if requested >= batch:  # e.g. a batch of one at init: nothing to split
      return batch
    if requested > 0 and batch % requested:
      raise ValueError(f"batch_chunk must divide the batch {batch}; got {requested}.")
    return batch if requested <= 0 else requested
  chunk = _largest_divisor(batch, NETWORK_CHUNK)
  return chunk if 2 * chunk >= NETWORK_CHUNK else batch


def can_chunk(module: nn.Module) -> bool:
  """Whether `apply_in_chunks` may run `module`: not while creating params or sowing values."""
  return not module.is_initializing() and not module.is_mutable_collection("intermediates")


# Names under which `relu` tags its outputs for `apply_in_chunks`'s checkpoint policy, which
# keeps the first and recomputes the second.
ACTIVATION_NAME = "conv_lowering_activation"
LARGE_ACTIVATION_NAME = "conv_lowering_large_activation"
# `apply_in_chunks` keeps a chunk's `relu` outputs of at most this many bytes for the backward
# pass and recomputes the larger ones there (0: recompute every activation).
SAVED_ACTIVATION_BYTES = 1 << 20


def relu(x: jax.Array) -> jax.Array:
  """max(x, 0), tagged `ACTIVATION_NAME`, with the derivative (0 at 0) read off the output.

  `jax.nn.relu`'s derivative is 1[x > 0] of its input; 1[relu(x) > 0] is the same mask taken
  from the output, so a layer stack that keeps only its activations (`apply_in_chunks`) needs
  neither the pre-activations nor the products that made them in its backward pass. (The name
  is outside the custom derivative: a checkpoint policy does not see names inside one.)
  """
  small = x.size * x.dtype.itemsize <= SAVED_ACTIVATION_BYTES
  name = ACTIVATION_NAME if small else LARGE_ACTIVATION_NAME
  return _masked_by_output(checkpoint_name(jnp.maximum(x, 0), name), x)


@jax.custom_jvp
def _masked_by_output(y: jax.Array, x: jax.Array) -> jax.Array:
  """y = relu(x), differentiated as relu: tangent 1[y > 0] dx (the tangent of y is unused)."""
  del x
  return y


@_masked_by_output.defjvp
def _masked_by_output_jvp(primals, tangents):
  (y, _), (_, dx) = primals, tangents
  return y, jnp.where(y > 0, dx, jnp.zeros_like(dx))


def apply_in_chunks(module: nn.Module, x: jax.Array, chunk: int, **overrides) -> jax.Array:
  """module(x) evaluated `chunk` examples at a time under `lax.map` and `jax.checkpoint`.

  The bound module's variables are applied to each chunk by an unbound clone (with `overrides`,
  e.g. to switch the chunking off), so every activation and temporary is chunk-sized.

  The backward pass gets each chunk's input and those outputs of the module's `relu`s (its
  layers' inputs) that take at most `SAVED_ACTIVATION_BYTES` per chunk: the layers' custom VJPs
  and `relu` need nothing else, so only the layers with larger outputs run their forward product
  again. Keeping everything costs more than it saves: `lax.map` stacks the kept arrays over
  chunks in zero-filled buffers. At batch 64 (chunks of 16), keeping every activation ran at
  0.80x the speed of keeping none, and keeping none at 0.93x the speed of the 1 MiB limit
  (BUILD_NOTES).
  """
  variables = module.variables
  clone = module.clone(parent=None, **overrides)
  policy = jax.checkpoint_policies.save_only_these_names(ACTIVATION_NAME)
  body = jax.checkpoint(lambda xc: clone.apply(variables, xc), policy=policy)
  return map_chunks(body, chunk, x)


def sum_chunks(fn: Callable[..., jax.Array], chunk: int, *xs: jax.Array) -> jax.Array:
  """sum over chunks of fn(*chunk_of_xs) for a fn that sums over the batch, with `lax.scan`."""
  batch = xs[0].shape[0]
  if chunk >= batch:
    return fn(*xs)
  n = batch // chunk
  split = tuple(x.reshape(n, chunk, *x.shape[1:]) for x in xs)
  first = fn(*(s[0] for s in split))

  def body(total, a):
    return total + fn(*a), None

  return lax.scan(body, first, tuple(s[1:] for s in split))[0]


def _bytes_per_image(*shapes: Sequence[int]) -> int:
  # Each array of the chunk and up to four times the widest one for the im2col temporaries.
  sizes = [int(np.prod(s[1:])) * 4 for s in shapes]
  return sum(sizes) + 4 * max(sizes)


def _auto_chunk(chunk: int | None, batch: int, *shapes: Sequence[int]) -> int:
  if chunk is not None:
    if chunk < 1 or batch % chunk:
      raise ValueError(f"chunk must be a positive divisor of the batch {batch}; got {chunk}.")
    return chunk
  return _chunk_size(batch, _bytes_per_image(*shapes))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_s2_same(x, kernel, precision, chunk):
  return _conv_s2_same_fwd(x, kernel, precision, chunk)[0]


def _conv_s2_same_fwd(x, kernel, precision, chunk):
  y_shape = (x.shape[0], -(-x.shape[1] // 2), -(-x.shape[2] // 2), kernel.shape[-1])
  chunk = _auto_chunk(chunk, x.shape[0], x.shape, y_shape)
  y = map_chunks(lambda xc: conv_s2_matmul(xc, kernel, precision=precision), chunk, x)
  return y, (x, kernel)


def _conv_s2_same_bwd(precision, chunk, res, dy):
  x, kernel = res
  chunk = _auto_chunk(chunk, x.shape[0], x.shape, dy.shape)
  dx = map_chunks(lambda d: _conv_adjoint(d, kernel, x.shape[1:3], precision), chunk, dy)
  dk = sum_chunks(lambda xc, d: _conv_kernel_grad(xc, d, kernel.shape, precision), chunk, x, dy)
  return dx, dk


_conv_s2_same.defvjp(_conv_s2_same_fwd, _conv_s2_same_bwd)


def conv_s2_same(
  x: jax.Array, kernel: jax.Array, *, precision=None, chunk: int | None = None
) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (2, 2), "SAME")`, NHWC/HWIO, as matrix products.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O], any sizes.
    precision: passed to the convolutions and matrix products.
    chunk: images per `lax.map` step (a divisor of B); None picks one from the sizes (the whole
      batch when it is small).

  Returns:
    [B, ceil(H/2), ceil(W/2), O]. The forward pass is `conv_s2_matmul`, the input gradient the
    sub-pixel convolution `scatter_s2` and the kernel gradient `_conv_kernel_grad`, each a chunk
    of the batch at a time. Reverse mode only (`jax.custom_vjp`).
  """
  return _conv_s2_same(x, kernel, precision, chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose_s2_same(x, kernel, precision, chunk):
  return _conv_transpose_s2_same_fwd(x, kernel, precision, chunk)[0]


def _conv_transpose_s2_same_fwd(x, kernel, precision, chunk):
  out = (2 * x.shape[1], 2 * x.shape[2])
  chunk = _auto_chunk(chunk, x.shape[0], x.shape, (x.shape[0], *out, kernel.shape[-1]))
  adjoint_kernel = flip_swap(kernel)  # conv_transpose(x, W) = A_K^T x with K = flip_swap(W)
  y = map_chunks(lambda xc: _conv_adjoint(xc, adjoint_kernel, out, precision), chunk, x)
  return y, (x, kernel)


def _conv_transpose_s2_same_bwd(precision, chunk, res, dy):
  x, kernel = res
  chunk = _auto_chunk(chunk, x.shape[0], x.shape, dy.shape)
  adjoint_kernel = flip_swap(kernel)
  dx = map_chunks(lambda d: conv_s2_matmul(d, adjoint_kernel, precision=precision), chunk, dy)
  dk = sum_chunks(
    lambda d, xc: _conv_kernel_grad(d, xc, adjoint_kernel.shape, precision), chunk, dy, x
  )
  return dx, flip_swap(dk)


_conv_transpose_s2_same.defvjp(_conv_transpose_s2_same_fwd, _conv_transpose_s2_same_bwd)


def conv_transpose_s2_same(
  x: jax.Array, kernel: jax.Array, *, precision=None, chunk: int | None = None
) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (2, 2), "SAME")` (kernel not flipped), NHWC/HWIO, fast.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O], any sizes.
    precision: passed to the convolutions and matrix products.
    chunk: images per `lax.map` step (a divisor of B); None picks one from the sizes.

  Returns:
    [B, 2H, 2W, O], as flax's `nn.ConvTranspose(O, (kh, kw), strides=2, padding="SAME")`. The
    forward pass is the sub-pixel convolution `scatter_s2`; the input gradient is the strided
    convolution with flip_swap(kernel) and the kernel gradient that convolution's kernel gradient
    (`_conv_kernel_grad`) at input dy and output cotangent x. Reverse mode only.
  """
  return _conv_transpose_s2_same(x, kernel, precision, chunk)


# A stride-2 convolution with fewer input channels, or a transposed one with fewer output
# channels, than this runs by oneDNN as a stride-1 convolution where the few-channel image is
# read: of the space-to-depth input (`conv_s2_matmul`), or sub-pixel (`scatter_s2`). oneDNN's
# strided primitives pad a few-channel image to 16 channels.
ONEDNN_SUBPIXEL_BELOW = 4


def _onednn_window(x, kernel, pads=((0, 0), (0, 0)), *, bias=None, relu=False):
  """Stride-1 convolution of x zero-padded (negative pads: cropped) by pads [+ bias] [then
  ReLU], by oneDNN."""
  crop = tuple((min(lo, 0), min(hi, 0)) for lo, hi in pads)
  if any(c != 0 for pair in crop for c in pair):
    x = _pad_hw(x, *crop)
  pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
  return onednn.conv_forward(x, kernel, (1, 1), pads, bias=bias, relu=relu)


def _relu_grad(y: jax.Array | None, dy: jax.Array) -> jax.Array:
  """dy through a ReLU whose output is y (None: no ReLU); 0 where y = 0, as `jax.nn.relu`."""
  return dy if y is None else jnp.where(y > 0, dy, 0)


def _strided_conv_onednn(x, kernel, strides, bias=None, relu=False):
  """The "SAME" convolution by oneDNN; at stride 2 with few input channels, the stride-1
  convolution of the space-to-depth input (`conv_s2_matmul`)."""
  if kernel.shape[2] < ONEDNN_SUBPIXEL_BELOW and strides == (2, 2):
    window = functools.partial(_onednn_window, bias=bias, relu=relu)
    return conv_s2_matmul(x, kernel, window=window)
  return onednn.conv_forward(x, kernel, strides, "SAME", bias=bias, relu=relu)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_s2_onednn(x, kernel, bias=None, relu=False, strides=(2, 2)) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, "SAME")` [+ bias] [then ReLU], NHWC/HWIO
  float32, by oneDNN.

  Forward, input gradient and kernel (and bias) gradient are oneDNN's convolution primitives
  (`kernels.onednn`), with bias and ReLU inside the forward primitive and the bias gradient
  summed by the backward-weights primitive. The forward pass of a kernel with
  C < `ONEDNN_SUBPIXEL_BELOW` input channels at stride 2 is oneDNN's stride-1 convolution of the
  space-to-depth input (`conv_s2_matmul`). Reverse mode only (`jax.custom_vjp`).
  """
  return _strided_conv_onednn(x, kernel, strides, bias, relu)


def _conv_s2_onednn_fwd(x, kernel, bias, relu, strides):
  y = _strided_conv_onednn(x, kernel, strides, bias, relu)
  return y, (x, kernel, y if relu else None, bias)


def _conv_s2_onednn_bwd(relu, strides, res, dy):
  x, kernel, y, bias = res
  dz = _relu_grad(y, dy)
  dx = onednn.conv_backward_data(dz, kernel, x.shape, strides, "SAME")
  grads = onednn.conv_backward_weights(x, dz, kernel.shape, strides, "SAME", bias=bias is not None)
  dk, db = grads if bias is not None else (grads, None)
  return dx, dk, db


conv_s2_onednn.defvjp(_conv_s2_onednn_fwd, _conv_s2_onednn_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_transpose_s2_onednn(x, kernel, bias=None, relu=False, strides=(2, 2)) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, "SAME")` (kernel not flipped) [+ bias] [then ReLU],
  by oneDNN.

  The transposed convolution with kernel W is A_K^T for A_K the "SAME" convolution of
  [B, s H, s W, O] images with K = flip_swap(W): oneDNN's deconvolution with the space-flipped
  W (`kernels.onednn.conv_transpose_forward` and its two gradients), bias and ReLU inside the
  forward primitive. With O < `ONEDNN_SUBPIXEL_BELOW` at stride 2, the forward pass is the
  sub-pixel convolution `scatter_s2` and the input gradient A_K dy the space-to-depth one
  (`conv_s2_matmul`), both oneDNN's stride-1 convolution (its strided primitives pad a
  few-channel image to 16 channels).
  """
  return _conv_transpose_s2_onednn_fwd(x, kernel, bias, relu, strides)[0]


def _transposed_shape(x, kernel, strides):
  n, h, w, _ = x.shape
  return (n, strides[0] * h, strides[1] * w, kernel.shape[-1])


def _conv_transpose_s2_onednn_fwd(x, kernel, bias, relu, strides):
  y_shape, flipped = _transposed_shape(x, kernel, strides), jnp.flip(kernel, (0, 1))
  if kernel.shape[-1] < ONEDNN_SUBPIXEL_BELOW and strides == (2, 2):
    lows = tuple(same_padding(n, k)[1] for n, k in zip(y_shape[1:3], kernel.shape[:2], strict=True))
    # The sub-pixel output's channels are (row parity, column parity, O).
    bias4 = None if bias is None else jnp.tile(bias, 4)
    window = functools.partial(_onednn_window, bias=bias4, relu=relu)
    y = scatter_s2(x, flipped, lows, y_shape[1:3], window=window)
  else:
    y = onednn.conv_transpose_forward(x, flipped, y_shape, strides, "SAME", bias=bias, relu=relu)
  return y, (x, flipped, y if relu else None, bias)


def _conv_transpose_s2_onednn_bwd(relu, strides, res, dy):
  x, flipped, y, bias = res
  dz = _relu_grad(y, dy)
  if flipped.shape[-1] < ONEDNN_SUBPIXEL_BELOW and strides == (2, 2):
    dx = _strided_conv_onednn(dz, flipped.transpose(0, 1, 3, 2), strides)
  else:
    dx = onednn.conv_transpose_backward_data(dz, flipped, x.shape, strides, "SAME")
  grads = onednn.conv_transpose_backward_weights(
    x, dz, flipped.shape, strides, "SAME", bias=bias is not None
  )
  dk, db = grads if bias is not None else (grads, None)
  return dx, jnp.flip(dk, (0, 1)), db


conv_transpose_s2_onednn.defvjp(_conv_transpose_s2_onednn_fwd, _conv_transpose_s2_onednn_bwd)


LOWERINGS = ("auto", "flax", "subpixel", "onednn")
# What "auto" runs on the CPU backend: "onednn" (oneDNN's convolutions, where they build and load
# and the layer is float32; else the sub-pixel products) or "subpixel".
CPU_DEFAULT = "onednn"


def resolve_lowering(lowering: str, dtype=jnp.float32) -> str:
  """The kernels that layers with `lowering` and this dtype run: "flax", "subpixel" or "onednn".

  "auto" is "flax" off the CPU backend; on it, `CPU_DEFAULT`, with "onednn" falling back to
  "subpixel" for other dtypes than float32 or where `kernels.onednn.available()` is False.

  Raises:
    ValueError: for a value not in `LOWERINGS`, or "onednn" for a dtype other than float32 or
      where the oneDNN kernels cannot run (the message says why).
  """
  if lowering not in LOWERINGS:
    raise ValueError(f"lowering must be one of {LOWERINGS}; got {lowering!r}.")
  float32 = jnp.dtype(dtype) == jnp.float32
  if lowering == "auto":
    if jax.default_backend() != "cpu":
      return "flax"
    if CPU_DEFAULT == "onednn" and not (float32 and onednn.available()):
      return "subpixel"
    return CPU_DEFAULT
  if lowering == "onednn":
    if not float32:
      raise ValueError(f"lowering='onednn' runs float32 layers only; got {jnp.dtype(dtype)}.")
    if jax.default_backend() != "cpu":
      raise ValueError("lowering='onednn' runs on the CPU backend only.")
    onednn.load()
  return lowering


def _pair(value) -> tuple[int, ...]:
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  return tuple(value)


def _fast_lowering(module: nn.Module, inputs: jax.Array, eligible: bool) -> str:
  """The layer's kernels: "flax", "subpixel" or "onednn"; the latter two on an ineligible
  layer are an error."""
  eligible = (
    eligible
    and inputs.ndim == 4
    and not isinstance(module.kernel_size, int)
    and len(module.kernel_size) == 2
    and _pair(module.strides) == (2, 2)
    and isinstance(module.padding, str)
    and module.padding.upper() == "SAME"
    and _pair(module.kernel_dilation) == (1, 1)
    and module.mask is None
  )
  if module.lowering in ("subpixel", "onednn") and not eligible:
    raise ValueError(
      f"{type(module).__name__} lowering={module.lowering!r} needs [B, H, W, C] inputs, a 2-D "
      "kernel, strides 2, 'SAME' padding and no dilation, mask or feature groups."
    )
  kernels = resolve_lowering(
    module.lowering, module.dtype or jnp.result_type(inputs, module.param_dtype)
  )
  return kernels if eligible else "flax"


def _kernel_and_bias(module: nn.Module, inputs: jax.Array):
  """(inputs, kernel, bias or None) as `nn.Conv` and `nn.ConvTranspose` create and promote them."""
  kernel_shape = (*module.kernel_size, inputs.shape[-1], module.features)
  kernel = module.param("kernel", module.kernel_init, kernel_shape, module.param_dtype)
  bias = None
  if module.use_bias:
    bias = module.param("bias", module.bias_init, (module.features,), module.param_dtype)
  return module.promote_dtype(inputs, kernel, bias, dtype=module.dtype)


def _maybe_relu(y: jax.Array, apply: bool) -> jax.Array:
  # `relu` rather than `nn.relu`: the chunked path's checkpoint keeps outputs by its name.
  return relu(y) if apply else y


class Conv(nn.Conv):
  """`nn.Conv` whose stride-2 "SAME" case runs oneDNN or `conv_s2_same` (same params, outputs).

  Attributes:
    lowering: "auto" (on CPU, where XLA's strided convolutions are slow: oneDNN's convolutions
      `conv_s2_onednn` for float32 where they are available, else the sub-pixel products
      `conv_s2_same`; `nn.Conv` elsewhere), "onednn", "subpixel" or "flax" (plain `nn.Conv`).
      Every other configuration is plain `nn.Conv`.
    apply_relu: return ReLU of the output (`relu`); oneDNN applies it, and the bias, inside its
      convolution, which saves a pass over the output.
  """

  lowering: str = "auto"
  apply_relu: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    eligible = (
      self.feature_group_count == 1
      and _pair(self.input_dilation) == (1, 1)
      and self.conv_general_dilated is None
      and self.conv_general_dilated_cls is None
    )
    kernels = _fast_lowering(self, inputs, eligible)
    if kernels == "flax":
      return _maybe_relu(super().__call__(inputs), self.apply_relu)
    inputs, kernel, bias = _kernel_and_bias(self, inputs)
    if kernels == "onednn":
      return conv_s2_onednn(inputs, kernel, bias, self.apply_relu)
    y = conv_s2_same(inputs, kernel, precision=self.precision)
    return _maybe_relu(y if bias is None else y + bias, self.apply_relu)


class ConvTranspose(nn.ConvTranspose):
  """`nn.ConvTranspose` whose stride-2 "SAME" case runs oneDNN or `conv_transpose_s2_same`.

  Same params and outputs as `nn.ConvTranspose` (kernel [kh, kw, C_in, C_out], not flipped).

  Attributes:
    lowering: "auto" (on CPU: oneDNN's `conv_transpose_s2_onednn` for float32 where it is
      available, else the sub-pixel convolution `conv_transpose_s2_same`; `nn.ConvTranspose`
      elsewhere), "onednn", "subpixel" or "flax" (plain `nn.ConvTranspose`). Every other
      configuration is plain `nn.ConvTranspose`.
    apply_relu: return ReLU of the output (`relu`); oneDNN applies it, and the bias, inside its
      deconvolution.
  """

  lowering: str = "auto"
  apply_relu: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    eligible = not self.transpose_kernel and self.preferred_element_type is None
    kernels = _fast_lowering(self, inputs, eligible)
    if kernels == "flax":
      return _maybe_relu(super().__call__(inputs), self.apply_relu)
    inputs, kernel, bias = _kernel_and_bias(self, inputs)
    if kernels == "onednn":
      return conv_transpose_s2_onednn(inputs, kernel, bias, self.apply_relu)
    y = conv_transpose_s2_same(inputs, kernel, precision=self.precision)
    return _maybe_relu(y if bias is None else y + bias, self.apply_relu)
