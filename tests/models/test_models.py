"""Tests for the encoders, decoders, FactorVAE discriminator and the model registry."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disentangle_jax import models

K = 10  # latent size of the field's dSprites set-ups (Locatello et al.)


def _images(channels: int, batch: int = 2, seed: int = 0) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), (batch, 64, 64, channels), jnp.float32)


def _codes(dim: int, batch: int = 2, seed: int = 1) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, dim), jnp.float32)


def _init_apply(module, x, seed: int = 0):
  params = module.init(jax.random.key(seed), x)
  return params, module.apply(params, x)


def _output_spec(module, x):
  """Shapes and dtypes of the params and outputs, traced without computing (fast)."""
  return jax.eval_shape(lambda x: _init_apply(module, x), x)


def _intermediate_shapes(module, x, prefix: str, count: int) -> list[tuple[int, ...]]:
  """Output shapes of the submodules `{prefix}_0` .. `{prefix}_{count-1}`, traced only."""

  def run(x):
    params = module.init(jax.random.key(0), x)
    return module.apply(params, x, capture_intermediates=True, mutable=["intermediates"])[1]

  state = jax.eval_shape(run, x)["intermediates"]
  return [state[f"{prefix}_{i}"]["__call__"][0].shape for i in range(count)]


# Small versions of every network (and its input) for the jit / vmap / gradient checks.
NETWORKS = {
  "mlp_encoder": lambda: (
    models.MLPEncoder(K, hidden=(32, 32), categorical_sizes=(3,)),
    _images(1),
  ),
  "conv_encoder": lambda: (models.ConvEncoder(K, categorical_sizes=(3,)), _images(3)),
  "conv_k4_encoder": lambda: (models.make_encoder("conv_k4", latent_dim=K), _images(1)),
  "mlp_decoder": lambda: (models.MLPDecoder((64, 64, 1), hidden=(32, 32, 32)), _codes(K + 3)),
  "conv_decoder": lambda: (models.ConvDecoder((64, 64, 3)), _codes(K)),
  "discriminator": lambda: (models.FactorVAEDiscriminator(hidden=32), _codes(K)),
}


# ---------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", ["mlp", "conv", "conv_k4"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("categorical_sizes", [(), (3,), (3, 4)])
def test_encoder_output_shapes_and_dtypes(name, channels, categorical_sizes):
  """mean/log_var are float32 [B, K]; one float32 [B, K_i] logits array per categorical."""
  encoder = models.make_encoder(name, latent_dim=K, categorical_sizes=categorical_sizes)
  _, out = _output_spec(encoder, _images(channels, batch=3))
  assert isinstance(out, models.EncoderOutput)
  chex.assert_shape([out.mean, out.log_var], (3, K))
  assert len(out.logits) == len(categorical_sizes)
  for logits, size in zip(out.logits, categorical_sizes, strict=True):
    chex.assert_shape(logits, (3, size))
  chex.assert_type([out.mean, out.log_var, *out.logits], jnp.float32)


def test_conv_encoder_feature_maps_halve_to_4x4():
  """The four stride-2 convolutions give 32 -> 16 -> 8 -> 4, flattened to 4*4*64 = 1024."""
  encoder = models.ConvEncoder(K)
  sizes = _intermediate_shapes(encoder, _images(1), "Conv", 4)
  assert sizes == [(2, 32, 32, 32), (2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 64)]
  params, _ = _output_spec(encoder, _images(1))
  chex.assert_shape(params["params"]["Dense_0"]["kernel"], (4 * 4 * 64, 256))


_CONV_ENCODER_COUNT = (
  (4 * 4 * 32 * 32 + 32)
  + (2 * 2 * 32 * 64 + 64)
  + (2 * 2 * 64 * 64 + 64)
  + (4 * 4 * 64 * 256 + 256)
)


@pytest.mark.parametrize(
  "name, channels, categorical_sizes, expected",
  [
    (
      "mlp",
      1,
      (),
      (64 * 64 * 1 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 2 * K + 2 * K),
    ),
    (
      "mlp",
      3,
      (3,),
      (64 * 64 * 3 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 2 * K + 2 * K) + (1200 * 3 + 3),
    ),
    ("conv", 1, (), (4 * 4 * 1 * 32 + 32) + _CONV_ENCODER_COUNT + (256 * 2 * K + 2 * K)),
    (
      "conv",
      3,
      (3, 4),
      (4 * 4 * 3 * 32 + 32)
      + _CONV_ENCODER_COUNT
      + (256 * 2 * K + 2 * K)
      + (256 * 3 + 3)
      + (256 * 4 + 4),
    ),
    (
      "conv_k4",
      1,
      (),
      (4 * 4 * 1 * 32 + 32)
      + (4 * 4 * 32 * 32 + 32)
      + (4 * 4 * 32 * 64 + 64)
      + (4 * 4 * 64 * 64 + 64)
      + (4 * 4 * 64 * 256 + 256)
      + (256 * 2 * K + 2 * K),
    ),
  ],
)
def test_encoder_parameter_count(name, channels, categorical_sizes, expected):
  """The parameter count equals the hand count: sum over layers of fan_in * fan_out + bias."""
  encoder = models.make_encoder(name, latent_dim=K, categorical_sizes=categorical_sizes)
  params = jax.eval_shape(encoder.init, jax.random.key(0), _images(channels, batch=1))
  assert models.count_params(params) == expected


def test_encoder_rejects_non_image_input():
  """A [B, D] input to an encoder raises ValueError naming the shape."""
  with pytest.raises(ValueError, match=r"\(2, 4096\)"):
    models.MLPEncoder(K).init(jax.random.key(0), jnp.zeros((2, 4096)))


# ---------------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("name", ["mlp", "conv"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("code_dim", [K, K + 3])
def test_decoder_output_shape_and_dtype(name, channels, code_dim):
  """A [B, D] code becomes float32 logits [B, 64, 64, C], for K and K + sum K_i inputs."""
  decoder = models.make_decoder(name, output_shape=(64, 64, channels))
  _, out = _output_spec(decoder, _codes(code_dim, batch=3))
  chex.assert_shape(out, (3, 64, 64, channels))
  chex.assert_type(out, jnp.float32)


def test_conv_decoder_feature_maps_double_to_64x64():
  """The four stride-2 transposed convolutions give 8 -> 16 -> 32 -> 64 from the 4x4x64 map."""
  sizes = _intermediate_shapes(models.ConvDecoder((64, 64, 1)), _codes(K), "ConvTranspose", 4)
  assert sizes == [(2, 8, 8, 64), (2, 16, 16, 32), (2, 32, 32, 32), (2, 64, 64, 1)]


_CONV_DECODER_COUNT = (
  (K * 256 + 256)
  + (256 * 1024 + 1024)
  + (4 * 4 * 64 * 64 + 64)
  + (4 * 4 * 64 * 32 + 32)
  + (4 * 4 * 32 * 32 + 32)
)


@pytest.mark.parametrize(
  "name, channels, expected",
  [
    ("mlp", 1, (K * 1200 + 1200) + 2 * (1200 * 1200 + 1200) + (1200 * 64 * 64 + 64 * 64)),
    ("conv", 1, _CONV_DECODER_COUNT + (4 * 4 * 32 * 1 + 1)),
    ("conv", 3, _CONV_DECODER_COUNT + (4 * 4 * 32 * 3 + 3)),
  ],
)
def test_decoder_parameter_count(name, channels, expected):
  """The parameter count equals the hand count for a K = 10 code."""
  decoder = models.make_decoder(name, output_shape=(64, 64, channels))
  params = jax.eval_shape(decoder.init, jax.random.key(0), _codes(K, batch=1))
  assert models.count_params(params) == expected


def test_conv_decoder_rejects_other_sizes():
  """ConvDecoder only produces 64x64 images: another output_shape raises ValueError."""
  with pytest.raises(ValueError, match="64, 64"):
    models.ConvDecoder((32, 32, 1)).init(jax.random.key(0), _codes(K))


# ---------------------------------------------------------------------------------- discriminator


def test_discriminator_output_shape_and_parameter_count():
  """[B, K] samples give float32 [B, 2] logits; 6 hidden layers of 1000 units, hand-counted."""
  disc = models.FactorVAEDiscriminator()
  params, out = _init_apply(disc, _codes(K, batch=3))
  chex.assert_shape(out, (3, 2))
  chex.assert_type(out, jnp.float32)
  expected = (K * 1000 + 1000) + 5 * (1000 * 1000 + 1000) + (1000 * 2 + 2)
  assert models.count_params(params) == expected


def test_discriminator_leaky_relu_slope():
  """With identity weights and zero biases, a negative input is scaled by 0.2 per layer."""
  disc = models.FactorVAEDiscriminator(hidden=2, num_layers=3)
  z = jnp.array([[-1.0, 2.0]])
  params = disc.init(jax.random.key(0), z)
  params = jax.tree.map(
    lambda p: jnp.eye(2, dtype=p.dtype) if p.ndim == 2 else jnp.zeros_like(p), params
  )
  np.testing.assert_allclose(disc.apply(params, z), [[-(0.2**3), 2.0]], rtol=1e-6)


# ---------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("use_jit", [True, False], ids=["jit", "eager"])
def test_jit_matches_eager(network, use_jit):
  """The same params give the same outputs with and without jax.jit (up to float32 rounding)."""
  module, x = NETWORKS[network]()
  params = module.init(jax.random.key(0), x)
  expected = jax.jit(module.apply)(params, x)
  apply = jax.jit(module.apply) if use_jit else module.apply
  chex.assert_trees_all_close(apply(params, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_vmap_over_seeds(network):
  """vmap over a stack of independently initialised params equals applying each separately."""
  module, x = NETWORKS[network]()
  per_seed = [module.init(key, x) for key in jax.random.split(jax.random.key(0), 3)]
  stacked = jax.tree.map(lambda *p: jnp.stack(p), *per_seed)
  batched = jax.jit(jax.vmap(module.apply, in_axes=(0, None)))(stacked, x)
  for i, params in enumerate(per_seed):
    chex.assert_trees_all_close(
      jax.tree.map(lambda y, i=i: y[i], batched), module.apply(params, x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("network", ["conv_encoder", "conv_decoder"])
@pytest.mark.parametrize(
  "conv_impl, op", [("flax", "dot_general"), ("linen", "conv_general_dilated")]
)
def test_vmapped_conv_net_is_one_batched_program(network, conv_impl, op):
  """The conv nets vmap into batched operations, not a loop over the models: the jaxpr of the
  vmapped apply holds no loop and no custom call; the default layers' products (dot_general)
  or linen's convolutions carry the model axis."""
  module, x = NETWORKS[network]()
  convs = models.registry.conv_layers(conv_impl)
  module = module.clone(
    **({"conv": convs[0]} if "encoder" in network else {"conv_transpose": convs[1]})
  )
  stacked = jax.vmap(module.init, in_axes=(0, None))(jax.random.split(jax.random.key(0), 3), x)
  jaxpr = jax.make_jaxpr(jax.vmap(module.apply, in_axes=(0, None)))(stacked, x)
  primitives = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
  assert op in primitives
  assert not primitives & {"while", "scan", "ffi_call", "custom_vjp_call", "pure_callback"}


