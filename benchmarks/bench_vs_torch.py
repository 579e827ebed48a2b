"""Speed against PyTorch: the matmul peak and the beta-VAE train step, JAX and PyTorch, one machine.

  python benchmarks/bench_vs_torch.py                  # mlp and conv at batch 64, 256, 2048
  python benchmarks/bench_vs_torch.py --archs conv --batch-sizes 64 --rounds 2
  python benchmarks/bench_vs_torch.py --skip-jax --modes eager compile --json /tmp/torch.json

Needs PyTorch: `pip install torch==2.13.0` (the project's `bench` extra). Everything is float32.

What is measured:
1. Matmul rate: `jnp.dot` (jitted) and `torch.mm` on the MLP's layer shapes and 4096^3, as
   GFLOP/s (2*M*K*N per product); a round's "peak" is the best of all of them in that round.
2. JAX: the project's jitted train step, built as benchmarks/bench_train.py builds it
   (experiments/configs/beta_vae.py with model=mlp|conv, beta set to 1; Bernoulli likelihood,
   standard normal prior, K = 10, Adam lr 1e-3 for mlp and 1e-4 for conv), on one fixed random
   binary batch of 64x64x1 images.
3. PyTorch: the same networks (shapes and parameter counts checked against the Flax ones), the
   same loss (BCE-with-logits summed over pixels + analytic KL summed over latents, mean over the
   batch, one reparameterised sample) and Adam, with torch.set_num_threads(--torch-threads,
   default the number of cores; XLA uses all cores), in the modes:
     eager          nn.Sequential modules, torch.optim.Adam with its defaults;
     fused          eager with Adam(fused=True) (foreach=True where fused fails);
     channels_last  fused + channels_last memory format for the model and batch (conv only);
     compile        fused + torch.compile(forward and loss) (mode default, static shapes).
   Before timing, the Flax initial parameters are copied into the PyTorch modules and the loss
   and gradient norm of both on one batch are compared, which checks that the two compute the
   same function; the PyTorch runs then start from those parameters.
4. A table: images/s of each, JAX / best PyTorch mode, and the fraction of the matmul peak
   reached, from an analytic FLOP count per image: forward 2 * MACs of the dense and
   convolution layers (nominal MACs, zero padding included), backward twice the forward less the
   first layer's input gradient, which is not needed (printed beside torch's FlopCounterMode
   count of the same). Element-wise work (activations, loss, Adam) is not counted.

Both worker processes run with the environment `experiments/main.py` gives training: on Linux
with glibc 2.35+, huge-page malloc (`training.host_memory`; DISENTANGLE_JAX_HUGE_PAGES=0 for
glibc's default), which the driver restarts itself with and the workers inherit.

How: this machine's speed drifts by 20% and more over minutes, so JAX and PyTorch are measured
in turn, not one after the other. Each framework runs in its own worker process (PyTorch's
thread pool, once used, slowed JAX in the same process by up to 30%), which compiles each step
once and keeps it. A round measures the matmul rates, then for every (arch, batch) JAX and every
PyTorch mode back to back (who goes first alternates between rounds), with a 0.5 s pause
between measurements. A measurement is 2 warm-up steps (the first includes any compilation),
then timed steps, each blocked on, until --max-seconds have been spent (at least 3, at most
--max-repeats); its figure is the median step. The table gives the median over --rounds rounds
of each rate, and of the within-round ratios JAX / best PyTorch mode and peak fractions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_train import load_config

from disentangle_jax import data, models
from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.models import conv_lowering
from disentangle_jax.training import host_memory
from disentangle_jax.training import model as model_lib
from disentangle_jax.training.losses import make_loss_fn
from disentangle_jax.training.train_step import (
  create_train_state,
  jit_train_step,
  make_train_step,
)

# PyTorch is imported only once every JAX measurement is done (`import_torch`).
torch = F = None


def import_torch() -> None:
  global torch, F
  import torch
  import torch.nn.functional as F


TORCH_MISSING = (
  "bench_vs_torch.py needs PyTorch for its PyTorch side: pip install torch==2.13.0 "
  "(the project's `bench` extra), or pass --skip-torch."
)
IMAGE_SHAPE = (64, 64, 1)
LATENT_DIM = 10
BETA = 1.0
MATMUL_SHAPES = ((2048, 4096, 1200), (2048, 1200, 1200), (4096, 4096, 4096))  # (M, K, N)
TORCH_MODES = ("eager", "fused", "channels_last", "compile")
WARMUP_STEPS, MIN_TIMED_STEPS = 2, 3
PAUSE_S = 0.5  # idle time between one worker's measurement and the next


# Timing.


def measure(step: Callable[[], Any], max_seconds: float, max_repeats: int) -> dict[str, Any]:
  """Times step() (which must block until its work is done) after WARMUP_STEPS warm-up calls.

  Timed calls go on until max_seconds of them have been spent, at least MIN_TIMED_STEPS and at
  most max_repeats of them. Returns the median, the number of timed calls and the first call's
  time (which includes any compilation done on the first call).
  """
  warmup = []
  for _ in range(WARMUP_STEPS):
    start = time.perf_counter()
    step()
    warmup.append(time.perf_counter() - start)
  times = []
  while len(times) < MIN_TIMED_STEPS or (sum(times) < max_seconds and len(times) < max_repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return {"median_s": statistics.median(times), "steps": len(times), "first_s": warmup[0]}


# Analytic FLOP counts.


def layer_macs(arch: str, k: int = LATENT_DIM) -> list[tuple[str, int]]:
  """Multiply-accumulates per image of each dense and convolution layer, in forward order.

  A convolution does out_pixels * k*k * c_in * c_out MACs; a stride-s transposed convolution
  out_pixels * (k/s)**2 * c_in * c_out = in_pixels * k*k * c_in * c_out.
  """

  def conv(size_out, kernel, c_in, c_out):
    return size_out * size_out * kernel * kernel * c_in * c_out

  def deconv(size_in, kernel, c_in, c_out):
    return size_in * size_in * kernel * kernel * c_in * c_out

  if arch == "mlp":
    return [
      ("enc dense 4096-1200", 4096 * 1200),
      ("enc dense 1200-1200", 1200 * 1200),
      (f"enc dense 1200-{2 * k}", 1200 * 2 * k),
      (f"dec dense {k}-1200", k * 1200),
      ("dec dense 1200-1200", 1200 * 1200),
      ("dec dense 1200-1200", 1200 * 1200),
      ("dec dense 1200-4096", 1200 * 4096),
    ]
  if arch == "conv":
    return [
      ("enc conv 1-32 k4 s2, 64->32", conv(32, 4, 1, 32)),
      ("enc conv 32-32 k4 s2, 32->16", conv(16, 4, 32, 32)),
      ("enc conv 32-64 k2 s2, 16->8", conv(8, 2, 32, 64)),
      ("enc conv 64-64 k2 s2, 8->4", conv(4, 2, 64, 64)),
      ("enc dense 1024-256", 1024 * 256),
      (f"enc dense 256-{2 * k}", 256 * 2 * k),
      (f"dec dense {k}-256", k * 256),
      ("dec dense 256-1024", 256 * 1024),
      ("dec deconv 64-64 k4 s2, 4->8", deconv(4, 4, 64, 64)),
      ("dec deconv 64-32 k4 s2, 8->16", deconv(8, 4, 64, 32)),
      ("dec deconv 32-32 k4 s2, 16->32", deconv(16, 4, 32, 32)),
      ("dec deconv 32-1 k4 s2, 32->64", deconv(32, 4, 32, 1)),
    ]
  raise ValueError(f"Unknown arch {arch!r}; valid: mlp, conv.")


def train_flops_per_image(arch: str) -> float:
  """Forward 2*MACs; backward 2x the forward (input and weight gradients) less the first layer's
  input gradient."""
  macs = layer_macs(arch)
  forward = 2 * sum(m for _, m in macs)
  return 3 * forward - 2 * macs[0][1]


# Matmul rate.


def matmul_rates(framework: str, max_seconds: float, max_repeats: int) -> list[dict[str, Any]]:
  """GFLOP/s of jnp.dot (jitted, framework "jax") or torch.mm ("torch") on MATMUL_SHAPES."""
  rows = []
  for m, k, n in MATMUL_SHAPES:
    flops = 2 * m * k * n
    if framework == "jax":
      key_a, key_b = jax.random.split(jax.random.key(0))
      a, b = jax.random.normal(key_a, (m, k)), jax.random.normal(key_b, (k, n))
      dot = jax.jit(jnp.dot)
      run = lambda dot=dot, a=a, b=b: dot(a, b).block_until_ready()  # noqa: E731
    else:
      ta, tb = torch.randn(m, k), torch.randn(k, n)
      run = lambda ta=ta, tb=tb: torch.mm(ta, tb)  # noqa: E731
    row = {"framework": framework, "shape": [m, k, n], **measure(run, max_seconds, max_repeats)}
    row["gflops"] = flops / row["median_s"] / 1e9
    rows.append(row)
    print(
      f"matmul {framework:5s} {m}x{k}x{n}: {1e3 * row['median_s']:8.1f} ms "
      f"{row['gflops']:7.1f} GFLOP/s ({row['steps']} runs)",
      flush=True,
    )
  return rows


# JAX.


def build_jax(arch: str, batch_size: int):
  """(config, networks, initial train state, jitted step) exactly as bench_train.bare_step."""
  config = load_config(arch, batch_size)
  config.objective.beta = BETA
  mesh = data.make_data_mesh()
  networks = model_lib.build_networks(config, IMAGE_SHAPE)
  params, disc = model_lib.init_params(config, networks, jax.random.key(0), IMAGE_SHAPE)
  tx, dtx = model_lib.make_optimizer(config, params), model_lib.make_discriminator_optimizer(config)
  state = create_train_state(params, disc, tx, dtx)
  step = jit_train_step(
    make_train_step(make_loss_fn(config, networks, 737_280), tx, dtx), mesh, state
  )
  return config, networks, state, step


def random_images(batch_size: int) -> np.ndarray:
  """The benchmark's fixed batch: [B, 64, 64, 1] random binary float32 images, seeded by B."""
  rng = np.random.default_rng(batch_size)
  return (rng.random((batch_size, *IMAGE_SHAPE)) < 0.5).astype(np.float32)


