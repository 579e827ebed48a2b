"""oneDNN's convolutions (an XLA custom call) equal XLA's, and a failed build says why.

Tolerances: a float32 sum of n products in any order is within gamma_n * sum |x_i w_i| of the
exact sum, gamma_n = n eps / (1 - n eps) (Higham 2002, eq. 3.5), so two orders differ by at most
2 gamma_n sum |x_i w_i|; sum |x_i w_i| per entry is the reference computed on |x|, |w| (and the
absolute cotangent), and n the longest sum: kh kw C for the output, kh kw O for the input
gradient, N OH OW for the kernel gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from disentangle_jax import cpu_conv
from disentangle_jax.cpu_conv import onednn
from tests.cpu_conv.conftest import needs_onednn

EPS = float(jnp.finfo(jnp.float32).eps)


def _gamma(n: int) -> float:
  return n * EPS / (1 - n * EPS)


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _xla_conv(x, kernel, strides, padding):
  dn = ("NHWC", "HWIO", "NHWC")
  return lax.conv_general_dilated(
    x, kernel, strides, padding, dimension_numbers=dn, precision=lax.Precision.HIGHEST
  )


def _assert_within(actual, expected, bound, what):
  excess = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)) - bound
  assert actual.shape == expected.shape, what
  assert np.all(excess <= 0), f"{what}: max |diff| - bound = {excess.max():.3g}"


# (x shape, kernel shape, strides, padding): the nets' stride-2 "SAME" layers, odd sizes, one
# channel, stride 1, asymmetric explicit padding and "VALID".
GEOMETRIES = [
  ((2, 16, 16, 32), (4, 4, 32, 32), (2, 2), "SAME"),
  ((3, 9, 7, 1), (4, 4, 1, 8), (2, 2), "SAME"),
  ((2, 8, 8, 5), (2, 2, 5, 1), (2, 2), "SAME"),
  ((1, 7, 6, 3), (3, 3, 3, 4), (1, 1), "SAME"),
  ((2, 10, 9, 4), (3, 2, 4, 6), (1, 2), ((0, 1), (2, 0))),
  ((2, 9, 9, 3), (4, 4, 3, 2), (2, 2), "VALID"),
]


@needs_onednn
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}s{g[2]}{g[3]}")
def test_forward_and_both_gradients_match_xla(geometry):
  """conv_forward, conv_backward_data and conv_backward_weights are lax's convolution, its input
  gradient and its kernel gradient, to the summation-order bound."""
  x_shape, k_shape, strides, padding = geometry
  x, kernel = _normal(0, x_shape), _normal(1, k_shape)
  y_ref, vjp = jax.vjp(lambda x, k: _xla_conv(x, k, strides, padding), x, kernel)
  dy = _normal(2, y_ref.shape)
  dx_ref, dk_ref = vjp(dy)
  y_abs, vjp_abs = jax.vjp(lambda x, k: _xla_conv(x, k, strides, padding), abs(x), abs(kernel))
  dx_abs, dk_abs = vjp_abs(abs(dy))

  @jax.jit
  def ours(x, kernel, dy):
    return (
      onednn.conv_forward(x, kernel, strides, padding),
      onednn.conv_backward_data(dy, kernel, x.shape, strides, padding),
      onednn.conv_backward_weights(x, dy, kernel.shape, strides, padding),
    )

  y, dx, dk = ours(x, kernel, dy)
  kh, kw, c, o = k_shape
  _assert_within(y, y_ref, 2 * _gamma(kh * kw * c) * y_abs, "output")
  _assert_within(dx, dx_ref, 2 * _gamma(kh * kw * o) * dx_abs, "input gradient")
  _assert_within(dk, dk_ref, 2 * _gamma(int(np.prod(y_ref.shape[:3]))) * dk_abs, "kernel gradient")


def _xla_conv_transpose(x, kernel, strides, padding):
  """y[s i + t - pl] += x[i] kernel[t]: `lax.conv_transpose` with the kernel flipped in space.

  `padding` is that of the convolution of y (the adjoint pattern), as `conv_transpose_forward`
  takes it; lax.conv_transpose's explicit pads are then k - 1 - pl and k - 1 - ph.
  """
  y_size = [s * n for s, n in zip(strides, x.shape[1:3], strict=True)]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(y_size, kernel.shape[:2], strides, padding)
  pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel.shape[:2], padding, strict=True)]
  dn = ("NHWC", "HWIO", "NHWC")
  flipped = jnp.flip(kernel, (0, 1))
  return lax.conv_transpose(
    x, flipped, strides, pads, dimension_numbers=dn, precision=lax.Precision.HIGHEST
  )


# (x shape, kernel shape, strides, padding of the adjoint convolution): the decoder's layers,
# odd sizes, one output channel, stride 1 and asymmetric explicit padding.
TRANSPOSED_GEOMETRIES = [
  ((2, 8, 8, 32), (4, 4, 32, 16), (2, 2), "SAME"),
  ((3, 5, 4, 6), (4, 4, 6, 1), (2, 2), "SAME"),
  ((2, 3, 5, 4), (3, 3, 4, 5), (2, 2), "SAME"),
  ((2, 6, 7, 3), (3, 2, 3, 4), (1, 1), ((1, 1), (0, 1))),
]


@needs_onednn
@pytest.mark.parametrize(
  "geometry", TRANSPOSED_GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}s{g[2]}{g[3]}"
)
def test_transposed_forward_and_both_gradients_match_xla(geometry):
  """conv_transpose_forward (with bias) and its two gradients (bias gradient included) are
  lax's transposed convolution and its VJP, to the summation-order bound."""
  x_shape, k_shape, strides, padding = geometry
  x, kernel, bias = _normal(0, x_shape), _normal(1, k_shape), _normal(3, k_shape[3:])

  def reference(x, kernel, bias):
    return _xla_conv_transpose(x, kernel, strides, padding) + bias

  z_ref, vjp = jax.vjp(reference, x, kernel, bias)
  dy = _normal(2, z_ref.shape)
  dx_ref, dk_ref, db_ref = vjp(dy)
  z_abs, vjp_abs = jax.vjp(reference, abs(x), abs(kernel), abs(bias))
  dx_abs, dk_abs, db_abs = vjp_abs(abs(dy))
  y_shape = z_ref.shape

  @jax.jit
  def ours(x, kernel, bias, dy):
    return (
      onednn.conv_transpose_forward(x, kernel, y_shape, strides, padding, bias=bias),
      onednn.conv_transpose_backward_data(dy, kernel, x.shape, strides, padding),
      onednn.conv_transpose_backward_weights(x, dy, kernel.shape, strides, padding, bias=True),
    )

  y, dx, (dk, db) = ours(x, kernel, bias, dy)
  kh, kw, c, o = k_shape
  _assert_within(y, z_ref, 2 * _gamma(kh * kw * c + 1) * z_abs, "output")
  _assert_within(dx, dx_ref, 2 * _gamma(kh * kw * o) * dx_abs, "input gradient")
  n_out = int(np.prod(y_shape[:3]))
  _assert_within(dk, dk_ref, 2 * _gamma(n_out) * dk_abs, "kernel gradient")
  _assert_within(db, db_ref, 2 * _gamma(n_out) * db_abs, "bias gradient")


