"""The sub-pixel and oneDNN lowerings of the stride-2 convolutions equal the plain Flax layers.

Tolerances come from the accumulation length. A float32 sum of n products computed in any order
differs from the exact one by at most gamma_n * sum |x_i w_i|, gamma_n = n eps / (1 - n eps)
(Higham, Accuracy and Stability of Numerical Algorithms, 2002, eq. 3.5), so two summation orders
differ by at most 2 gamma_n * sum |x_i w_i|. For a layer the bound is computed per output entry:
sum |x_i w_i| is the plain layer applied to |x| and |w| (and its gradients to |x|, |w| and the
absolute cotangent), n the longest sum: kh * kw * C_in (+1 for the bias) for the output,
kh * kw * C_out for the input gradient and B * H_out * W_out for the kernel gradient. Whole
networks chain several layers; there the bound is taken relative to the output's scale with n the
sum of the layers' fan-ins, a first-order bound that ignores the (benign) ReLUs.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disentangle_jax import models
from disentangle_jax.models import conv_lowering
from disentangle_jax.training import config as config_lib
from disentangle_jax.training import model as model_lib
from disentangle_jax.training.losses import make_loss_fn

EPS = float(jnp.finfo(jnp.float32).eps)


def _gamma(n: int) -> float:
  return n * EPS / (1 - n * EPS)


def _normal(seed: int, shape) -> jax.Array:
  # NumPy draws: eager jax.random compiles a kernel per shape, which would dominate test time.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _assert_within(actual, expected, bound, what: str):
  actual, expected, bound = (np.asarray(a, np.float64) for a in (actual, expected, bound))
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  excess = np.abs(actual - expected) - bound
  assert np.all(excess <= 0), f"{what}: max |diff| - bound = {excess.max():.3g}"


def _layers(transpose: bool, features: int, k: int, lowering: str = "subpixel"):
  plain = nn.ConvTranspose if transpose else nn.Conv
  fast = conv_lowering.ConvTranspose if transpose else conv_lowering.Conv
  kwargs = {"features": features, "kernel_size": (k, k), "strides": (2, 2), "padding": "SAME"}
  return plain(**kwargs), fast(lowering=lowering, **kwargs)


def _random_params(module, x, seed):
  """Random kernel (scaled by 1/sqrt(fan-in)) and a random nonzero bias, of the layer's shapes."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
  kernel = _normal(seed, shapes["kernel"].shape)
  kernel = kernel / np.sqrt(np.prod(kernel.shape[:-1]))
  return {"params": {"kernel": kernel, "bias": _normal(seed + 1, shapes["bias"].shape)}}


# (batch, height, width, C_in, C_out, kernel): odd and even sizes, batch 1, one channel, k2/k4 and
# the odd kernel sizes the lowering also supports.
CASES = [
  (1, 7, 5, 3, 5, 4),
  (2, 8, 8, 1, 32, 4),
  (3, 6, 9, 2, 3, 2),
  (1, 5, 4, 4, 1, 2),
  (2, 1, 1, 2, 3, 4),
  (2, 5, 6, 3, 2, 3),
]


@jax.jit(static_argnums=(0, 1))
def _layer_results(plain, fast, params, x, projection):
  """Outputs, gradients of <y, projection> and the |.|-problem's bounds, in one compiled call."""

  def grads(module, params, x, projection):
    return jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * projection), argnums=(0, 1))(
      params, x
    )

  abs_params, abs_x = jax.tree.map(jnp.abs, params), jnp.abs(x)
  return {
    "y": (fast.apply(params, x), plain.apply(params, x), plain.apply(abs_params, abs_x)),
    "grads": (
      grads(fast, params, x, projection),
      grads(plain, params, x, projection),
      grads(plain, abs_params, abs_x, jnp.abs(projection)),
    ),
  }