def compile_jax_step(arch: str, images: np.ndarray, compiler_options: dict | None = None):
  """(compiled step, initial state, device batch, rng, compile seconds) for the fixed batch
  `images`, the step built by `build_jax` and compiled with `compiler_options` (XLA options)."""
  _, _, state, step = build_jax(arch, images.shape[0])
  batch = jax.device_put({"image": images})
  rng = jax.random.key(1)
  start = time.perf_counter()
  lowered = step.lower(state, batch, rng)
  compiled = (
    lowered.compile(compiler_options=compiler_options) if compiler_options else lowered.compile()
  )
  return compiled, state, batch, rng, time.perf_counter() - start


def stepper(compiled, state, batch, rng) -> Callable[[], Any]:
  """run(): one step of `compiled` from the state the previous call left, blocked on; returns
  the step's metrics (the state is donated, so it is kept here, not by the caller)."""
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch, rng)
    jax.block_until_ready((holder[0], metrics))
    return metrics

  return run


def prepare_jax_step(arch: str, images: np.ndarray) -> tuple[Callable[[], None], dict[str, Any]]:
  """(run, info): run() does one jitted train step on the fixed batch `images` [B, 64, 64, 1]
  and blocks on it; info holds the compile time and XLA's FLOP estimate per image (which leaves
  out custom calls: for the conv net on CPU, oneDNN's convolutions)."""
  compiled, state, batch, rng, compile_s = compile_jax_step(arch, images)
  info: dict[str, Any] = {"compile_s": compile_s, "xla_flops_per_image": None}
  # XLA's cost model is backend-specific: a dict, a list of dicts, or no "flops" entry at all.
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if isinstance(cost, dict) and "flops" in cost:
    info["xla_flops_per_image"] = float(cost["flops"]) / images.shape[0]
  return stepper(compiled, state, batch, rng), info