def test_vmapped_init_matches_per_seed_init():
  """init under vmap over keys gives the same params as initialising seed by seed."""
  for network in ("mlp_encoder", "conv_encoder", "discriminator"):
    module, x = NETWORKS[network]()
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *(module.init(key, x) for key in keys))
    chex.assert_trees_all_equal(jax.vmap(module.init, in_axes=(0, None))(keys, x), stacked)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_gradients_finite(network):
  """Gradients of a scalar of the outputs w.r.t. every parameter and the input are finite."""
  module, x = NETWORKS[network]()
  params = module.init(jax.random.key(0), x)

  def scalar(params, x):
    return sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(module.apply(params, x)))

  grads = jax.jit(jax.grad(scalar, argnums=(0, 1)))(params, x)
  chex.assert_tree_all_finite(grads)
  chex.assert_trees_all_equal_shapes(grads, (params, x))
  assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads[0])) > 0.0


def _conv_vae_log_likelihood(code_dim: int = 4):
  """(f, z): f(z) = Bernoulli log-likelihood of one fixed image under the conv decoder at code
  z [code_dim], through the conv encoder's output on that image (so both nets are on the path).
  """
  encoder, decoder = models.ConvEncoder(code_dim), models.ConvDecoder((64, 64, 1))
  x = (_images(1, batch=1) > 0.5).astype(jnp.float32)
  enc_params = encoder.init(jax.random.key(0), x)
  dec_params = decoder.init(jax.random.key(1), jnp.zeros((1, code_dim)))

  def f(z):
    posterior = encoder.apply(enc_params, x)
    logits = decoder.apply(dec_params, (posterior.mean + z)[None, 0])
    return jnp.sum(x * logits - jax.nn.softplus(logits))

  return f, 0.1 * jnp.arange(code_dim, dtype=jnp.float32)


