"""oneDNN's convolutions as XLA:CPU custom calls (`jax.ffi`): the engine of `cpu_conv`.

`onednn_conv.cc` wraps oneDNN's forward, backward-data and backward-weights primitives, of the
convolution and of the deconvolution (transposed convolution), in one XLA FFI handler that works
directly on XLA's NHWC activations and HWIO kernels. The forward calls take an optional bias and
the backward-weights calls return the bias gradient on request.

The handler is compiled on first use with the system C++ compiler (a few seconds), against the
headers of the `onednn-devel-cpu-gomp` wheel and jaxlib's FFI headers, into a per-user cache keyed
by the source, oneDNN and jaxlib versions; later processes load the cached library. Nothing here
runs unless a model asks for `config.model.conv_impl = "onednn"`. Where anything is missing (no
compiler, no wheel, not Linux x86-64) `load()` raises `Unavailable` saying what.
`DISENTANGLE_JAX_ONEDNN=0` switches the kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TARGET = "disentangle_jax_onednn_conv"
SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
RUNTIME_DIST = "onednn-cpu-gomp"
HEADERS_DIST = "onednn-devel-cpu-gomp"


class Unavailable(RuntimeError):
  """The oneDNN kernels cannot be built or loaded here; the message says why."""


def _dist_file(dist: str, suffix: str) -> pathlib.Path:
  """The installed file of `dist` whose path ends with `suffix`."""
  try:
    distribution = importlib.metadata.distribution(dist)
  except importlib.metadata.PackageNotFoundError as e:
    raise Unavailable(f"the {dist} wheel is not installed (pip install {dist})") from e
  for f in distribution.files or ():
    if str(f).endswith(suffix):
      return pathlib.Path(distribution.locate_file(f)).resolve()
  raise Unavailable(f"the {dist} wheel has no file ending in {suffix}")


def cache_dir() -> pathlib.Path:
  """Where built kernels live: $DISENTANGLE_JAX_CACHE or $XDG_CACHE_HOME/disentangle_jax."""
  root = os.environ.get("DISENTANGLE_JAX_CACHE")
  if root is None:
    root = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    root = root / "disentangle_jax"
  return pathlib.Path(root) / "kernels"


FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-w")


def _library_name(runtime: pathlib.Path, flags) -> str:
  """The built library's file name: a hash of the source, the flags and what it links to."""
  key = hashlib.sha256()
  for part in (
    SOURCE.read_bytes(),
    str(runtime).encode(),
    jax.__version__.encode(),
    importlib.metadata.version("jaxlib").encode(),
    " ".join(flags).encode(),
  ):
    key.update(part)
  return f"onednn_conv-{key.hexdigest()[:16]}.so"


def _build(runtime: pathlib.Path) -> pathlib.Path:
  """Compiles onednn_conv.cc (once per source and versions) and returns the library's path."""
  header = _dist_file(HEADERS_DIST, "include/oneapi/dnnl/dnnl.hpp")
  include = header.parents[2]
  ffi_include = pathlib.Path(jax.ffi.include_dir())
  target = cache_dir() / _library_name(runtime, FLAGS)
  if target.exists():
    return target
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    raise Unavailable("no C++ compiler (set CXX, or install g++)")
  target.parent.mkdir(parents=True, exist_ok=True)
  # Build beside the target and rename: concurrent processes never load a half-written file.
  fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
  os.close(fd)
  command = [
    compiler,
    *FLAGS,
    f"-I{include}",
    f"-I{ffi_include}",
    str(SOURCE),
    str(runtime),
    f"-Wl,-rpath,{runtime.parent}",
    "-o",
    partial,
  ]
  logging.info("Building the oneDNN convolution kernels: %s", " ".join(command))
  try:
    done = subprocess.run(command, capture_output=True, text=True)
  except OSError as e:
    os.unlink(partial)
    raise Unavailable(f"compiling {SOURCE.name} failed: cannot run {compiler}: {e}") from e
  if done.returncode != 0:
    os.unlink(partial)
    raise Unavailable(f"compiling {SOURCE.name} failed:\n{done.stderr[-2000:]}")
  os.replace(partial, target)
  return target


