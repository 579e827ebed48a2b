"""`nn.Conv` and `nn.ConvTranspose` run by oneDNN's convolutions: same parameters, same outputs.

XLA:CPU runs strided and transposed convolutions with few channels as slow generic loops (the
input gradient of a strided convolution is a transposed one), so the conv nets of the field
train several times slower on a CPU than on the same FLOPs in matrix products. These layers
replace the convolution, its input gradient and its kernel gradient with oneDNN's primitives
(`onednn.py`), tied together by `jax.custom_vjp`. They are a drop-in for the Flax layers
(`ConvEncoder(conv=cpu_conv.Conv)`), chosen by `config.model.conv_impl = "onednn"`.

Limits: float32, the CPU backend, reverse-mode differentiation only (no `jax.jvp` or
`jax.hessian`), and under `vmap` the models run one after another (`vmap_method="sequential"`).
The default Flax layers have none of these limits.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from disentangle_jax.cpu_conv import onednn


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv(x, kernel, bias, strides, padding):
  """`lax.conv_general_dilated(x, kernel, strides, padding)` + bias, NHWC/HWIO float32, by oneDNN.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O].
    bias: [O] or None.
    strides: (sh, sw).
    padding: "SAME", "VALID" or ((low, high), (low, high)).

  Returns:
    [B, OH, OW, O]. Forward, input gradient and kernel (and bias) gradient are oneDNN's
    convolution primitives.
  """
  return onednn.conv_forward(x, kernel, strides, padding, bias=bias)


def _conv_fwd(x, kernel, bias, strides, padding):
  return conv(x, kernel, bias, strides, padding), (x, kernel, bias)


def _conv_bwd(strides, padding, residuals, dy):
  x, kernel, bias = residuals
  dx = onednn.conv_backward_data(dy, kernel, x.shape, strides, padding)
  grads = onednn.conv_backward_weights(x, dy, kernel.shape, strides, padding, bias=bias is not None)
  dk, db = grads if bias is not None else (grads, None)
  return dx, dk, db


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_transpose(x, kernel, bias, strides):
  """`lax.conv_transpose(x, kernel, strides, "SAME")` + bias (kernel not flipped), by oneDNN.

  The transposed convolution with kernel W is the adjoint of the "SAME" convolution of
  [B, s H, s W, O] images with W flipped in space and in/out swapped: oneDNN's deconvolution
  with the space-flipped W, whose gradients are its backward-data and backward-weights
  primitives.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O].
    bias: [O] or None.
    strides: (sh, sw).

  Returns:
    [B, sh H, sw W, O], as `nn.ConvTranspose(O, (kh, kw), strides, padding="SAME")`.
  """
  return _conv_transpose_fwd(x, kernel, bias, strides)[0]


def _conv_transpose_fwd(x, kernel, bias, strides):
  n, h, w, _ = x.shape
  y_shape = (n, strides[0] * h, strides[1] * w, kernel.shape[-1])
  flipped = jnp.flip(kernel, (0, 1))
  y = onednn.conv_transpose_forward(x, flipped, y_shape, strides, "SAME", bias=bias)
  return y, (x, flipped, bias)


def _conv_transpose_bwd(strides, residuals, dy):
  x, flipped, bias = residuals
  dx = onednn.conv_transpose_backward_data(dy, flipped, x.shape, strides, "SAME")
  grads = onednn.conv_transpose_backward_weights(
    x, dy, flipped.shape, strides, "SAME", bias=bias is not None
  )
  dk, db = grads if bias is not None else (grads, None)
  return dx, jnp.flip(dk, (0, 1)), db


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def _pair(value) -> tuple[int, int]:
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  return tuple(value)


def _check(module: nn.Module, inputs: jax.Array, supported: bool, what: str) -> None:
  """Raises ValueError unless the layer is one the oneDNN kernels run (float32, 2-D, plain)."""
  dtype = jnp.result_type(inputs, module.param_dtype) if module.dtype is None else module.dtype
  problems = []
  if inputs.ndim != 4 or isinstance(module.kernel_size, int) or len(module.kernel_size) != 2:
    problems.append(
      f"inputs [B, H, W, C] and a 2-D kernel (got {inputs.shape}, kernel_size {module.kernel_size})"
    )
  if jnp.dtype(dtype) != jnp.float32:
    problems.append(f"float32 (got {jnp.dtype(dtype)})")
  if _pair(module.kernel_dilation) != (1, 1) or module.mask is not None or not supported:
    problems.append(what)
  if jax.default_backend() != "cpu":
    problems.append(f"the CPU backend (got {jax.default_backend()}; use conv_impl='flax')")
  if problems:
    raise ValueError(f"cpu_conv.{type(module).__name__} needs " + "; ".join(problems) + ".")


def _params(module: nn.Module, inputs: jax.Array):
  """(inputs, kernel, bias or None) exactly as `nn.Conv` / `nn.ConvTranspose` create them."""
  kernel_shape = (*module.kernel_size, inputs.shape[-1], module.features)
  kernel = module.param("kernel", module.kernel_init, kernel_shape, module.param_dtype)
  bias = None
  if module.use_bias:
    bias = module.param("bias", module.bias_init, (module.features,), module.param_dtype)
  return module.promote_dtype(inputs, kernel, bias, dtype=module.dtype)


class Conv(nn.Conv):
  """`nn.Conv` (same attributes, parameters and outputs) computed by oneDNN's convolutions.

  Supports any strides and "SAME", "VALID" or explicit padding; no dilation, feature groups or
  mask (a clear ValueError otherwise).
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    plain = (
      self.feature_group_count == 1
      and _pair(self.input_dilation) == (1, 1)
      and (
        isinstance(self.padding, str)
        and self.padding.upper() in ("SAME", "VALID")
        or not isinstance(self.padding, str | int)
      )
    )
    _check(
      self,
      inputs,
      plain,
      "no dilation, feature groups or mask, and SAME, VALID or explicit padding",
    )
    inputs, kernel, bias = _params(self, inputs)
    padding = (
      self.padding.upper()
      if isinstance(self.padding, str)
      else tuple(tuple(p) for p in self.padding)
    )
    return conv(inputs, kernel, bias, _pair(self.strides), padding)


class ConvTranspose(nn.ConvTranspose):
  """`nn.ConvTranspose` (same attributes, parameters and outputs) computed by oneDNN.

  Supports "SAME" padding with any strides, kernel not transposed (Flax's default); no dilation
  or mask (a clear ValueError otherwise).
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    plain = (
      isinstance(self.padding, str)
      and self.padding.upper() == "SAME"
      and not self.transpose_kernel
      and self.preferred_element_type is None
    )
    _check(self, inputs, plain, "padding 'SAME', transpose_kernel=False and no dilation or mask")
    inputs, kernel, bias = _params(self, inputs)
    return conv_transpose(inputs, kernel, bias, _pair(self.strides))