def test_conv_nets_support_forward_mode():
  """jax.jvp through both default conv nets equals the directional finite difference.

  Central differences in float64-accumulated form have error O(h^2 f''') + O(eps |f| / h); with
  |f| ~ 3e3 and h = 1e-2, eps |f| / h ~ 3e-2, so the tolerance is 5% of the directional
  derivative plus 0.1 nats (measured agreement is much closer).
  """
  f, z = _conv_vae_log_likelihood()
  direction = jnp.array([1.0, -0.5, 0.25, 2.0])
  value, tangent = jax.jvp(f, (z,), (direction,))
  h = 1e-2
  finite_difference = (f(z + h * direction) - f(z - h * direction)) / (2 * h)
  assert float(value) == pytest.approx(float(f(z)), rel=1e-6)
  assert float(tangent) == pytest.approx(float(finite_difference), rel=5e-2, abs=0.1)
  np.testing.assert_allclose(tangent, jnp.dot(jax.grad(f)(z), direction), rtol=1e-4, atol=1e-3)


def test_conv_nets_support_hessians():
  """jax.hessian (forward over reverse) through both conv nets: symmetric, finite, and each
  column equals the JVP of the gradient along that axis (reverse over forward)."""
  f, z = _conv_vae_log_likelihood()
  hessian = jax.jit(jax.hessian(f))(z)
  chex.assert_shape(hessian, (4, 4))
  chex.assert_tree_all_finite(hessian)
  scale = float(jnp.max(jnp.abs(hessian)))
  assert scale > 0
  np.testing.assert_allclose(hessian, hessian.T, atol=1e-4 * scale)
  for i in range(4):
    column = jax.jvp(jax.grad(f), (z,), (jnp.eye(4)[i],))[1]
    np.testing.assert_allclose(hessian[:, i], column, rtol=1e-4, atol=1e-4 * scale)