# PyTorch.


def torch_networks(arch: str):
  """(encoder, decoder) as nn.Sequential, NCHW, with the Flax modules' shapes."""
  nn = torch.nn
  k = LATENT_DIM
  if arch == "mlp":
    encoder = nn.Sequential(
      nn.Flatten(),
      nn.Linear(4096, 1200),
      nn.ReLU(),
      nn.Linear(1200, 1200),
      nn.ReLU(),
      nn.Linear(1200, 2 * k),
    )
    decoder = nn.Sequential(
      nn.Linear(k, 1200),
      nn.Tanh(),
      nn.Linear(1200, 1200),
      nn.Tanh(),
      nn.Linear(1200, 1200),
      nn.Tanh(),
      nn.Linear(1200, 4096),
      nn.Unflatten(1, (1, 64, 64)),
    )
  elif arch == "conv":
    # "SAME" k4 s2 = padding 1 (64 -> 32); k2 s2 needs none; a k4 s2 "SAME" transposed
    # convolution doubling the size = ConvTranspose2d(k=4, s=2, p=1).
    encoder = nn.Sequential(
      nn.Conv2d(1, 32, 4, stride=2, padding=1),
      nn.ReLU(),
      nn.Conv2d(32, 32, 4, stride=2, padding=1),
      nn.ReLU(),
      nn.Conv2d(32, 64, 2, stride=2),
      nn.ReLU(),
      nn.Conv2d(64, 64, 2, stride=2),
      nn.ReLU(),
      nn.Flatten(),
      nn.Linear(1024, 256),
      nn.ReLU(),
      nn.Linear(256, 2 * k),
    )
    decoder = nn.Sequential(
      nn.Linear(k, 256),
      nn.ReLU(),
      nn.Linear(256, 1024),
      nn.ReLU(),
      nn.Unflatten(1, (64, 4, 4)),
      nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
      nn.ReLU(),
      nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
      nn.ReLU(),
      nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
      nn.ReLU(),
      nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
    )
  else:
    raise ValueError(f"Unknown arch {arch!r}; valid: mlp, conv.")
  return encoder, decoder


