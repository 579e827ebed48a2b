"""Image grids of a trained model: latent traversals and reconstructions.

Images are numpy arrays [..., H, W, C] with C = 1 (greyscale, cmap "gray") or C = 3 (RGB), in
[0, 1] (clipped to it) or uint8 (scaled by 1/255). Every image gets its own axes without ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from disentangle_jax.plots.figures import (
  check_names,
  check_vector,
  format_value,
  new_figure,
  prepare_images,
  show_image,
)

LABEL_WIDTH = 1.3
"""Inches left of an image grid for the row labels."""


def latent_traversals(
  images: np.ndarray,
  *,
  values: np.ndarray,
  latent_names: Sequence[str] | None = None,
  kl_per_latent: np.ndarray | None = None,
  cell_size: float = 1.0,
) -> Figure:
  """A grid of decodings while one latent at a time sweeps a range, the others held fixed.

  Row k shows latent k's traversal; column t is titled with the traversal value values[t]. Each
  row is labelled with the latent's name and, if given, its KL in nats, so that the active
  latents (large KL) stand out from the collapsed ones (KL near 0).

  Args:
    images: [K, T, H, W, C] decodings, images[k, t] with latent k set to values[t].
    values: [T] the traversal values.
    latent_names: [K] row names; default "z0" .. "z{K-1}".
    kl_per_latent: [K] the KL of each latent in nats (e.g. averaged over the data), or None.
    cell_size: height of one image in inches.

  Returns:
    A figure with K * T image axes in row-major order.
  """
  images = prepare_images(images, ndim=5, what="latent_traversals needs images [K, T, H, W, C]")
  num_latents, num_values, height, width = images.shape[:4]
  shape = f"with K, T = {num_latents}, {num_values} from images"
  values = check_vector(values, num_values, what=f"latent_traversals needs values [T] {shape}")
  names = check_names(
    latent_names,
    num_latents,
    default_prefix="z",
    what=f"latent_traversals needs latent_names [K] {shape}",
  )
  labels = names
  if kl_per_latent is not None:
    kl = check_vector(
      kl_per_latent, num_latents, what=f"latent_traversals needs kl_per_latent [K] {shape}"
    )
    labels = [f"{name}\nKL {value:.2f} nats" for name, value in zip(names, kl, strict=True)]

  cell_width = cell_size * width / height
  fig = new_figure(LABEL_WIDTH + num_values * cell_width, 0.4 + num_latents * cell_size)
  axes = fig.subplots(num_latents, num_values, squeeze=False)
  for k in range(num_latents):
    for t in range(num_values):
      show_image(axes[k, t], images[k, t])
    axes[k, 0].set_ylabel(labels[k], rotation=0, ha="right", va="center")
  for t in range(num_values):
    axes[0, t].set_title(format_value(values[t]), fontsize="small")
  return fig


def reconstructions(
  originals: np.ndarray,
  reconstructions: np.ndarray,
  *,
  max_per_row: int = 10,
  cell_size: float = 1.0,
) -> Figure:
  """Data images above their reconstructions.

  With N <= max_per_row, two rows: "data" and "reconstruction". Otherwise the images wrap into
  ceil(N / max_per_row) pairs of such rows; the unused cells of the last pair have no axes.

  Args:
    originals: [N, H, W, C] data images.
    reconstructions: [N, H, W, C] their reconstructions (e.g. decoded posterior means).
    max_per_row: the most images per row.
    cell_size: height of one image in inches.

  Returns:
    A figure with 2 * N image axes: image i is in block b, column c with (b, c) =
    divmod(i, columns), its data on grid row 2 * b and its reconstruction on row 2 * b + 1.
  """
  what = "reconstructions needs {} [N, H, W, C]"
  originals = prepare_images(originals, ndim=4, what=what.format("originals"))
  recons = prepare_images(reconstructions, ndim=4, what=what.format("reconstructions"))
  if recons.shape != originals.shape:
    raise ValueError(
      "reconstructions needs originals and reconstructions of the same shape [N, H, W, C]; got "
      f"{tuple(originals.shape)} and {tuple(recons.shape)}"
    )
  if max_per_row < 1:
    raise ValueError(f"reconstructions needs max_per_row >= 1; got {max_per_row}")
  num_images, height, width = originals.shape[:3]
  columns = min(num_images, max_per_row)
  blocks = math.ceil(num_images / columns)

  cell_width = cell_size * width / height
  fig = new_figure(LABEL_WIDTH + columns * cell_width, 2 * blocks * cell_size)
  axes = fig.subplots(2 * blocks, columns, squeeze=False)
  for i in range(blocks * columns):
    block, column = divmod(i, columns)
    top, bottom = axes[2 * block, column], axes[2 * block + 1, column]
    if i >= num_images:
      top.remove()
      bottom.remove()
      continue
    show_image(top, originals[i])
    show_image(bottom, recons[i])
  for block in range(blocks):
    axes[2 * block, 0].set_ylabel("data", rotation=0, ha="right", va="center")
    axes[2 * block + 1, 0].set_ylabel("reconstruction", rotation=0, ha="right", va="center")
  return fig