@pytest.mark.parametrize("lowering", ["subpixel", "onednn"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}_h{}_w{}_c{}_o{}_k{}".format(*c))
def test_layer_output_and_gradients_match_flax(transpose, case, lowering):
  """Output, input gradient and kernel/bias gradients equal the plain layer's, within the bound."""
  b, h, w, c_in, c_out, k = case
  plain, fast = _layers(transpose, c_out, k, lowering)
  x = _normal(0, (b, h, w, c_in))
  params = _random_params(plain, x, seed=1)
  fast_params = jax.eval_shape(fast.init, jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fast_params) == jax.tree.map(jnp.shape, params)
  out_shape = jax.eval_shape(plain.apply, params, x).shape
  r = _layer_results(plain, fast, params, x, _normal(2, out_shape))

  y_fast, y_plain, y_bound = r["y"]  # y_bound = sum |x_i w_i| + |b| per output entry
  _assert_within(y_fast, y_plain, 2 * _gamma(k * k * c_in + 1) * y_bound, "output")
  _assert_layer_grads(*r["grads"], k * k * c_out, out_shape)


def _assert_layer_grads(fast, plain, bound, dx_terms, out_shape):
  """(d/dparams, d/dx) of the fast layer against the plain one: d/dx sums dx_terms products
  (kernel taps x output channels), d/dkernel and d/dbias one per batch element and output pixel."""
  (dp_fast, dx_fast), (dp_plain, dx_plain), (dp_bound, dx_bound) = fast, plain, bound
  _assert_within(dx_fast, dx_plain, 2 * _gamma(dx_terms) * dx_bound, "d/dx")
  n_out = out_shape[0] * out_shape[1] * out_shape[2]
  for name in ("kernel", "bias"):
    _assert_within(
      dp_fast["params"][name],
      dp_plain["params"][name],
      2 * _gamma(n_out) * dp_bound["params"][name],
      f"d/d{name}",
    )


@pytest.mark.parametrize("lowering", ["subpixel", "onednn"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize(
  "case", [CASES[0], CASES[1], CASES[3]], ids=lambda c: "b{}_h{}_w{}_c{}_o{}_k{}".format(*c)
)
def test_apply_relu_is_relu_of_the_layer(transpose, case, lowering):
  """With apply_relu (fused into oneDNN's primitive), the layer is ReLU of the plain layer: the
  output within the bound (ReLU is 1-Lipschitz), and the gradients those of the plain layer for
  the cotangent masked where the output is 0 (the mask read off the fast layer's own output, so
  that entries within rounding of 0 cannot make the comparison flaky)."""
  b, h, w, c_in, c_out, k = case
  plain, fast = _layers(transpose, c_out, k, lowering)
  fast = fast.clone(apply_relu=True)
  x = _normal(0, (b, h, w, c_in))
  params = _random_params(plain, x, seed=1)
  y = fast.apply(params, x)
  projection = _normal(2, y.shape)
  r = _layer_results(plain, fast, params, x, projection)
  masked = _layer_results(plain, fast, params, x, projection * (y > 0))
  y_fast, y_plain, y_bound = r["y"]
  assert float(jnp.min(y_plain)) < 0  # the ReLU clips something
  _assert_within(y_fast, jax.nn.relu(y_plain), 2 * _gamma(k * k * c_in + 1) * y_bound, "output")
  _assert_layer_grads(r["grads"][0], *masked["grads"][1:], k * k * c_out, y.shape)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_chunked_equals_whole_batch(transpose):
  """Evaluating the batch in lax.map chunks gives the same output and gradients."""
  fn = conv_lowering.conv_transpose_s2_same if transpose else conv_lowering.conv_s2_same
  x, kernel = _normal(0, (6, 8, 6, 3)), _normal(1, (4, 4, 3, 5))
  projection = _normal(2, jax.eval_shape(fn, x, kernel).shape)

  @jax.jit
  def all_chunks(x, kernel):
    def loss(x, kernel, chunk):
      return jnp.sum(fn(x, kernel, chunk=chunk) * projection)

    return [jax.value_and_grad(loss, argnums=(0, 1))(x, kernel, c) for c in (None, 1, 2, 3)]

  whole, *chunked = all_chunks(x, kernel)
  for result in chunked:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), result, whole)
  with pytest.raises(ValueError, match="divisor"):
    jax.eval_shape(lambda x, k: fn(x, k, chunk=4), x, kernel)


def test_space_to_depth_round_trip_and_layout():
  """depth_to_space inverts space_to_depth; block (h, w) channel (i, j, c) is x[2h+i, 2w+j, c]."""
  x = _normal(0, (2, 6, 4, 3))
  s = conv_lowering.space_to_depth(x)
  assert s.shape == (2, 3, 2, 12)
  np.testing.assert_array_equal(conv_lowering.depth_to_space(s), x)
  np.testing.assert_array_equal(s[1, 2, 1].reshape(2, 2, 3), x[1, 4:6, 2:4])


def test_scatter_s2_is_the_adjoint_of_the_strided_convolution():
  """<A x, y> = <x, A^T y> for A the k4 s2 SAME convolution and A^T = scatter_s2 (odd size)."""
  x, y, kernel = _normal(0, (2, 7, 9, 3)), _normal(1, (2, 4, 5, 2)), _normal(2, (4, 4, 3, 2))
  dn = ("NHWC", "HWIO", "NHWC")
  ax = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dn)
  aty = conv_lowering.scatter_s2(y, kernel.transpose(0, 1, 3, 2), (1, 1), (7, 9))
  np.testing.assert_allclose(jnp.vdot(ax, y), jnp.vdot(x, aty), rtol=1e-5)


