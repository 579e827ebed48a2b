"""Datasets read from files the user downloads: the official dSprites npz and tfds builders.

- `DSpritesNpz`: `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` from the dSprites repository
  (keys `imgs` [N, 64, 64] uint8, `latents_classes` [N, 6], `latents_values` [N, 6]; column 0 is
  the constant colour). Images are streamed out of the zip and kept bit-packed (~360 MB).
- `TfdsGroundTruth`: the tensorflow-datasets builders dsprites, shapes3d and smallnorb, prepared
  locally. Data prepared in the array_record format is read by random access with
  `tfds.data_source`, which needs no TensorFlow; the default tfrecord format can only be read
  with TensorFlow, which is imported lazily (it is not a dependency of this project).

Both map a batch of factors to stored rows through `TableGroundTruth`, so the file's row order
does not matter and missing factor combinations are reported when the dataset is opened.

References:
  Matthey et al., `dSprites: Disentanglement testing Sprites dataset
  <https://github.com/deepmind/dsprites-dataset>`_, 2017.
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
from absl import logging

from disentangle_jax.data import cache, dsprites, table

NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
NPZ_URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{NPZ_NAME}"
_NPZ_CHUNK_ROWS = 16_384


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's files are not where they were looked for; the message says how to get them."""


def _not_the_npz(path: pathlib.Path, detail: str) -> ValueError:
  """The one error for a file that exists but is not the official dSprites npz."""
  detail = " ".join(str(detail).split())  # one line, whatever the underlying message held
  return ValueError(
    f"{path} is not the dSprites npz ({NPZ_NAME}): {detail}. Download it from {NPZ_URL} "
    "(26 MB), or use get_dataset('dsprites'), which generates the same images."
  )


def _npz_rows(path: pathlib.Path, key: str, chunk_rows: int) -> Iterator[np.ndarray]:
  """Streams an array stored in an npz (zip) member in chunks of rows, without loading it all.

  Raises:
    ValueError: the member is not a C-ordered numeric array with at least one axis, or is
      truncated (zipfile and zlib raise their own errors for a damaged archive).
  """
  with zipfile.ZipFile(path) as archive, archive.open(key + ".npy") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    else:
      shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran_order or dtype.hasobject or not shape:
      raise ValueError(f"{key!r} must be a C-ordered numeric array, got {dtype} {shape}")
    row_shape = shape[1:]
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    for start in range(0, shape[0], chunk_rows):
      num = min(chunk_rows, shape[0] - start)
      data = f.read(num * row_bytes)
      if len(data) != num * row_bytes:
        raise ValueError(f"{key!r} is truncated at row {start}")
      yield np.frombuffer(data, dtype=dtype).reshape(num, *row_shape)