@needs_onednn
@pytest.mark.parametrize("geometry", GEOMETRIES[:2], ids=lambda g: f"{g[0]}x{g[1]}")
def test_bias_runs_inside_the_convolution(geometry):
  """conv_forward with a bias is conv + bias, and the backward-weights pass's bias gradient is
  sum(dy) over N, H, W."""
  x_shape, k_shape, strides, padding = geometry
  x, kernel, bias = _normal(0, x_shape), _normal(1, k_shape), _normal(3, k_shape[3:])
  z = _xla_conv(x, kernel, strides, padding) + bias
  z_abs = _xla_conv(abs(x), abs(kernel), strides, padding) + abs(bias)
  y = onednn.conv_forward(x, kernel, strides, padding, bias=bias)
  kh, kw, c, _ = k_shape
  _assert_within(y, z, 2 * _gamma(kh * kw * c + 1) * z_abs, "output")
  dy = _normal(2, z.shape)
  dk, db = onednn.conv_backward_weights(x, dy, kernel.shape, strides, padding, bias=True)
  _, vjp = jax.vjp(lambda k: _xla_conv(x, k, strides, padding), kernel)
  _, vjp_abs = jax.vjp(lambda k: _xla_conv(abs(x), k, strides, padding), abs(kernel))
  n_out = int(np.prod(z.shape[:3]))
  _assert_within(dk, vjp(dy)[0], 2 * _gamma(n_out) * vjp_abs(abs(dy))[0], "kernel gradient")
  db_ref = np.asarray(dy, np.float64).sum((0, 1, 2))
  _assert_within(db, db_ref, _gamma(n_out) * np.abs(np.asarray(dy)).sum((0, 1, 2)), "bias grad")
  o = k_shape[3]
  with pytest.raises(ValueError, match=rf"bias of shape \({o},\); got \({o - 1},\)"):
    onednn.conv_forward(x, kernel, strides, padding, bias=jnp.zeros(o - 1))
  with pytest.raises(ValueError, match="not x's shape"):
    wrong = (x_shape[0], x_shape[1] + 2, x_shape[2], c)
    onednn.conv_transpose_forward(z, kernel.transpose(0, 1, 3, 2), wrong, strides, padding)