def _load() -> None:
  """Builds (if needed), loads and registers the custom call; raises `Unavailable`."""
  if os.environ.get("DISENTANGLE_JAX_ONEDNN", "1") == "0":
    raise Unavailable("switched off by DISENTANGLE_JAX_ONEDNN=0")
  if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    raise Unavailable(f"built only for Linux x86-64, not {sys.platform} {platform.machine()}")
  runtime = _dist_file(RUNTIME_DIST, "libdnnl.so.3")
  library = _build(runtime)
  ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL)
  handler = ctypes.cdll.LoadLibrary(str(library)).DjOnednnConv
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")


@functools.cache
def _unavailable_reason() -> str | None:
  """None once the kernels are loaded, else why they cannot be (tried once per process)."""
  try:
    _load()
  except (Unavailable, OSError) as e:
    return str(e)
  return None


def available() -> bool:
  """Whether the oneDNN convolutions can run here (builds and loads them on the first call)."""
  return _unavailable_reason() is None


def load() -> None:
  """Builds and loads the kernels if needed; raises `Unavailable` saying why they cannot be."""
  reason = _unavailable_reason()
  if reason is not None:
    raise Unavailable(f"The oneDNN convolutions cannot run here: {reason}")


def _geometry(x_shape, kernel_shape, strides, padding):
  """The attributes of the custom call for x [N, H, W, C] and kernel [kh, kw, C, O]."""
  if len(x_shape) != 4 or len(kernel_shape) != 4 or kernel_shape[2] != x_shape[3]:
    raise ValueError(
      f"Expected x [N, H, W, C] and kernel [kh, kw, C, O]; got {tuple(x_shape)} and "
      f"{tuple(kernel_shape)}."
    )
  n, h, w, c = x_shape
  kh, kw, _, o = kernel_shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((h, w), (kh, kw), strides, padding)
  (plh, phh), (plw, phw) = padding
  oh = (h + plh + phh - kh) // strides[0] + 1
  ow = (w + plw + phw - kw) // strides[1] + 1
  values = dict(
    n=n,
    h=h,
    w=w,
    c=c,
    o=o,
    kh=kh,
    kw=kw,
    oh=oh,
    ow=ow,
    sh=strides[0],
    sw=strides[1],
    plh=plh,
    plw=plw,
    phh=phh,
    phw=phw,
  )
  return {k: np.int64(v) for k, v in values.items()}, (n, oh, ow, o)


def _transposed_geometry(x_shape, kernel_shape, y_shape, strides, padding):
  """Attributes of the transposed convolution x [N, P, Q, C] -> y [N, H, W, O] with kernel
  [kh, kw, C, O], whose adjoint is the convolution of y with `padding` (pads of y)."""
  if len(y_shape) != 4 or tuple(y_shape[::3]) != (x_shape[0], kernel_shape[3]):
    raise ValueError(f"Expected y [N, H, W, O]; got {tuple(y_shape)} for kernel {kernel_shape}.")
  swapped = (*kernel_shape[:2], kernel_shape[3], kernel_shape[2])
  geometry, adjoint_out = _geometry(y_shape, swapped, strides, padding)
  if adjoint_out != tuple(x_shape):
    raise ValueError(
      f"The convolution of y {tuple(y_shape)} with kernel {tuple(swapped)} gives "
      f"{adjoint_out}, not x's shape {tuple(x_shape)}."
    )
  # oneDNN's deconvolution names its own input (here x) src: swap the roles of x and y.
  renamed = dict(h="oh", w="ow", c="o", oh="h", ow="w", o="c")
  return {renamed.get(k, k): v for k, v in geometry.items()}