def _read_npz(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """(labels int64 [N, 5], bit-packed images uint8 [N, 64, 8]) from the official npz.

  Raises:
    ValueError (with the bare reason), zipfile.BadZipFile, zlib.error, EOFError: the file is not
      the official npz; the caller turns all of them into one message.
  """
  with zipfile.ZipFile(path) as archive:
    keys = sorted(n.removesuffix(".npy") for n in archive.namelist())
    missing = {"imgs", "latents_classes"} - set(keys)
    if missing:
      raise ValueError(f"keys {sorted(missing)} missing (it holds {keys})")
    with archive.open("latents_classes.npy") as f:
      try:
        classes = np.lib.format.read_array(f, allow_pickle=False)
      except ValueError as error:
        raise ValueError(f"latents_classes: {error}") from error
  if classes.ndim != 2 or classes.shape[1] not in (5, 6) or classes.shape[0] == 0:
    raise ValueError(f"latents_classes must be [N > 0, 6] (colour first), got {classes.shape}")
  if not np.issubdtype(classes.dtype, np.integer):
    raise ValueError(f"latents_classes must hold integer classes, got dtype {classes.dtype}")
  labels = classes[:, -5:].astype(np.int64)  # drop the constant colour column
  low, high = labels.min(axis=0), labels.max(axis=0)
  for name, size, lo, hi in zip(
    dsprites.FACTOR_NAMES, dsprites.FACTOR_SIZES, low, high, strict=True
  ):
    if lo < 0 or hi >= size:
      raise ValueError(f"latents_classes {name} spans {lo}..{hi}, dSprites has 0..{size - 1}")
  # Filled chunk by chunk: peak memory is the packed set plus one chunk, not 3 GB of uint8.
  packed = np.empty((labels.shape[0], dsprites.IMAGE_SIZE, dsprites.IMAGE_SIZE // 8), np.uint8)
  filled = 0
  for chunk in _npz_rows(path, "imgs", _NPZ_CHUNK_ROWS):
    if chunk.shape[1:] != (dsprites.IMAGE_SIZE, dsprites.IMAGE_SIZE):
      raise ValueError(f"imgs must be [N, 64, 64], got rows of shape {chunk.shape[1:]}")
    if filled + len(chunk) > len(packed):
      raise ValueError(f"more images than the {len(packed)} label rows")
    packed[filled : filled + len(chunk)] = dsprites.pack_images(chunk > 0)
    filled += len(chunk)
  if filled != len(packed):
    raise ValueError(f"{filled} images but {len(packed)} label rows")
  return labels, packed


class DSpritesNpz(table.TableGroundTruth):
  """dSprites read from the official npz file: float32 [B, 64, 64, 1] observations in {0, 1}.

  Args:
    path: the npz file; default `<cache_dir>/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`.
    cache_dir: folder searched when `path` is None; default `$DISENTANGLE_JAX_CACHE` or
      `~/.cache/disentangle_jax`.

  Raises:
    DatasetNotFoundError: the file does not exist (the message gives the download URL).
    ValueError: the file is not the official npz (not a zip archive, damaged, keys, dtypes or
      shapes other than the official ones), one line naming the reason and the download URL;
      or its factor grid is incomplete.
  """

  def __init__(
    self,
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
  ):
    path = pathlib.Path(path) if path is not None else cache.resolve_cache_dir(cache_dir) / NPZ_NAME
    if not path.is_file():
      raise DatasetNotFoundError(
        f"dSprites npz not found at {path}. Download it from {NPZ_URL} (26 MB) and put it there, "
        f"or pass its path: get_dataset('dsprites_npz', path=...). Without the file, "
        "get_dataset('dsprites') generates the same images."
      )
    if not zipfile.is_zipfile(path):
      # np.load would try a pickle here and call random bytes "pickled (object) data".
      raise _not_the_npz(path, f"it is not a zip archive ({path.stat().st_size} bytes)")
    try:
      labels, packed = _read_npz(path)
    except ValueError as error:
      raise _not_the_npz(path, error) from error
    except (EOFError, zipfile.BadZipFile, zlib.error) as error:
      raise _not_the_npz(path, f"damaged archive ({type(error).__name__}: {error})") from error
    self.path = path
    self._packed = packed
    super().__init__(
      labels,
      dsprites.FACTOR_NAMES,
      self._fetch_rows,
      (dsprites.IMAGE_SIZE, dsprites.IMAGE_SIZE, 1),
      expected_sizes=dsprites.FACTOR_SIZES,
      name=f"dsprites_npz ({path.name})",
    )

  def _fetch_rows(self, rows: np.ndarray) -> np.ndarray:
    return dsprites.unpack_images(self._packed[rows])[..., None].astype(np.float32)

  def packed_images(self) -> np.ndarray:
    """The images bit-packed along their rows, in example-index order: uint8 [N, 64, 8] (for
    holding the set on an accelerator, `data.on_device`).

    Raises:
      ValueError: when a factor combination has several rows (which one a batch gets is drawn
        at random, which a fixed table on the device cannot do).
    """
    if self.examples_per_combination != (1, 1):
      raise ValueError(f"{self.name}: several rows per combination; cannot hold one per example.")
    return self._packed[self._order]


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one tfds builder maps onto a ground-truth dataset."""

  label_keys: tuple[str, ...]
  factor_names: tuple[str, ...]
  published_sizes: tuple[int, ...]
  channels: int
  pixel_scale: float  # multiplies the stored uint8 pixels into [0, 1]
  default_split: str
  binary: bool = False  # pixels are 0/1 masks: any nonzero value is 1
  skip_keys: tuple[str, ...] = ("image",)  # image features not decoded while reading labels
  resize_from: int | None = None  # square side to area-resize to 64


TFDS_SPECS = {
  # tfds stores the dSprites pixels as 0/1, like the original file.
  "dsprites": TfdsSpec(
    ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position"),
    dsprites.FACTOR_NAMES,
    dsprites.FACTOR_SIZES,
    channels=1,
    pixel_scale=1.0,
    default_split="train",
    binary=True,
  ),
  "shapes3d": TfdsSpec(
    (
      "label_floor_hue",
      "label_wall_hue",
      "label_object_hue",
      "label_scale",
      "label_shape",
      "label_orientation",
    ),
    ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    (10, 10, 10, 8, 4, 15),
    channels=3,
    pixel_scale=1 / 255,
    default_split="train",
  ),
  # The object instance is a nuisance (disentanglement_lib): each (category, elevation, azimuth,
  # lighting) has 10 instances over both splits; one is drawn per observation. Only the first
  # camera's image is used, area-resized from 96x96 to 64x64.
  "smallnorb": TfdsSpec(
    ("label_category", "label_elevation", "label_azimuth", "label_lighting"),
    ("category", "elevation", "azimuth", "lighting"),
    (5, 9, 18, 6),
    channels=1,
    pixel_scale=1 / 255,
    default_split="train+test",
    skip_keys=("image", "image2"),
    resize_from=96,
  ),
}


def area_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """Linear map that area-averages a length-`size_in` signal down to `size_out` samples.

  Output sample i averages the input over [i, i + 1) * size_in / size_out, weighting each input
  sample by its overlap; every row sums to 1.

  Returns:
    float32 [size_out, size_in].
  """
  edges = np.arange(size_out + 1) * (size_in / size_out)
  lo, hi = edges[:-1, None], edges[1:, None]
  pixels = np.arange(size_in)[None, :]
  overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
  return (overlap / (size_in / size_out)).astype(np.float32)


def _tfds_missing_message(name: str, data_dir, detail: str) -> str:
  where = f"--data_dir={data_dir} " if data_dir else ""
  return (
    f"tfds dataset {name!r} {detail}. Prepare it once in the array_record format, which "
    f"disentangle_jax reads without TensorFlow: `pip install tensorflow` (tfds needs it to build) "
    f"then `tfds build {name} {where}--file_format=array_record`; pass the same data_dir here."
  )


class TfdsGroundTruth(table.TableGroundTruth):
  """A tensorflow-datasets ground-truth dataset prepared locally (dsprites, shapes3d, smallnorb).

  The labels of every record are read once when the dataset is opened (image bytes are not
  decoded then); observations are decoded per batch.

  Args:
    name: 'dsprites', 'shapes3d' or 'smallnorb'.
    data_dir: the tfds data folder the dataset was prepared in; default tfds's own
      (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    split: tfds split; default 'train' ('train+test' for smallnorb, as disentanglement_lib).

  Raises:
    DatasetNotFoundError: the dataset is not prepared in `data_dir`.
    ImportError: it is prepared as tfrecord and TensorFlow is not installed.
  """

  def __init__(
    self, name: str, *, data_dir: str | os.PathLike | None = None, split: str | None = None
  ):
    if name not in TFDS_SPECS:
      raise ValueError(f"unknown tfds dataset {name!r}; valid names: {sorted(TFDS_SPECS)}.")
    import tensorflow_datasets as tfds  # imported here: heavy, and only these datasets need it

    spec = TFDS_SPECS[name]
    self.spec = spec
    split = split or spec.default_split
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    skip = {key: tfds.decode.SkipDecoding() for key in spec.skip_keys}
    # Observations decode only "image" (smallNORB's second camera stays undecoded); labels are
    # read with no image decoded, ~40% faster.
    no_image2 = {key: value for key, value in skip.items() if key != "image"} or None

    def open_source(decoders):
      return tfds.data_source(
        name, split=split, data_dir=data_dir, download=False, decoders=decoders
      )

    try:
      labels_source = open_source(skip)
    except Exception as error:  # tfds raises several types here; diagnose below
      labels, fetch = self._tfrecord_fallback(tfds, name, split, data_dir, error)
    else:
      try:
        if len(labels_source):
          labels_source[0]
      except ImportError:
        # tfds's mock data sources need TensorFlow to hand out undecoded image bytes.
        labels_source = open_source(no_image2)
      logging.info("reading the labels of %d %s records", len(labels_source), name)
      records = (labels_source[i] for i in range(len(labels_source)))
      labels = np.array(
        [[record[k] for k in spec.label_keys] for record in records], dtype=np.int64
      ).reshape(-1, len(spec.label_keys))
      # Opened last: tfds's mock shares one patched source class between the two.
      image_source = open_source(no_image2)

      def fetch(rows: np.ndarray) -> np.ndarray:
        return np.stack([image_source[int(r)]["image"] for r in rows])

    self._raw_fetch = fetch
    super().__init__(
      labels,
      spec.factor_names,
      self._fetch_rows,
      (64, 64, spec.channels),
      expected_sizes=spec.published_sizes,
      name=f"tfds:{name}[{split}]",
    )

  def _fetch_rows(self, rows: np.ndarray) -> np.ndarray:
    images = np.asarray(self._raw_fetch(rows))
    if self.spec.binary:
      images = images > 0
    images = images.astype(np.float32) * np.float32(self.spec.pixel_scale)
    if images.ndim == 3:
      images = images[..., None]
    if self.spec.resize_from is not None and images.shape[1] != 64:
      matrix = area_resize_matrix(images.shape[1], 64)
      # Rows then columns, as two matmuls over [B, C, H, W].
      images = np.moveaxis(matrix @ np.moveaxis(images, -1, 1) @ matrix.T, 1, -1)
    return images

  @staticmethod
  def _tfrecord_fallback(tfds, name, split, data_dir, error):
    """Reads a tfrecord-prepared dataset with TensorFlow, or explains what is missing."""
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
    except Exception as e:  # an unreadable data_dir is the same problem for the user
      raise DatasetNotFoundError(
        _tfds_missing_message(name, data_dir, f"cannot be read ({e})")
      ) from e
    if not prepared:
      raise DatasetNotFoundError(
        _tfds_missing_message(name, data_dir, f"is not prepared in {builder.data_dir}")
      ) from error
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format == "array_record":
      raise error  # prepared as array_record yet unreadable: not ours to explain
    try:
      import tensorflow  # noqa: F401
    except ImportError as e:
      raise ImportError(
        f"tfds dataset {name!r} is prepared in the {file_format} format, which only TensorFlow "
        "can read: `pip install tensorflow`, or rebuild it as array_record (read without "
        f"TensorFlow): `tfds build {name} --file_format=array_record`."
      ) from e
    spec = TFDS_SPECS[name]
    logging.info("reading %s[%s] (%s) into memory with TensorFlow", name, split, file_format)
    labels, images = [], []
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
      labels.append([example[k] for k in spec.label_keys])
      images.append(example["image"])
    images = np.stack(images)
    return np.asarray(labels, dtype=np.int64), lambda rows: images[rows]