def test_chunked_network_records_intermediates_unchunked():
  """capture_intermediates sees every layer's full-batch output even where chunking would run."""
  encoder = models.ConvEncoder(10, lowering="subpixel", batch_chunk=2)
  x = jnp.zeros((4, 64, 64, 1))
  params = _random_tree(jax.eval_shape(encoder.init, jax.random.key(0), x), seed=0)
  _, state = jax.eval_shape(
    lambda p: encoder.apply(p, x, capture_intermediates=True, mutable=["intermediates"]), params
  )
  shapes = [state["intermediates"][f"Conv_{i}"]["__call__"][0].shape for i in range(4)]
  assert shapes == [(4, 32, 32, 32), (4, 16, 16, 32), (4, 8, 8, 64), (4, 4, 4, 64)]


def test_unsupported_configurations():
  """'subpixel' refuses what it cannot lower; 'auto' falls back to the plain layer."""
  x = _normal(0, (1, 8, 8, 2))
  strided1 = dict(features=3, kernel_size=(3, 3), strides=(1, 1), padding="SAME")
  with pytest.raises(ValueError, match="strides 2"):
    conv_lowering.Conv(lowering="subpixel", **strided1).init(jax.random.key(0), x)
  params = nn.Conv(**strided1).init(jax.random.key(0), x)
  np.testing.assert_array_equal(
    conv_lowering.Conv(**strided1).apply(params, x), nn.Conv(**strided1).apply(params, x)
  )
  with pytest.raises(ValueError, match="lowering must be one of"):
    conv_lowering.Conv(lowering="fast", **strided1).init(jax.random.key(0), x)


def _network_tolerance(reference, fan_ins) -> float:
  return 2 * _gamma(sum(fan_ins)) * float(jnp.max(jnp.abs(reference)))


def _random_tree(shapes, seed: int):
  """Random params of the given shapes: kernels N(0, 1/fan-in), biases N(0, 0.1^2)."""
  leaves, treedef = jax.tree.flatten(shapes)
  values = []
  for i, leaf in enumerate(leaves):
    value = _normal(seed + i, leaf.shape)
    fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 100
    values.append(value / np.sqrt(fan_in))
  return jax.tree.unflatten(treedef, values)


