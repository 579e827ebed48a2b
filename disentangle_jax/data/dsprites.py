"""dSprites: the geometry, a vectorised renderer, the cached full set and its dataset class.

dSprites (Matthey et al. 2017) holds 737,280 binary 64x64 images of a white shape on black, one for
each combination of five factors, the last varying fastest:

  shape 3 (square, ellipse, heart), scale 6 (linspace(0.5, 1, 6)),
  orientation 40 (linspace(0, 2*pi, 40): both ends included, so 0 and 2*pi render alike),
  posX 32 (linspace(0, 1, 32)), posY 32 (linspace(0, 1, 32)),
  index = shape*245760 + scale*40960 + orientation*1024 + posX*32 + posY.

Geometry (fitted to the published traversal animation): pixel (row r, col c) is on when its centre
(c + 0.5, r + 0.5) lies inside the shape. The shape centre is (16 + 32*posX, 16 + 32*posY) pixels,
x to the right and y downwards; a shape point (dx, dy) lands at
centre + scale * (dx cos t + dy sin t, -dx sin t + dy cos t). At scale 1: square half-side 9.6 px,
ellipse semi-axes 12.76 px (x) by 7.24 px (y), heart x = 9.6 sin^3 u,
y = -0.66 (13 cos u - 5 cos 2u - 2 cos 3u - cos 4u) - 1.5.

The renderer maps each pixel centre back into the shape's own frame and tests it analytically, on
a window around the shape only (a shape covers at most 30x30 of the 64x64 pixels).

References:
  Matthey et al., `dSprites: Disentanglement testing Sprites dataset
  <https://github.com/deepmind/dsprites-dataset>`_, 2017.
"""

from __future__ import annotations

import collections
import os
import pathlib
import time
from collections.abc import Iterator
from concurrent import futures

import numpy as np
from absl import logging

from disentangle_jax.data import cache, ground_truth

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_IMAGES = 737_280
IMAGE_SIZE = 64
# Bump whenever the rendered pixels change: caches from another version are rebuilt.
GENERATOR_VERSION = 1

# Factor values as in the published `latents_values` (shape is stored as 1, 2, 3 there).
FACTOR_VALUES = {
  "shape": np.array([1.0, 2.0, 3.0]),
  "scale": np.linspace(0.5, 1.0, 6),
  "orientation": np.linspace(0.0, 2.0 * np.pi, 40),
  "posX": np.linspace(0.0, 1.0, 32),
  "posY": np.linspace(0.0, 1.0, 32),
}
for _values in FACTOR_VALUES.values():
  _values.flags.writeable = False

SQUARE_HALF_SIDE = 9.6
ELLIPSE_SEMI_AXES = (12.76, 7.24)
HEART_HALF_WIDTH = 9.6
# Farthest shape point from the centre at scale 1 (square corner 9.6 * sqrt(2) = 13.58 px).
_MAX_RADIUS = 13.6
_BLOCK = 1024  # images per generation block: one (shape, scale, orientation) triple
# float64 per-pixel arithmetic: float32 flips 6 of the 128M on-pixels and saves only ~10% time.
_DTYPE = np.float64