def torch_vae_loss(encoder, decoder, x, beta: float = BETA, eps=None):
  """Negative beta-VAE objective: mean over the batch of BCE summed over pixels + beta * KL."""
  mean, log_var = encoder(x).chunk(2, dim=1)
  if eps is None:
    eps = torch.randn_like(mean)
  logits = decoder(mean + torch.exp(0.5 * log_var) * eps)
  nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
  kl = 0.5 * torch.sum(mean.square() + log_var.exp() - log_var - 1.0)
  return (nll + beta * kl) / x.shape[0]


# Flax kernel layouts -> PyTorch: Dense [in, out] -> Linear [out, in]; Conv [kh, kw, in, out] ->
# Conv2d [out, in, kh, kw]; ConvTranspose [kh, kw, in, out] (not transposed) -> ConvTranspose2d
# [in, out, kh, kw], spatially flipped. The conv path flattens 4x4x64 as (h, w, c) in Flax and
# (c, h, w) in PyTorch, so the dense layers on either side of it are permuted.
FLAX_LAYERS = {
  "mlp": (
    ("Dense_0", "Dense_1", "_Heads_0/gaussian"),
    ("Dense_0", "Dense_1", "Dense_2", "Dense_3"),
  ),
  "conv": (
    ("Conv_0", "Conv_1", "Conv_2", "Conv_3", "Dense_0", "_Heads_0/gaussian"),
    (
      "Dense_0",
      "Dense_1",
      "ConvTranspose_0",
      "ConvTranspose_1",
      "ConvTranspose_2",
      "ConvTranspose_3",
    ),
  ),
}


def _hwc_rows_to_chw(a: np.ndarray) -> np.ndarray:
  """Reorders the first axis of a [4*4*64, ...] array from (h, w, c) to (c, h, w)."""
  return (
    a.reshape(4, 4, 64, *a.shape[1:]).transpose(2, 0, 1, *range(3, a.ndim + 2)).reshape(a.shape)
  )