def test_init_matches_plain_flax():
  """Same param trees as the plain Flax networks; each layer initialises to the same values.

  Flax derives a param's random key from its path, so equal paths (checked on the whole
  networks, shapes only) and equal values layer by layer (checked on one Conv and one
  ConvTranspose) give equal network initialisations.
  """
  x, code = jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 13))
  for net, a in [
    (models.make_encoder("conv", latent_dim=10, categorical_sizes=(3,)), x),
    (models.make_encoder("conv_k4", latent_dim=10), x),
    (models.ConvDecoder((64, 64, 3)), code),
  ]:
    assert net.lowering == "auto"
    shapes = jax.eval_shape(net.init, jax.random.key(0), a)
    plain_shapes = jax.eval_shape(net.clone(lowering="flax").init, jax.random.key(0), a)
    assert jax.tree.structure(shapes) == jax.tree.structure(plain_shapes)
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, plain_shapes)

  x = jnp.zeros((1, 8, 8, 5))
  layers = [_layers(transpose, 7, 4) for transpose in (False, True)]
  inits = jax.jit(lambda key: [(fast.init(key, x), plain.init(key, x)) for plain, fast in layers])(
    jax.random.key(3)
  )
  for params, plain_params in inits:
    jax.tree.map(np.testing.assert_array_equal, params, plain_params)


ENCODER_FAN_INS = {  # per layer: kernel taps x input channels (+1 bias), for C = 3 images
  "conv": (16 * 3, 16 * 32, 4 * 32, 4 * 64, 1024, 256),
  "conv_k4": (16 * 3, 16 * 32, 16 * 32, 16 * 64, 1024, 256),
}


@pytest.mark.parametrize(
  "name, lowering, batch_chunk",
  [
    ("conv", "subpixel", None),
    ("conv", "subpixel", 2),
    ("conv_k4", "subpixel", None),
    ("decoder", "subpixel", None),
    ("decoder", "subpixel", 2),
    ("conv", "onednn", None),
    ("conv_k4", "onednn", None),
    ("decoder", "onednn", None),
  ],
)
def test_network_matches_plain_flax(name, lowering, batch_chunk):
  """ConvEncoder / ConvDecoder with the sub-pixel lowering (whole or in chunks) or oneDNN's
  convolutions give the plain Flax outputs."""
  if name == "decoder":
    net, x = models.ConvDecoder((64, 64, 2)), _normal(0, (4, 13))
    fan_ins = (13, 256, 4 * 64, 4 * 64, 4 * 32, 4 * 32)  # 2x2 taps per output and channel
  else:
    net = models.make_encoder(name, latent_dim=10, categorical_sizes=(3,))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 64, 64, 3)), jnp.float32)
    fan_ins = ENCODER_FAN_INS[name]
  net = net.clone(lowering=lowering, batch_chunk=batch_chunk)
  params = _random_tree(jax.eval_shape(net.init, jax.random.key(0), x), seed=1)
  plain = net.clone(lowering="flax")
  out, ref = jax.jit(lambda p, x: (net.apply(p, x), plain.apply(p, x)))(params, x)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=_network_tolerance(b, fan_ins))


def test_relu_matches_jax_nn_relu():
  """conv_lowering.relu has jax.nn.relu's values and derivative (0 at 0), jitted or not."""
  x = jnp.array([-2.0, -1e-30, 0.0, 1e-30, 3.0])
  for fn in (conv_lowering.relu, jax.jit(conv_lowering.relu)):
    np.testing.assert_array_equal(fn(x), jax.nn.relu(x))
    np.testing.assert_array_equal(jax.grad(lambda v, f=fn: f(v).sum())(x), [0, 0, 0, 1, 1])
    dx = jnp.array([5.0, 4.0, 3.0, 2.0, 1.0])
    _, tangent = jax.jvp(fn, (x,), (dx,))
    np.testing.assert_array_equal(tangent, jax.jvp(jax.nn.relu, (x,), (dx,))[1])