# ---------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
  "make, kwargs, valid",
  [
    (models.make_encoder, {"latent_dim": K}, "mlp, conv, conv_k4"),
    (models.make_decoder, {"output_shape": (64, 64, 1)}, "mlp, conv"),
  ],
  ids=["encoder", "decoder"],
)
def test_unknown_name_lists_valid_names(make, kwargs, valid):
  """An unknown name raises ValueError listing every valid name."""
  with pytest.raises(ValueError, match=f"'resnet'.*{valid}"):
    make("resnet", **kwargs)


def test_names_pick_modules():
  """Names map to the documented modules; conv_k4 uses k4 for all four convolutions; the
  default conv layers are models.layers', "linen" picks flax.linen's."""
  assert isinstance(models.make_encoder("mlp", latent_dim=K), models.MLPEncoder)
  decoder = models.make_decoder("conv", output_shape=(64, 64, 1))
  assert isinstance(decoder, models.ConvDecoder)
  assert decoder.conv_transpose is models.layers.ConvTranspose
  encoder = models.make_encoder("conv", latent_dim=K)
  assert encoder.kernel_sizes == (4, 4, 2, 2) and encoder.conv is models.layers.Conv
  linen = models.make_encoder("conv", latent_dim=K, conv_impl="linen")
  assert linen.conv is nn.Conv
  assert (
    models.make_decoder("conv", output_shape=(64, 64, 1), conv_impl="linen").conv_transpose
    is nn.ConvTranspose
  )
  assert models.make_encoder("conv_k4", latent_dim=K).kernel_sizes == (4, 4, 4, 4)


def test_unknown_conv_impl_is_an_error():
  with pytest.raises(ValueError, match="Unknown conv_impl 'cudnn'; valid: flax, linen, onednn"):
    models.make_encoder("conv", latent_dim=K, conv_impl="cudnn")


def test_config_lists_become_tuples():
  """List-valued arguments (as read from a config) are stored as tuples."""
  encoder = models.make_encoder("mlp", latent_dim=K, categorical_sizes=[3], hidden=[8, 8])
  assert (encoder.categorical_sizes, encoder.hidden) == ((3,), (8, 8))


def test_count_params():
  """count_params sums the sizes of all leaves of a nested pytree."""
  tree = {"a": np.zeros((3, 4)), "b": [jnp.zeros(5), {"c": jnp.zeros(())}]}
  assert models.count_params(tree) == 12 + 5 + 1