def _call(kind: int, args, out_shapes, geometry):
  load()
  # Batched parameters (vmap over models) run one convolution per batch element.
  call = jax.ffi.ffi_call(
    TARGET,
    [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in out_shapes],
    vmap_method="sequential",
  )
  return call(*args, kind=np.int64(kind), **geometry)


def _bias_args(bias, channels):
  if bias is None:
    return ()
  if bias.shape != (channels,):
    raise ValueError(f"Expected a bias of shape ({channels},); got {bias.shape}.")
  return (bias,)


def _weights_grads(kind, x, dy, kernel_shape, geometry, bias):
  """The backward-weights call: dK, or (dK, d bias) with bias=True."""
  shapes = [tuple(kernel_shape)] + ([(kernel_shape[3],)] if bias else [])
  grads = _call(kind, (x, dy), shapes, geometry)
  return tuple(grads) if bias else grads[0]


def conv_forward(x, kernel, strides, padding, bias=None):
  """y = conv(x, kernel) [+ bias], NHWC / HWIO, float32, as `lax.conv_general_dilated`."""
  geometry, y_shape = _geometry(x.shape, kernel.shape, strides, padding)
  return _call(0, (x, kernel, *_bias_args(bias, y_shape[3])), [y_shape], geometry)[0]


def conv_backward_data(dy, kernel, x_shape, strides, padding):
  """The adjoint of `conv_forward` in x: A_K^T dy, shaped like x."""
  geometry, _ = _geometry(x_shape, kernel.shape, strides, padding)
  return _call(1, (dy, kernel), [tuple(x_shape)], geometry)[0]


def conv_backward_weights(x, dy, kernel_shape, strides, padding, bias=False):
  """d<dy, conv(x, K)>/dK, shaped [kh, kw, C, O]; with bias=True also (its bias gradient
  sum(dy) over N, H, W, shaped [O])."""
  geometry, _ = _geometry(x.shape, kernel_shape, strides, padding)
  return _weights_grads(2, x, dy, kernel_shape, geometry, bias)


def conv_transpose_forward(x, kernel, y_shape, strides, padding, bias=None):
  """y[s i + t - pl] += x[i] kernel[t] [+ bias]: oneDNN's deconvolution.

  Args:
    x: [N, P, Q, C].
    kernel: [kh, kw, C, O].
    y_shape: (N, H, W, O); the convolution of y with the swapped kernel, `padding` and
      `strides` must give x's shape.
    strides, padding: of that convolution ("SAME", "VALID" or explicit pairs); pl is its low pad.
    bias: [O] or None.

  Returns:
    y [N, H, W, O]: `lax.conv_transpose(x, kernel flipped in space, strides, padding)`.
  """
  geometry = _transposed_geometry(x.shape, kernel.shape, y_shape, strides, padding)
  args = (x, kernel, *_bias_args(bias, kernel.shape[3]))
  return _call(3, args, [tuple(y_shape)], geometry)[0]


def conv_transpose_backward_data(dy, kernel, x_shape, strides, padding):
  """The adjoint of `conv_transpose_forward` in x (its kernel not flipped or swapped)."""
  y_shape = (x_shape[0], *dy.shape[1:3], kernel.shape[3])
  geometry = _transposed_geometry(x_shape, kernel.shape, y_shape, strides, padding)
  return _call(4, (dy, kernel), [tuple(x_shape)], geometry)[0]


def conv_transpose_backward_weights(x, dy, kernel_shape, strides, padding, bias=False):
  """d<dy, conv_transpose_forward(x, K)>/dK, shaped [kh, kw, C, O]; with bias=True also
  (sum(dy) over N, H, W)."""
  geometry = _transposed_geometry(x.shape, kernel_shape, dy.shape, strides, padding)
  return _weights_grads(5, x, dy, kernel_shape, geometry, bias)