def _products_in_gradient(net, x) -> int:
  """Number of matrix products (dot_general) in the jaxpr of the gradient of sum(net(x))."""
  params = jax.eval_shape(net.init, jax.random.key(0), x)
  grad = jax.grad(lambda p: jax.tree.leaves(net.apply(p, x))[0].sum())
  return str(jax.make_jaxpr(grad)(params)).count("dot_general[")


@pytest.mark.parametrize("name", ["encoder", "decoder"])
def test_chunked_backward_recomputes_only_large_activations(name, monkeypatch):
  """In chunks of 2, the backward pass recomputes the forward product of exactly the layers
  whose ReLU output per chunk is larger than SAVED_ACTIVATION_BYTES; with all of them kept it
  has as many products as the unchunked network's backward pass, which recomputes nothing."""
  if name == "encoder":
    net, x = models.ConvEncoder(10, lowering="subpixel"), jnp.ones((4, 64, 64, 1))
    chunk_bytes = [2 * s * s * c * 4 for s, c in ((32, 32), (16, 32), (8, 64), (4, 64))]
  else:
    net, x = models.ConvDecoder((64, 64, 1), lowering="subpixel"), jnp.ones((4, 13))
    chunk_bytes = [2 * s * s * c * 4 for s, c in ((8, 64), (16, 32), (32, 32))]  # last: no ReLU
  unchunked = _products_in_gradient(net.clone(batch_chunk=0), x)
  for limit in (1 << 30, 100_000, 40_000, 0):
    monkeypatch.setattr(conv_lowering, "SAVED_ACTIVATION_BYTES", limit)
    recomputed = sum(b > limit for b in chunk_bytes)
    assert _products_in_gradient(net.clone(batch_chunk=2), x) == unchunked + recomputed, limit


@pytest.mark.parametrize("saved_bytes", [conv_lowering.SAVED_ACTIVATION_BYTES, 100_000, 0])
def test_jitted_beta_vae_loss_and_gradients_match_plain_flax(saved_bytes, monkeypatch):
  """The beta-VAE loss and its gradients are the same with every lowering of the conv VAE,
  whichever activations the sub-pixel lowering's chunked path keeps (all, some, none at
  batch_chunk=2)."""
  monkeypatch.setattr(conv_lowering, "SAVED_ACTIVATION_BYTES", saved_bytes)
  config = config_lib.apply_presets(config_lib.base_config(), "model=conv")
  networks = model_lib.build_networks(config, (64, 64, 1))
  shapes = jax.eval_shape(
    lambda key: model_lib.init_params(config, networks, key, (64, 64, 1))[0], jax.random.key(0)
  )
  params = _random_tree(shapes, seed=0)
  images = np.random.default_rng(1).uniform(size=(4, 64, 64, 1)) > 0.7
  batch = {"image": jnp.asarray(images, jnp.float32)}

  def loss_fn(lowering):
    chunk = {"batch_chunk": 2} if lowering == "subpixel" else {}  # also check the chunked path
    nets = dataclasses.replace(
      networks,
      encoder=networks.encoder.clone(lowering=lowering, **chunk),
      decoder=networks.decoder.clone(lowering=lowering, **chunk),
    )
    loss_fn = make_loss_fn(config, nets, 737_280)
    return jax.value_and_grad(lambda p: loss_fn(p, {}, batch, jax.random.key(2), 0)[0])

  lowerings = ("subpixel", "onednn")
  results, (loss_ref, grads_ref) = jax.jit(
    lambda p: ([loss_fn(name)(p) for name in lowerings], loss_fn("flax")(p))
  )(params)
  for lowering, (loss, grads) in zip(lowerings, results, strict=True):
    # The loss sums 4096 Bernoulli terms per image after ~10 layers: relative 2 gamma_n, n ~ 5000.
    np.testing.assert_allclose(loss, loss_ref, rtol=2 * _gamma(5000), err_msg=lowering)
    for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
      scale = float(jnp.max(jnp.abs(g_ref)))
      atol = 2 * _gamma(5000) * scale + 1e-30
      np.testing.assert_allclose(g, g_ref, rtol=0, atol=atol, err_msg=lowering)