def heart_boundary(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Points of the heart's outline at scale 1, in its own frame (y downwards).

  Args:
    u: curve parameter, any shape, in [0, 2*pi).

  Returns:
    (x, y) float64 arrays of u's shape, in pixels.
  """
  u = np.asarray(u, dtype=np.float64)
  x = HEART_HALF_WIDTH * np.sin(u) ** 3
  y = -0.66 * (13 * np.cos(u) - 5 * np.cos(2 * u) - 2 * np.cos(3 * u) - np.cos(4 * u)) - 1.5
  return x, y


def _heart_y(c: np.ndarray) -> np.ndarray:
  """The heart's y at parameter u given c = cos u, with cos ku written as polynomials in c."""
  return -0.66 * (4 + c * (19 + c * (-2 + c * (-8 - 8 * c)))) - 1.5


def shape_contains(shape: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
  """Whether points (dx, dy) of the shape's own frame (scale 1, y down) lie inside the shape.

  The heart is x-monotone: on the vertical line x the outline has the two points with
  sin u = (|x| / 9.6)^(1/3), cos u = +-sqrt(1 - sin^2 u), so the inside is the y-interval
  between them.

  Args:
    shape: 0 square, 1 ellipse, 2 heart.
    dx: x coordinates, any shape, float.
    dy: y coordinates, same shape.

  Returns:
    bool array of dx's shape.
  """
  if shape == 0:
    return np.maximum(np.abs(dx), np.abs(dy)) <= SQUARE_HALF_SIDE
  if shape == 1:
    ax, ay = ELLIPSE_SEMI_AXES
    return np.square(dx * (1 / ax)) + np.square(dy * (1 / ay)) <= 1
  if shape == 2:
    ratio = np.abs(dx) * (1 / HEART_HALF_WIDTH)
    sin_u = np.cbrt(np.minimum(ratio, 1))
    cos_u = np.sqrt(1 - sin_u * sin_u)
    return (ratio <= 1) & (dy >= _heart_y(cos_u)) & (dy <= _heart_y(-cos_u))
  raise ValueError(f"shape must be 0 (square), 1 (ellipse) or 2 (heart), got {shape}.")


def render_dsprites(factors: np.ndarray) -> np.ndarray:
  """Renders dSprites images for a batch of factor class indices.

  Args:
    factors: integer array [B, 5] (shape, scale, orientation, posX, posY).

  Returns:
    uint8 [B, 64, 64] with values 0 and 1.
  """
  factors = ground_truth.check_factors(factors, FACTOR_SIZES, FACTOR_NAMES)
  num = factors.shape[0]
  out = np.zeros(num * IMAGE_SIZE * IMAGE_SIZE, dtype=np.uint8)
  group_key = factors[:, 0] * FACTOR_SIZES[1] + factors[:, 1]
  for key in np.unique(group_key):
    shape, scale_index = divmod(int(key), FACTOR_SIZES[1])
    rows = np.flatnonzero(group_key == key)
    scale = FACTOR_VALUES["scale"][scale_index]
    radius = _MAX_RADIUS * scale
    width = int(np.ceil(2 * radius)) + 2  # window side: every pixel centre within radius
    window = np.arange(width)
    group = factors[rows]
    centre_x = 16 + 32 * FACTOR_VALUES["posX"][group[:, 3]]
    centre_y = 16 + 32 * FACTOR_VALUES["posY"][group[:, 4]]
    x0 = np.clip(np.ceil(centre_x - radius - 0.5).astype(np.int64), 0, IMAGE_SIZE - width)
    y0 = np.clip(np.ceil(centre_y - radius - 0.5).astype(np.int64), 0, IMAGE_SIZE - width)
    # Pixel-centre offsets from the shape centre: vx [n, w] per column, vy [n, h] per row.
    vx = (x0[:, None] + window) + 0.5 - centre_x[:, None]
    vy = (y0[:, None] + window) + 0.5 - centre_y[:, None]
    angle = FACTOR_VALUES["orientation"][group[:, 2]]
    cos_s = (np.cos(angle) / scale)[:, None]
    sin_s = (np.sin(angle) / scale)[:, None]
    # Inverse rotation, separable in rows and columns: dx = vx cos - vy sin, dy = vx sin + vy cos.
    dx = (vx * cos_s).astype(_DTYPE)[:, None, :] - (vy * sin_s).astype(_DTYPE)[:, :, None]
    dy = (vx * sin_s).astype(_DTYPE)[:, None, :] + (vy * cos_s).astype(_DTYPE)[:, :, None]
    inside = shape_contains(shape, dx, dy)
    base = rows * IMAGE_SIZE * IMAGE_SIZE + y0 * IMAGE_SIZE + x0
    flat = base[:, None, None] + (window * IMAGE_SIZE)[None, :, None] + window[None, None, :]
    out[flat.ravel()] = inside.ravel()
  return out.reshape(num, IMAGE_SIZE, IMAGE_SIZE)


def pack_images(images: np.ndarray) -> np.ndarray:
  """Binary images uint8 [B, 64, 64] -> bit-packed uint8 [B, 64, 8] (8x smaller)."""
  return np.packbits(np.asarray(images, dtype=bool), axis=-1)


def unpack_images(packed: np.ndarray) -> np.ndarray:
  """Bit-packed uint8 [B, 64, 8] -> binary images uint8 [B, 64, 64] with values 0 and 1."""
  return np.unpackbits(np.asarray(packed), axis=-1)


def _render_packed_range(start: int, stop: int) -> np.ndarray:
  factors = ground_truth.index_to_factors(np.arange(start, stop), FACTOR_SIZES)
  return pack_images(render_dsprites(factors))


def iter_packed_blocks(num_images: int = NUM_IMAGES, *, num_workers: int | None = None) -> Iterator:
  """Renders images 0..num_images-1 in canonical order, yielding bit-packed blocks of 1024.

  numpy releases the GIL in its array loops, so a few threads render blocks in parallel; at most
  two blocks per thread are in flight, which bounds memory.

  Args:
    num_images: how many images, from index 0, in [1, 737280].
    num_workers: rendering threads; default: the CPUs this process may use (at most 8).

  Yields:
    uint8 [n, 64, 8] blocks (n = 1024 except possibly the last).
  """
  if not 1 <= num_images <= NUM_IMAGES:
    raise ValueError(f"num_images must be in [1, {NUM_IMAGES}], got {num_images}.")
  if num_workers is None:
    num_workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
  starts = list(range(0, num_images, _BLOCK))
  log_every = max(1, len(starts) // 10)
  with futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    pending = collections.deque()
    done = 0
    for start in starts + [None]:
      if start is not None:
        pending.append(pool.submit(_render_packed_range, start, min(start + _BLOCK, num_images)))
      # Drain to at most two blocks per thread in flight, or everything after the last submit.
      while pending and (start is None or len(pending) >= 2 * num_workers):
        yield pending.popleft().result()
        done += 1
        if done % log_every == 0 or done == len(starts):
          logging.info("generating dSprites: %d/%d blocks", done, len(starts))


def cache_file(
  cache_dir: str | os.PathLike | None = None, num_images: int = NUM_IMAGES
) -> pathlib.Path:
  """Path of the packed dSprites cache for the first `num_images` images."""
  name = f"dsprites_v{GENERATOR_VERSION}_{num_images}.bits"
  return cache.resolve_cache_dir(cache_dir) / name


def _try_load(path: pathlib.Path, expected: dict, verify: bool) -> tuple[np.ndarray | None, str]:
  """(the cached array, "") or (None, why it cannot be used)."""
  try:
    return cache.read_array(path, metadata=expected, verify=verify), ""
  except FileNotFoundError:
    return None, "missing"
  except cache.CacheError as e:
    return None, str(e)


def load_or_generate(
  cache_dir: str | os.PathLike | None = None,
  *,
  num_images: int = NUM_IMAGES,
  verify: bool = True,
  num_workers: int | None = None,
) -> np.ndarray:
  """The bit-packed dSprites images, from the cache or generated and cached on first use.

  A missing, truncated, corrupted or stale cache file is rebuilt (with a logged warning). Only one
  process generates a given file at a time (`cache.generation_lock`): another one that needs it
  meanwhile logs that it waits, then loads the finished file. The generating process first removes
  temporary files that killed generations left behind.

  Args:
    cache_dir: cache folder; default `$DISENTANGLE_JAX_CACHE` or `~/.cache/disentangle_jax`.
    num_images: the first `num_images` images of the canonical order (tests use a few blocks).
    verify: check the payload checksum on load (~0.2 s for the full set).
    num_workers: rendering threads for a (re)build.

  Returns:
    Read-only uint8 [num_images, 64, 8] in process memory (360 MiB for the full set);
    `unpack_images` gives the pixels.
  """
  if not 1 <= num_images <= NUM_IMAGES:
    raise ValueError(f"num_images must be in [1, {NUM_IMAGES}], got {num_images}.")
  path = cache_file(cache_dir, num_images)
  expected = {"name": "dsprites", "generator_version": GENERATOR_VERSION, "num_images": num_images}
  packed, problem = _try_load(path, expected, verify)
  if packed is not None:
    return packed
  if problem == "missing":
    logging.info("no dSprites cache at %s: generating %d images", path, num_images)
  else:
    logging.warning("unusable dSprites cache, rebuilding it: %s", problem)
  with cache.generation_lock(path):
    # Another process may have built the file while this one waited for the lock.
    packed, _ = _try_load(path, expected, verify)
    if packed is not None:
      logging.info("loaded %s, generated by another process", path)
      return packed
    cache.remove_stale_temp_files(path)
    start = time.perf_counter()
    cache.write_array(
      path,
      iter_packed_blocks(num_images, num_workers=num_workers),
      shape=(num_images, IMAGE_SIZE, IMAGE_SIZE // 8),
      dtype=np.uint8,
      metadata=expected,
    )
    logging.info("wrote %s in %.1f s", path, time.perf_counter() - start)
    return cache.read_array(path, metadata=expected, verify=False)


class DSprites(ground_truth.GroundTruthData):
  """dSprites as a ground-truth dataset: float32 [B, 64, 64, 1] observations in {0, 1}.

  Args:
    source: "cache" reads the bit-packed set from the on-disk cache (generated on first use,
      360 MiB, held in memory); "render" renders each batch on the fly (no disk, ~3 us per
      image).
    cache_dir: cache folder for source="cache"; default `$DISENTANGLE_JAX_CACHE` or
      `~/.cache/disentangle_jax`.
    verify_cache: check the cache checksum when loading it.
  """

  factor_names = FACTOR_NAMES
  factor_sizes = FACTOR_SIZES
  observation_shape = (IMAGE_SIZE, IMAGE_SIZE, 1)
  factor_values = FACTOR_VALUES

  def __init__(
    self,
    *,
    source: str = "cache",
    cache_dir: str | os.PathLike | None = None,
    verify_cache: bool = True,
  ):
    if source not in ("cache", "render"):
      raise ValueError(f"source must be 'cache' or 'render', got {source!r}.")
    self.source = source
    self._packed = None
    self.cache_path = None
    if source == "cache":
      self._packed = load_or_generate(cache_dir, verify=verify_cache)
      self.cache_path = cache_file(cache_dir)

  def packed_images(self) -> np.ndarray:
    """Every image bit-packed along its rows, in index order: uint8 [737280, 64, 8] (360 MiB);
    for holding the whole set on an accelerator (`data.on_device`). With source="render" the
    set is rendered now, in memory (about 8 s)."""
    if self._packed is None:
      self._packed = np.concatenate(list(iter_packed_blocks(NUM_IMAGES)))
    return self._packed

  def binary_images(self, factors: np.ndarray) -> np.ndarray:
    """Binary images for a batch of factors.

    Args:
      factors: integer array [B, 5].

    Returns:
      uint8 [B, 64, 64] with values 0 and 1.
    """
    if self._packed is None:
      return render_dsprites(factors)
    return unpack_images(self._packed[self.factors_to_index(factors)])

  def observations_from_factors(
    self, factors: np.ndarray, rng: ground_truth.RngLike = None
  ) -> np.ndarray:
    """Observations for a batch of factors (deterministic: `rng` is ignored).

    Args:
      factors: integer array [B, 5] (shape, scale, orientation, posX, posY).
      rng: unused.

    Returns:
      float32 [B, 64, 64, 1] with values 0 and 1.
    """
    del rng
    return self.binary_images(factors)[..., None].astype(np.float32)