@needs_onednn
def test_vmap_over_kernels_runs_each_model():
  """Under vmap (M models, as a sweep batches params) each slice is its own convolution."""
  x, kernels = _normal(0, (3, 2, 8, 8, 4)), _normal(1, (3, 4, 4, 4, 6))
  conv = lambda x, k, b=None: cpu_conv.conv(x, k, b, (2, 2), "SAME")  # noqa: E731
  batched = jax.jit(jax.vmap(conv))(x, kernels)
  for i in range(3):
    np.testing.assert_array_equal(batched[i], conv(x[i], kernels[i]))
  single = jax.grad(lambda k, x: cpu_conv.conv_transpose(x, k, None, (2, 2)).sum())
  grads = jax.vmap(single)(kernels, x)
  np.testing.assert_array_equal(grads[1], single(kernels[1], x[1]))
  # With a bias (the optional operand and the second result of the custom call).
  biases = _normal(2, (3, 6))
  with_bias = jax.grad(
    lambda k, b, x: cpu_conv.conv_transpose(x, k, b, (2, 2)).sum(), argnums=(0, 1)
  )
  dk, db = jax.jit(jax.vmap(with_bias))(kernels, biases, x)
  dk1, db1 = with_bias(kernels[1], biases[1], x[1])
  np.testing.assert_array_equal(dk[1], dk1)
  np.testing.assert_array_equal(db[1], db1)
  with pytest.raises(ValueError, match=r"kernel \[kh, kw, C, O\]; got \(2, 8, 8, 4\) and"):
    onednn.conv_forward(x[0], kernels[0].transpose(0, 1, 3, 2), (2, 2), "SAME")


def test_unavailable_kernels_say_why(monkeypatch):
  """Where the kernels cannot run, asking for them is an error that gives the reason."""
  monkeypatch.setattr(onednn, "_unavailable_reason", lambda: "no C++ compiler (set CXX, ...)")
  assert not onednn.available()
  with pytest.raises(onednn.Unavailable, match="cannot run here: no C\\+\\+ compiler"):
    onednn.load()


def test_switched_off_by_the_environment(monkeypatch):
  monkeypatch.setenv("DISENTANGLE_JAX_ONEDNN", "0")
  with pytest.raises(onednn.Unavailable, match="DISENTANGLE_JAX_ONEDNN=0"):
    onednn._load()


def test_a_missing_wheel_names_the_package(monkeypatch):
  monkeypatch.setattr(onednn, "RUNTIME_DIST", "no-such-onednn-wheel")
  with pytest.raises(onednn.Unavailable, match="pip install no-such-onednn-wheel"):
    onednn._dist_file(onednn.RUNTIME_DIST, "libdnnl.so.3")


@needs_onednn
def test_build_is_cached_and_a_failed_build_says_why(monkeypatch, tmp_path):
  """A built library is reused without compiling; a compiler error is reported, and leaves no
  partial file that a later process could load."""
  monkeypatch.setenv("DISENTANGLE_JAX_CACHE", str(tmp_path))
  runtime = onednn._dist_file(onednn.RUNTIME_DIST, "libdnnl.so.3")
  monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
  with pytest.raises(onednn.Unavailable, match="compiling onednn_conv.cc failed"):
    onednn._build(runtime)
  assert list(tmp_path.rglob("*.so")) == []
  built = tmp_path / "kernels" / "onednn_conv-cached.so"
  built.parent.mkdir(parents=True, exist_ok=True)
  monkeypatch.setattr(onednn, "_library_name", lambda runtime, flags: built.name)
  built.write_bytes(b"")
  assert onednn._build(runtime) == built  # found, so `false` is never run
