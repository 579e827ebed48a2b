"""Figure creation and saving shared by the plots: Agg-backed figures outside pyplot.

Every plot builds a `matplotlib.figure.Figure` with the object API and attaches an Agg canvas, so
no display, no global pyplot state and no backend choice is involved: plots can be drawn from
several threads at once and on headless machines. `save_figure` writes one to a PNG file.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

IMAGE_CHANNELS = (1, 3)
"""Channel counts an image may have: 1 (greyscale, drawn with cmap "gray") or 3 (RGB)."""


def new_figure(width: float, height: float) -> Figure:
  """An empty figure with an Agg canvas and constrained layout, not registered with pyplot.

  Args:
    width: figure width in inches.
    height: figure height in inches.

  Returns:
    A `Figure` without axes.
  """
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 100) -> pathlib.Path:
  """Writes a figure to a PNG file and closes it, creating the parent folders.

  The image is `figsize * dpi` pixels (no tight bounding box, so the aspect is the figure's).
  Closing empties the figure (and drops it from pyplot if pyplot knows it): do not reuse it.

  Args:
    fig: the figure to save.
    path: the PNG file to write (written as PNG whatever the suffix).
    dpi: pixels per inch.

  Returns:
    The path written, as a `pathlib.Path`.
  """
  if not dpi > 0:
    raise ValueError(f"save_figure needs a positive dpi; got {dpi}")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi, format="png")
  pyplot = sys.modules.get("matplotlib.pyplot")  # never imported here: only if a caller did
  if pyplot is not None:
    pyplot.close(fig)
  fig.clear()
  return path


def prepare_images(images: np.ndarray, *, ndim: int, what: str) -> np.ndarray:
  """Images as floats in [0, 1], after checking their rank and channel count.

  Args:
    images: [..., H, W, C] with `ndim` dimensions in all and C in {1, 3}; floats in [0, 1]
      (clipped to it) or uint8 in [0, 255] (scaled by 1/255).
    ndim: the number of dimensions required.
    what: the message prefix naming the function and the expected shape, e.g.
      "latent_traversals needs images [K, T, H, W, C]".

  Returns:
    Array of the same shape: float images keep their dtype, others become float32.
  """
  images = np.asarray(images)
  if images.ndim != ndim or images.shape[-1] not in IMAGE_CHANNELS or 0 in images.shape:
    raise ValueError(
      f"{what} (non-empty, C = 1 for greyscale or 3 for RGB); got {tuple(images.shape)}"
    )
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    images = images.astype(np.float32)
  return np.clip(images, 0.0, 1.0)


def show_image(ax: Axes, image: np.ndarray) -> None:
  """Draws one [H, W, C] image in [0, 1] on an axes without ticks (greyscale with cmap "gray").

  Args:
    ax: the axes to draw on.
    image: [H, W, 1] or [H, W, 3] in [0, 1].
  """
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(image, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def check_names(names, count: int, *, default_prefix: str, what: str) -> list[str]:
  """Names of `count` items, defaulting to prefix0..prefix{count-1}.

  Args:
    names: a sequence of `count` names, or None.
    count: the number of items.
    default_prefix: the prefix of the default names.
    what: the message prefix naming the function, argument and length, e.g.
      "latent_traversals needs latent_names [K] with K, T = 4, 5 from images".

  Returns:
    The names as a list of strings.
  """
  if names is None:
    return [f"{default_prefix}{i}" for i in range(count)]
  if isinstance(names, str):
    raise ValueError(f"{what} as a sequence of names; got the string {names!r}")
  names = [str(name) for name in names]
  if len(names) != count:
    raise ValueError(f"{what}; got {len(names)} names")
  return names


def check_vector(values, count: int, *, what: str) -> np.ndarray:
  """A float64 vector of `count` values.

  Args:
    values: array-like of shape [count].
    count: the required length.
    what: the message prefix naming the function, argument and length, e.g.
      "latent_traversals needs kl_per_latent [K] with K, T = 4, 5 from images".

  Returns:
    float64 [count].
  """
  vector = np.asarray(values, np.float64)
  if vector.shape != (count,):
    raise ValueError(f"{what}; got shape {tuple(vector.shape)}")
  return vector


def format_value(value: float) -> str:
  """A short label for a number: 3 significant digits, no trailing zeros, no "-0"."""
  text = f"{float(value):.3g}"
  return "0" if text == "-0" else text