def load_flax_params(arch: str, encoder, decoder, params) -> None:
  """Copies the Flax parameters `params` ({"encoder", "decoder"}) into the PyTorch modules."""
  nn = torch.nn
  for part, torch_module, names in zip(
    ("encoder", "decoder"), (encoder, decoder), FLAX_LAYERS[arch], strict=True
  ):
    layers = [m for m in torch_module if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    if len(layers) != len(names):
      raise ValueError(f"{arch} {part}: {len(layers)} PyTorch layers, {len(names)} Flax layers.")
    for layer, name in zip(layers, names, strict=True):
      leaf = params[part]["params"]
      for key in name.split("/"):
        leaf = leaf[key]
      kernel, bias = np.asarray(leaf["kernel"]), np.asarray(leaf["bias"])
      if isinstance(layer, nn.ConvTranspose2d):
        weight = kernel[::-1, ::-1].transpose(2, 3, 0, 1)
      elif isinstance(layer, nn.Conv2d):
        weight = kernel.transpose(3, 2, 0, 1)
      elif arch == "conv" and part == "encoder" and layer.in_features == 1024:
        weight = _hwc_rows_to_chw(kernel).T
      elif arch == "conv" and part == "decoder" and layer.out_features == 1024:
        weight, bias = _hwc_rows_to_chw(kernel.T), _hwc_rows_to_chw(bias)
      else:
        weight = kernel.T
      for target, value in ((layer.weight, weight), (layer.bias, bias)):
        if tuple(target.shape) != value.shape:
          raise ValueError(
            f"{arch} {part} {name}: PyTorch shape {tuple(target.shape)}, Flax {value.shape}."
          )
        with torch.no_grad():
          target.copy_(torch.from_numpy(np.array(value)))  # a writable, contiguous copy


def check_equivalence(arch: str) -> dict[str, Any]:
  """Parameter counts, and the loss and gradient norm of JAX and PyTorch on one batch and eps.

  The JAX side composes the project's networks with its loss terms
  (bernoulli_log_likelihood, gaussian_kl, beta_vae_loss); the PyTorch side is torch_vae_loss
  with the Flax initial parameters copied in.
  """
  _, networks, state, _ = build_jax(arch, 8)
  params = state.params
  encoder, decoder = torch_networks(arch)
  torch_params = [*encoder.parameters(), *decoder.parameters()]
  out = {
    "jax_params": models.count_params(params),
    "torch_params": sum(p.numel() for p in torch_params),
  }
  rng = np.random.default_rng(0)
  x = (rng.random((8, *IMAGE_SHAPE)) < 0.5).astype(np.float32)
  eps = rng.standard_normal((8, LATENT_DIM)).astype(np.float32)

  def jax_loss(params):
    posterior = networks.encoder.apply(params["encoder"], x)
    z = posterior.mean + jnp.exp(0.5 * posterior.log_var) * eps
    ll = obj.bernoulli_log_likelihood(networks.decoder.apply(params["decoder"], z), x)
    kl = dist.gaussian_kl(posterior.mean, posterior.log_var)
    return obj.beta_vae_loss(ll, kl, beta=BETA)[0]

  loss, grads = jax.value_and_grad(jax_loss)(params)
  out.update(jax_loss=float(loss), jax_grad_norm=float(optax.global_norm(grads)))
  try:
    load_flax_params(arch, encoder, decoder, params)
  except (KeyError, ValueError) as error:
    out.update(loaded=False, error=f"{type(error).__name__}: {error}", ok=False)
    return out
  tx, teps = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(eps)
  t_loss = torch_vae_loss(encoder, decoder, tx, eps=teps)
  t_loss.backward()
  t_norm = torch.sqrt(sum(p.grad.square().sum() for p in torch_params))
  out.update(loaded=True, torch_loss=t_loss.item(), torch_grad_norm=t_norm.item())
  out["loss_rel_diff"] = abs(out["torch_loss"] - out["jax_loss"]) / abs(out["jax_loss"])
  out["grad_rel_diff"] = abs(out["torch_grad_norm"] - out["jax_grad_norm"]) / out["jax_grad_norm"]
  out["ok"] = max(out["loss_rel_diff"], out["grad_rel_diff"]) < 1e-3
  out["flax_params"] = params
  return out


def torch_counted_flops_per_image(arch: str) -> float:
  """Forward + backward FLOPs per image of the PyTorch network by torch's FlopCounterMode (matmuls
  and convolutions), an independent count to compare with train_flops_per_image."""
  from torch.utils.flop_counter import FlopCounterMode

  encoder, decoder = torch_networks(arch)
  x = (torch.rand(2, 1, 64, 64) < 0.5).float()
  with FlopCounterMode(display=False) as counter:
    torch_vae_loss(encoder, decoder, x).backward()
  return counter.get_total_flops() / 2


def fused_adam_works() -> bool:
  """Whether Adam(fused=True) runs a step on CPU tensors."""
  layer = torch.nn.Linear(4, 4)
  try:
    optimizer = torch.optim.Adam(layer.parameters(), fused=True)
    layer(torch.randn(2, 4)).sum().backward()
    optimizer.step()
  except (RuntimeError, TypeError, ValueError):
    return False
  return True


def prepare_torch_step(
  arch: str, mode: str, images: np.ndarray, lr: float, flax_params, adam_kwargs: dict[str, bool]
) -> Callable[[], None]:
  """run() does one PyTorch training step (zero_grad, forward and loss, backward, Adam) in
  `mode`, starting from the Flax initial parameters `flax_params` (if given)."""
  encoder, decoder = torch_networks(arch)
  if flax_params is not None:
    load_flax_params(arch, encoder, decoder, flax_params)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  if mode == "channels_last":
    encoder.to(memory_format=torch.channels_last)
    decoder.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  params = [*encoder.parameters(), *decoder.parameters()]
  optimizer = torch.optim.Adam(params, lr=lr, **({} if mode == "eager" else adam_kwargs))

  def loss_fn(x):
    return torch_vae_loss(encoder, decoder, x)

  if mode == "compile":
    loss_fn = torch.compile(loss_fn, dynamic=False)  # one compiled graph per (arch, batch)

  def run():
    optimizer.zero_grad(set_to_none=True)
    loss_fn(x).backward()
    optimizer.step()

  return run


# Report.


def flop_record(arch: str) -> dict[str, Any]:
  """The analytic FLOP count of `arch`, printed and returned."""
  macs = layer_macs(arch)
  flops = train_flops_per_image(arch)
  print(
    f"{arch}: forward {sum(m for _, m in macs) / 1e6:.2f} M MACs/image, training "
    f"{flops / 1e9:.4f} GFLOP/image (6 x MACs - 2 x first layer's {macs[0][1] / 1e6:.2f} M)"
  )
  return {"forward_macs": sum(m for _, m in macs), "train_gflop": flops / 1e9, "layers": macs}


def check_arch(arch: str, flop_records: dict[str, Any]) -> tuple[dict[str, Any], Any]:
  """Prints torch's FLOP count and the JAX / PyTorch equivalence check of `arch`.

  Returns (check record, Flax initial params). Exits when the parameter counts differ: then the
  two sides would not be the same network.
  """
  record = flop_records[arch]
  record["torch_flop_counter_gflop"] = torch_counted_flops_per_image(arch) / 1e9
  print(f"{arch}: torch FlopCounterMode: {record['torch_flop_counter_gflop']:.4f} GFLOP/image")
  check = check_equivalence(arch)
  flax_params = check.pop("flax_params", None)
  print(f"{arch}: parameters jax {check['jax_params']:,}, torch {check['torch_params']:,}")
  if check["jax_params"] != check["torch_params"]:
    sys.exit(f"{arch}: the PyTorch network does not match the Flax one (parameter counts).")
  if check["loaded"]:
    print(
      f"{arch}: same init, one batch: loss jax {check['jax_loss']:.4f} torch "
      f"{check['torch_loss']:.4f} (rel diff {check['loss_rel_diff']:.1e}), grad norm jax "
      f"{check['jax_grad_norm']:.4f} torch {check['torch_grad_norm']:.4f} "
      f"(rel diff {check['grad_rel_diff']:.1e}): {'ok' if check['ok'] else 'MISMATCH'}"
    )
  else:
    print(
      f"{arch}: WARNING: Flax params not loadable into PyTorch ({check['error']}); the "
      "function check is skipped and PyTorch starts from its own init."
    )
  return check, flax_params


# Workers: one process per framework, alternating.


class Worker:
  """Holds one framework's prepared steps and answers requests (dicts) from the driver.

  Requests: {"cmd": "matmul"}: matmul_rates rows; {"cmd": "check", "arch"} (torch): check_arch's
  record; {"cmd": "time", "arch", "batch", "mode"}: the step's median time, prepared (compiled)
  on the first request of its (arch, batch, mode) and reused in later rounds.
  """

  def __init__(self, framework: str, args: argparse.Namespace):
    self.framework, self.args = framework, args
    self.steps: dict[tuple[str, int, str], tuple[Callable[[], None], dict[str, Any]]] = {}
    self.flax_params: dict[str, Any] = {}
    self.info: dict[str, Any] = {}
    if framework == "torch":
      import_torch()
      torch.set_num_threads(args.torch_threads or os.cpu_count())
      dynamo_config = torch._dynamo.config
      for name in ("recompile_limit", "cache_size_limit"):  # one graph per (arch, batch)
        if hasattr(dynamo_config, name):
          setattr(dynamo_config, name, 64)
      self.adam_kwargs = {"fused": True} if fused_adam_works() else {"foreach": True}
      self.info = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_adam_in_other_modes": next(iter(self.adam_kwargs)),
      }

  def handle(self, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request["cmd"]
    if cmd == "info":
      return self.info
    if cmd == "matmul":
      return {"rows": matmul_rates(self.framework, self.args.matmul_seconds, 20)}
    if cmd == "check":
      record = {"arch": request["arch"], "flops": flop_record(request["arch"])}
      record["check"], self.flax_params[request["arch"]] = check_arch(
        request["arch"], {request["arch"]: record["flops"]}
      )
      return record
    if cmd == "time":
      return self.time(request["arch"], request["batch"], request["mode"])
    raise ValueError(f"unknown request {cmd!r}")

  def time(self, arch: str, batch: int, mode: str) -> dict[str, Any]:
    record: dict[str, Any] = {"arch": arch, "batch": batch, "mode": mode}
    images = random_images(batch)
    try:
      key = (arch, batch, mode)
      if key not in self.steps:
        if mode == "jax":
          self.steps[key] = prepare_jax_step(arch, images)
        else:
          lr = load_config(arch, batch).learning_rate
          run = prepare_torch_step(
            arch, mode, images, lr, self.flax_params.get(arch), self.adam_kwargs
          )
          self.steps[key] = run, {}
      run, info = self.steps[key]
      result = measure(run, self.args.max_seconds, self.args.max_repeats)
    except Exception as error:  # report (e.g. a torch.compile failure) and go on
      message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
      print(f"{arch:5s} {batch:6d} {mode:13s} FAILED: {message}", flush=True)
      return {**record, "error": message}
    record.update(result, **info, img_s=batch / result["median_s"])
    extra = f", first step {result['first_s']:.2f} s"
    if info.get("xla_flops_per_image"):
      extra = f", XLA cost model {info['xla_flops_per_image'] / 1e9:.4f} GFLOP/image"
    print(
      f"{arch:5s} {batch:6d} {mode:13s} {1e3 * result['median_s']:9.1f} ms/step "
      f"{record['img_s']:9.0f} img/s ({result['steps']} steps{extra})",
      flush=True,
    )
    return record


def serve(framework: str, args: argparse.Namespace) -> None:
  """Worker process: one JSON request per stdin line, one JSON reply per stdout line; everything
  printed for people goes to stderr."""
  replies, sys.stdout = sys.stdout, sys.stderr
  worker = Worker(framework, args)
  for line in sys.stdin:
    request = json.loads(line)
    if request["cmd"] == "quit":
      break
    try:
      reply = worker.handle(request)
    except Exception as error:
      reply = {"error": f"{type(error).__name__}: {error}"}
    replies.write(json.dumps(reply, default=float) + "\n")
    replies.flush()


class WorkerProcess:
  """The driver's handle on a `serve` subprocess."""

  def __init__(self, framework: str, args: argparse.Namespace):
    command = [sys.executable, os.path.abspath(__file__), "--worker", framework]
    command += ["--max-seconds", str(args.max_seconds), "--max-repeats", str(args.max_repeats)]
    command += ["--matmul-seconds", str(args.matmul_seconds)]
    if args.torch_threads:
      command += ["--torch-threads", str(args.torch_threads)]
    self.framework = framework
    self.process = subprocess.Popen(
      command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

  def ask(self, **request) -> dict[str, Any]:
    self.process.stdin.write(json.dumps(request) + "\n")
    self.process.stdin.flush()
    line = self.process.stdout.readline()
    if not line:
      sys.exit(f"the {self.framework} worker exited (code {self.process.wait()}).")
    reply = json.loads(line)
    if set(reply) == {"error"}:
      sys.exit(f"the {self.framework} worker failed on {request}: {reply['error']}")
    time.sleep(PAUSE_S)  # let the worker's threads go idle before the other one measures
    return reply

  def close(self) -> None:
    self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
    self.process.stdin.close()
    self.process.wait()


def summarize(
  arch: str,
  batch: int,
  records: list[dict[str, Any]],
  modes: list[str],
  gflop_per_image: float,
  peaks: list[float],
) -> dict[str, Any]:
  """One table row of (arch, batch) from its records of all rounds.

  Images/s of each of JAX and the PyTorch modes: the median over rounds. The ratio JAX / best
  PyTorch mode and the fractions of the matmul peak are taken within each round (measurements a
  minute apart, with that round's matmul peak) and then their median (and range) over rounds.
  """
  row: dict[str, Any] = {"arch": arch, "batch": batch}
  by_round: dict[int, dict[str, float]] = {}
  for rec in records:
    if rec["arch"] == arch and rec["batch"] == batch:
      if "img_s" in rec:
        by_round.setdefault(rec["round"], {})[rec["mode"]] = rec["img_s"]
      else:
        row[rec["mode"]] = "FAILED"
  for name in ["jax", *modes]:
    rates = [r[name] for r in by_round.values() if name in r]
    if rates:
      row[name] = statistics.median(rates)
    elif name == "channels_last" and arch != "conv":
      row[name] = "n/a"
  ratios, jax_fractions, torch_fractions, best_modes = [], [], [], []
  for round_index, rates in sorted(by_round.items()):
    torch_rates = {m: rates[m] for m in modes if m in rates}
    if torch_rates:
      best = max(torch_rates, key=torch_rates.get)
      best_modes.append(best)
      torch_fractions.append(torch_rates[best] * gflop_per_image / peaks[round_index])
    if "jax" in rates:
      jax_fractions.append(rates["jax"] * gflop_per_image / peaks[round_index])
      if torch_rates:
        ratios.append(rates["jax"] / max(torch_rates.values()))
  if best_modes:
    row["best_torch_mode"] = max(set(best_modes), key=best_modes.count)
    row["torch_peak_fraction"] = statistics.median(torch_fractions)
  if jax_fractions:
    row["jax_peak_fraction"] = statistics.median(jax_fractions)
  if ratios:
    row["jax_over_best_torch"] = statistics.median(ratios)
    row["ratio_by_round"] = ratios
  return row


def print_table(rows: list[dict[str, Any]], heads: list[str]) -> None:
  """One line per (arch, batch): images/s of each of `heads`, the ratio and the peak fractions."""
  print("\nimages/s (median over rounds); jax/torch: median of the rounds' ratios [min-max];")
  print("%peak: training GFLOP/s / the round's best matmul rate, median over rounds")
  line = f"{'arch':5s} {'batch':>6s}" + "".join(f" {h:>13s}" for h in heads)
  print(line + f" {'jax/torch':>18s} {'jax %peak':>10s} {'torch %peak':>12s}")
  for row in rows:
    cells = "".join(
      f" {row[h]:13.0f}" if isinstance(row.get(h), float) else f" {row.get(h, '-'):>13s}"
      for h in heads
    )
    ratios = row.get("ratio_by_round")
    ratio_cell = (
      f" {row['jax_over_best_torch']:5.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
      if ratios
      else f" {'-':>18s}"
    )
    pct = "".join(
      f" {100 * row[key]:{width}.1f}" if row.get(key) is not None else f" {'-':>{width}s}"
      for key, width in (("jax_peak_fraction", 10), ("torch_peak_fraction", 12))
    )
    print(f"{row['arch']:5s} {row['batch']:6d}" + cells + ratio_cell + pct)


def _cpu_name() -> str:
  """The CPU's model name, family/model and widest vector extension: the same model name covers
  CPUs with and without AVX-512, whose matmul rates differ by about 2x."""
  fields: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  flags = set(fields.get("flags", "").split())
  vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "no avx")
  return (
    f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} "
    f"model {fields.get('model', '?')}, {vector})"
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
  parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 2048])
  parser.add_argument(
    "--rounds", type=int, default=3, help="rounds of alternating JAX / PyTorch measurements"
  )
  parser.add_argument(
    "--max-seconds", type=float, default=5.0, help="timed seconds per measurement (>= 3 steps)"
  )
  parser.add_argument(
    "--max-repeats", type=int, default=50, help="most timed steps per measurement"
  )
  parser.add_argument(
    "--matmul-seconds", type=float, default=1.0, help="timed seconds per matmul shape and round"
  )
  parser.add_argument(
    "--modes", nargs="+", default=list(TORCH_MODES), choices=TORCH_MODES, help="PyTorch modes"
  )
  parser.add_argument(
    "--torch-threads", type=int, help="torch.set_num_threads (default: the number of cores)"
  )
  parser.add_argument("--skip-jax", action="store_true")
  parser.add_argument("--skip-torch", action="store_true")
  parser.add_argument("--json", help="also write the results to this JSON file")
  parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return serve(args.worker, args)
  if not args.skip_torch and importlib.util.find_spec("torch") is None:
    sys.exit(TORCH_MISSING)
  use_torch = not args.skip_torch
  modes = args.modes if use_torch else []

  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  machine = {
    "cpu": _cpu_name(),
    "cores": cores,
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jax_devices": f"{jax.device_count()} {jax.devices()[0].platform}",
    "load_average_start": os.getloadavg(),
    "host_memory": host_memory.describe(),  # both workers inherit it
    "jax_conv_kernels": conv_lowering.resolve_lowering("auto"),  # what the conv net runs on
  }
  print(", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
  results: dict[str, Any] = {"machine": machine, "args": vars(args)}
  results["flops_per_image"] = {arch: flop_record(arch) for arch in args.archs}

  # One process per framework (PyTorch's thread pool slowed JAX by up to 30% in one process),
  # measuring in turn, so that the machine's drift (20% and more over minutes) hits both alike.
  workers = {}
  if not args.skip_jax:
    workers["jax"] = WorkerProcess("jax", args)
  if use_torch:
    workers["torch"] = WorkerProcess("torch", args)
    machine.update(workers["torch"].ask(cmd="info"))
    results["checks"] = {}
    for arch in args.archs:
      results["checks"][arch] = workers["torch"].ask(cmd="check", arch=arch)["check"]
  cells = [(arch, batch) for arch in args.archs for batch in args.batch_sizes]
  results["matmul"], records, peaks = [], [], []
  for round_index in range(args.rounds):
    print(f"round {round_index + 1} of {args.rounds}", flush=True)
    order = list(workers.values())
    if round_index % 2:
      order.reverse()  # who goes first alternates
    matmul = [row for w in order for row in w.ask(cmd="matmul")["rows"]]
    peaks.append(max(row["gflops"] for row in matmul))
    results["matmul"] += [{**row, "round": round_index} for row in matmul]
    for arch, batch in cells:
      for worker in order:
        for mode in ["jax"] if worker.framework == "jax" else modes:
          if mode == "channels_last" and arch != "conv":
            continue
          record = worker.ask(cmd="time", arch=arch, batch=batch, mode=mode)
          records.append({**record, "round": round_index})
  for worker in workers.values():
    worker.close()

  results["matmul_peak_gflops_by_round"] = peaks
  print(f"matmul peak (best measured) by round: {', '.join(f'{p:.1f}' for p in peaks)} GFLOP/s")
  names = ([] if args.skip_jax else ["jax"]) + modes
  results["train"] = records
  results["summary"] = [
    summarize(arch, batch, records, modes, train_flops_per_image(arch) / 1e9, peaks)
    for arch, batch in cells
  ]
  machine["load_average_end"] = os.getloadavg()
  print_table(results["summary"], names)
  print(f"load average at start {machine['load_average_start']}, end {machine['load_average_end']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2, default=float)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # as experiments/main.py does
  main()
