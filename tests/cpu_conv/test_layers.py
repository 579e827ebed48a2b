"""cpu_conv.Conv / ConvTranspose are nn.Conv / nn.ConvTranspose computed by oneDNN: same
parameters, and outputs and gradients within float32 summation-order bounds.

Tolerances: a float32 sum of n products in any order is within gamma_n * sum |x_i w_i| of the
exact sum, gamma_n = n eps / (1 - n eps) (Higham, Accuracy and Stability of Numerical
Algorithms, 2002, eq. 3.5), so two orders differ by at most 2 gamma_n sum |x_i w_i|. Per layer
the bound is taken per entry: sum |x_i w_i| is the Flax layer applied to |x|, |w| (and its
gradients to the absolute cotangent), n the longest sum (kh kw C_in + 1 for the output,
kh kw C_out for the input gradient, B H_out W_out for the kernel gradient). Whole networks chain
several layers; there the bound is relative to the output's scale with n the sum of the layers'
fan-ins, a first-order bound that ignores the (benign) ReLUs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disentangle_jax import cpu_conv, models
from tests.cpu_conv.conftest import needs_onednn

pytestmark = needs_onednn
EPS = float(jnp.finfo(jnp.float32).eps)


def _gamma(n: int) -> float:
  return n * EPS / (1 - n * EPS)


def _normal(seed: int, shape) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _assert_within(actual, expected, bound, what: str):
  actual, expected, bound = (np.asarray(a, np.float64) for a in (actual, expected, bound))
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  excess = np.abs(actual - expected) - bound
  assert np.all(excess <= 0), f"{what}: max |diff| - bound = {excess.max():.3g}"


def _layers(transpose: bool, features: int, k: int, strides: int = 2, padding="SAME"):
  kwargs = {"features": features, "kernel_size": (k, k), "strides": strides, "padding": padding}
  if transpose:
    return nn.ConvTranspose(**kwargs), cpu_conv.ConvTranspose(**kwargs)
  return nn.Conv(**kwargs), cpu_conv.Conv(**kwargs)


# (batch, height, width, C_in, C_out, kernel, strides, padding): the nets' k4/k2 stride-2 "SAME"
# layers with odd and even sizes, one channel in or out, plus stride 1 and "VALID" convolutions.
CASES = [
  (1, 7, 5, 3, 5, 4, 2, "SAME"),
  (2, 8, 8, 1, 32, 4, 2, "SAME"),
  (3, 6, 9, 2, 3, 2, 2, "SAME"),
  (1, 5, 4, 4, 1, 2, 2, "SAME"),
  (2, 5, 6, 3, 2, 3, 2, "SAME"),
  (2, 6, 7, 3, 4, 3, 1, "SAME"),
  (2, 9, 9, 3, 2, 4, 2, "VALID"),
]


# cpu_conv.ConvTranspose supports "SAME" padding only.
LAYER_CASES = [(False, c) for c in CASES] + [(True, c) for c in CASES if c[-1] == "SAME"]


@pytest.mark.parametrize(
  "transpose, case",
  LAYER_CASES,
  ids=lambda v: v if isinstance(v, bool) else "b{}_h{}_w{}_c{}_o{}_k{}_s{}_{}".format(*v),
)
def test_layer_output_and_gradients_match_flax(transpose, case):
  """Output, input gradient and kernel/bias gradients equal the Flax layer's, within the bound;
  the parameters have the same tree, shapes and initial values."""
  b, h, w, c_in, c_out, k, s, padding = case
  plain, fast = _layers(transpose, c_out, k, s, padding)
  x = _normal(0, (b, h, w, c_in))
  params = plain.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, fast.init(jax.random.key(1), x), params)
  params = jax.tree.map(lambda p: p + _normal(7, p.shape), params)  # a nonzero bias too
  abs_params, abs_x = jax.tree.map(jnp.abs, params), jnp.abs(x)
  out_shape = jax.eval_shape(plain.apply, params, x).shape
  projection = _normal(2, out_shape)

  def grads(module, params, x, projection):
    return jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * projection), argnums=(0, 1))(
      params, x
    )

  y_fast, y_plain, y_abs = (
    fast.apply(params, x),
    plain.apply(params, x),
    plain.apply(abs_params, abs_x),
  )
  _assert_within(y_fast, y_plain, 2 * _gamma(k * k * c_in + 1) * y_abs, "output")
  (dp_fast, dx_fast) = jax.jit(grads, static_argnums=0)(fast, params, x, projection)
  (dp_plain, dx_plain) = grads(plain, params, x, projection)
  (dp_abs, dx_abs) = grads(plain, abs_params, abs_x, jnp.abs(projection))
  _assert_within(dx_fast, dx_plain, 2 * _gamma(k * k * c_out) * dx_abs, "d/dx")
  # Kernel and bias gradients sum one product per (example, pixel) of the larger of the two
  # images (the output of a convolution, the input of a transposed one).
  n = max(out_shape[0] * out_shape[1] * out_shape[2], b * h * w)
  for name in ("kernel", "bias"):
    _assert_within(
      dp_fast["params"][name],
      dp_plain["params"][name],
      2 * _gamma(n) * dp_abs["params"][name],
      f"d/d{name}",
    )


def test_unsupported_configurations_are_errors():
  x = _normal(0, (1, 8, 8, 2))
  with pytest.raises(ValueError, match="cpu_conv.Conv needs no dilation, feature groups"):
    cpu_conv.Conv(4, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="cpu_conv.ConvTranspose needs padding 'SAME'"):
    cpu_conv.ConvTranspose(4, (3, 3), padding="VALID").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"needs float32 \(got bfloat16\)"):
    cpu_conv.Conv(4, (3, 3), dtype=jnp.bfloat16).init(jax.random.key(0), x)


def _random_tree(shapes, seed: int):
  """Random params of the given shapes: kernels N(0, 1/fan-in), biases N(0, 0.1^2)."""
  leaves, treedef = jax.tree.flatten(shapes)
  values = []
  for i, leaf in enumerate(leaves):
    fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 100
    values.append(_normal(seed + i, leaf.shape) / np.sqrt(fan_in))
  return jax.tree.unflatten(treedef, values)


ENCODER_FAN_INS = {  # per layer: kernel taps x input channels (+1 bias), for C = 3 images
  "conv": (16 * 3, 16 * 32, 4 * 32, 4 * 64, 1024, 256),
  "conv_k4": (16 * 3, 16 * 32, 16 * 32, 16 * 64, 1024, 256),
}


@pytest.mark.parametrize("name", ["conv", "conv_k4", "decoder"])
def test_network_and_its_gradients_match_flax(name):
  """The encoders and the decoder built with conv_impl="onednn" have the default networks'
  parameters and give their outputs and parameter gradients."""
  if name == "decoder":
    make = lambda impl: models.make_decoder("conv", output_shape=(64, 64, 2), conv_impl=impl)  # noqa: E731
    x = _normal(0, (4, 13))
    fan_ins = (13, 256, 16 * 64, 16 * 64, 16 * 32, 16 * 32)
  else:
    make = lambda impl: models.make_encoder(
      name, latent_dim=10, categorical_sizes=(3,), conv_impl=impl
    )  # noqa: E731
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 64, 64, 3)), jnp.float32)
    fan_ins = ENCODER_FAN_INS[name]
  net, plain = make("onednn"), make("flax")
  shapes = jax.eval_shape(net.init, jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(
    jnp.shape, jax.eval_shape(plain.init, jax.random.key(0), x)
  )
  params = _random_tree(shapes, seed=1)

  def value_and_grad(module):
    return jax.value_and_grad(
      lambda p: sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(module.apply(p, x)))
    )

  (out, grads), (ref, grads_ref) = jax.jit(
    lambda p: (value_and_grad(net)(p), value_and_grad(plain)(p))
  )(params)
  # The scalar sums B * outputs sin() terms after the layers: n = sum of fan-ins + those terms.
  # A parameter gradient chains the backward pass (the fan-ins again) and, for the first
  # layers, a kernel-gradient sum over B x 32 x 32 pixels; first-order bound relative to each
  # leaf's largest entry.
  terms = sum(np.size(y) for y in jax.tree.leaves(jax.eval_shape(plain.apply, params, x)))
  np.testing.assert_allclose(out, ref, rtol=2 * _gamma(sum(fan_ins) + terms))
  n_grad = 2 * sum(fan_ins) + 4 * 32 * 32
  for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
    scale = float(jnp.max(jnp.abs(g_ref)))
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=2 * _gamma(n_grad) * scale + 1e-30)
