"""Tests of the file-backed datasets with data the tests make: a fake npz, fake tfds folders."""

import importlib
import importlib.resources
import importlib.resources.abc
import io
import itertools
import json
import logging
import sys
import tempfile
import zipfile
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from disentangle_jax import data
from disentangle_jax.data import dsprites, real

# A small complete grid: 3 shapes, 2 scales, 2 orientations, 2 x 2 positions = 48 images.
NPZ_GRID = np.array(list(itertools.product(range(3), [0, 5], [0, 7], [0, 31], [3, 30])))


def _write_fake_npz(path, grid=NPZ_GRID, *, compressed=True, drop=None, shuffle_seed=0):
  """An npz with the official keys; rows shuffled; labels compacted to 0..n-1 per factor."""
  labels = np.stack([np.unique(grid[:, i], return_inverse=True)[1] for i in range(5)], 1)
  order = np.random.default_rng(shuffle_seed).permutation(len(grid))
  classes = np.concatenate([np.zeros((len(grid), 1), np.int64), labels[order]], 1)
  values = np.concatenate([np.ones((len(grid), 1)), grid[order] / 10.0], 1)
  arrays = {
    "imgs": dsprites.render_dsprites(grid[order]),
    "latents_classes": classes,
    "latents_values": values,
  }
  if drop:
    del arrays[drop]
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return labels


def _write_bad_npz(path, kind):
  """Writes one kind of file that is not the official dSprites npz."""
  arrays = {
    "imgs": dsprites.render_dsprites(NPZ_GRID),
    "latents_classes": np.concatenate([np.zeros((48, 1), np.int64), NPZ_GRID], 1),
  }
  if kind == "random_bytes":
    path.write_bytes(np.random.default_rng(0).bytes(5000))
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "html_error_page":
    path.write_text("<html><body>404: Not Found</body></html>")
  elif kind == "npy_not_npz":
    with open(path, "wb") as f:
      np.save(f, arrays["imgs"])
  elif kind == "truncated_download":
    np.savez_compressed(path, **arrays)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif kind == "zip_of_other_files":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("README.txt", "not images")
  elif kind == "npz_wrong_keys":
    np.savez(path, images=arrays["imgs"], labels=arrays["latents_classes"])
  elif kind == "pickled_labels":
    np.savez(path, imgs=arrays["imgs"], latents_classes=np.array([[0, "a"]] * 48, dtype=object))
  elif kind == "float_labels":
    np.savez(path, imgs=arrays["imgs"], latents_classes=arrays["latents_classes"] * 1.0)
  elif kind == "labels_out_of_range":
    classes = arrays["latents_classes"].copy()
    classes[0, 2] = 7  # scale has 6 values
    np.savez(path, imgs=arrays["imgs"], latents_classes=classes)
  elif kind == "labels_wrong_shape":
    np.savez(path, imgs=arrays["imgs"], latents_classes=arrays["latents_classes"][:, :3])
  elif kind == "images_wrong_shape":
    np.savez(path, imgs=arrays["imgs"][:, :32, :32], latents_classes=arrays["latents_classes"])
  elif kind == "images_scalar":
    np.savez(path, imgs=np.uint8(1), latents_classes=arrays["latents_classes"])
  elif kind in ("corrupt_deflate", "bad_crc"):
    noise = np.random.default_rng(1).integers(0, 2, (48, 64, 64)).astype(np.uint8)
    save = np.savez_compressed if kind == "corrupt_deflate" else np.savez
    save(path, imgs=noise, latents_classes=arrays["latents_classes"])
    raw = bytearray(path.read_bytes())
    start = raw.find(b"imgs.npy")  # the member's local header; its data follow
    if kind == "corrupt_deflate":
      raw[start + 200 : start + 216] = b"\xff" * 16  # garbles the deflate stream
    else:
      raw[start + 400] ^= 1  # one flipped bit of stored data: only the CRC notices
    path.write_bytes(bytes(raw))
  else:
    raise ValueError(kind)


@pytest.fixture(name="_tfds_temp_in_pytest_tmp", autouse=True, scope="module")
def fixture_tfds_temp_in_pytest_tmp(tmp_path_factory):
  """tfds leaves an empty mkdtemp folder per builder it opens: keep them in pytest's tmp."""
  with mock.patch.object(tempfile, "tempdir", str(tmp_path_factory.mktemp("tempfile"))):
    yield


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_reads_fake_file(tmp_path, compressed, monkeypatch, caplog):
  """Images are found by factors whatever the row order, across chunk boundaries."""
  monkeypatch.setattr(real, "_NPZ_CHUNK_ROWS", 5)  # 48 rows -> 10 chunks
  path = tmp_path / "fake.npz"
  labels = _write_fake_npz(path, compressed=compressed)
  with caplog.at_level(logging.WARNING):
    dataset = data.get_dataset("dsprites_npz", path=path)
  assert dataset.factor_sizes == (3, 2, 2, 2, 2)
  assert any("differ from the published" in r.getMessage() for r in caplog.records)
  observations = dataset.observations_from_factors(labels)
  assert observations.shape == (48, 64, 64, 1) and observations.dtype == np.float32
  np.testing.assert_array_equal(observations[..., 0], dsprites.render_dsprites(NPZ_GRID))


def test_npz_default_location_is_the_cache_folder(tmp_path, monkeypatch):
  """Without a path, the official file name is looked up in the cache folder."""
  monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path))
  _write_fake_npz(tmp_path / real.NPZ_NAME)
  assert data.DSpritesNpz().path == tmp_path / real.NPZ_NAME


def test_npz_missing_file_says_what_to_download(tmp_path):
  """A missing file raises DatasetNotFoundError (a FileNotFoundError) with the URL and place."""
  with pytest.raises(FileNotFoundError) as info:
    data.DSpritesNpz(cache_dir=tmp_path)
  assert isinstance(info.value, data.DatasetNotFoundError)
  message = str(info.value)
  assert real.NPZ_URL in message and str(tmp_path / real.NPZ_NAME) in message
  assert real.NPZ_URL.endswith("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")


def test_npz_missing_key(tmp_path):
  """A file without `imgs` is a ValueError listing the keys found."""
  _write_fake_npz(tmp_path / "bad.npz", drop="imgs")
  with pytest.raises(ValueError, match="imgs"):
    data.DSpritesNpz(tmp_path / "bad.npz")


@pytest.mark.parametrize(
  "kind, detail",
  [
    ("random_bytes", "not a zip archive (5000 bytes)"),
    ("empty", "not a zip archive (0 bytes)"),
    ("html_error_page", "not a zip archive"),
    ("npy_not_npz", "not a zip archive"),
    ("truncated_download", "not a zip archive"),
    ("zip_of_other_files", "keys ['imgs', 'latents_classes'] missing (it holds ['README.txt'])"),
    (
      "npz_wrong_keys",
      "keys ['imgs', 'latents_classes'] missing (it holds ['images', 'labels'])",
    ),
    ("pickled_labels", "latents_classes: Object arrays cannot be loaded"),
    ("float_labels", "latents_classes must hold integer classes, got dtype float64"),
    ("labels_out_of_range", "latents_classes scale spans 0..7, dSprites has 0..5"),
    ("labels_wrong_shape", "latents_classes must be [N > 0, 6] (colour first), got (48, 3)"),
    ("images_wrong_shape", "imgs must be [N, 64, 64], got rows of shape (32, 32)"),
    ("images_scalar", "'imgs' must be a C-ordered numeric array"),
    ("corrupt_deflate", "damaged archive (error: Error -3 while decompressing data"),
    ("bad_crc", "damaged archive (BadZipFile: Bad CRC-32 for file 'imgs.npy')"),
  ],
)
def test_npz_not_the_npz_is_one_clear_line(tmp_path, kind, detail):
  """Any file that is not the official npz gives one ValueError line: the path, that it is not
  the dSprites npz, why, and where to download it; nothing is written anywhere."""
  path = tmp_path / "in" / real.NPZ_NAME
  path.parent.mkdir()
  _write_bad_npz(path, kind)
  before = sorted(tmp_path.rglob("*"))
  with pytest.raises(ValueError) as info:
    data.get_dataset("dsprites_npz", path=path)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith(f"{path} is not the dSprites npz ({real.NPZ_NAME}): "), message
  assert detail in message and f"Download it from {real.NPZ_URL}" in message
  assert sorted(tmp_path.rglob("*")) == before


def test_npz_incomplete_grid(tmp_path):
  """A file missing a factor combination is rejected when opened."""
  _write_fake_npz(tmp_path / "holes.npz", grid=NPZ_GRID[1:])
  with pytest.raises(ValueError, match="incomplete"):
    data.DSpritesNpz(tmp_path / "holes.npz")


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()


def _prepare(name, data_dir, splits):
  """Writes a real array_record tfds folder for builder `name` from `splits` {split: examples}.

  The builder's download is replaced by our examples; images are given as PNG bytes, so neither
  the download nor TensorFlow is needed.
  """
  module = importlib.import_module(f"tensorflow_datasets.datasets.{name}.{name}_dataset_builder")

  def split_generators(self, dl_manager):
    return [tfds.core.SplitGenerator(name=s, gen_kwargs={"split": s}) for s in splits]

  def generate_examples(self, split):
    yield from enumerate(splits[split])

  with (
    mock.patch.object(module.Builder, "_split_generators", split_generators),
    mock.patch.object(module.Builder, "_generate_examples", generate_examples),
    # tfds 4.9 wants the `importlib_resources` backport while preparing; the stdlib is the same.
    mock.patch.dict(sys.modules, {"importlib_resources": importlib.resources}),
  ):
    tfds.builder(name, data_dir=data_dir, file_format="array_record").download_and_prepare()


def _dsprites_examples():
  images = dsprites.render_dsprites(NPZ_GRID)[..., None]
  labels = np.stack([np.unique(NPZ_GRID[:, i], return_inverse=True)[1] for i in range(5)], 1)
  keys = ["label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position"]
  values = {k.replace("label", "value"): 0.0 for k in keys}
  return [
    {"image": _png(img), **dict(zip(keys, map(int, lab), strict=True)), **values}
    for img, lab in zip(images, labels, strict=True)
  ]


def _norb_value(category, instance, elevation, azimuth, lighting):
  return 60 * instance + 20 * category + 10 * elevation + 5 * azimuth + lighting


def _norb_examples(instances):
  examples = []
  for cat, inst, elev, azim, light in itertools.product(range(2), instances, *[range(2)] * 3):
    image = np.full((96, 96, 1), _norb_value(cat, inst, elev, azim, light), np.uint8)
    examples.append(
      {
        "image": _png(image),
        "image2": _png(image),
        "instance": inst,
        "label_category": cat,
        "label_elevation": elev,
        "label_azimuth": azim,
        "label_lighting": light,
      }
    )
  return examples


def _shapes3d_examples():
  keys = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
  examples = []
  for labels in itertools.product(range(2), repeat=6):
    rgb = np.array([sum(labels[:3]) * 50, sum(labels[3:]) * 50, int("".join(map(str, labels)), 2)])
    image = np.broadcast_to(rgb.astype(np.uint8), (64, 64, 3)).copy()
    example = {"image": _png(image)}
    example.update({f"label_{k}": v for k, v in zip(keys, labels, strict=True)})
    example.update({f"value_{k}": 0.0 for k in keys})
    examples.append(example)
  return examples


@pytest.fixture(scope="module", name="tfds_dir")
def fixture_tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  _prepare("dsprites", data_dir, {"train": _dsprites_examples()})
  _prepare("shapes3d", data_dir, {"train": _shapes3d_examples()})
  _prepare("smallnorb", data_dir, {"train": _norb_examples([0, 1]), "test": _norb_examples([2])})
  return data_dir


# Real tfds folders (array_record) read through tfds.data_source, without TensorFlow.
def test_tfds_tensorflow_is_not_needed(tfds_dir):
  """Reading the prepared datasets never imports TensorFlow."""
  data.get_dataset("tfds:dsprites", data_dir=tfds_dir).sample(4, 0)
  assert "tensorflow" not in sys.modules


def test_tfds_dsprites(tfds_dir):
  """tfds dsprites records (stored shuffled) are found by their labels; pixels are 0/1."""
  dataset = data.get_dataset("tfds:dsprites", data_dir=tfds_dir)
  assert dataset.factor_sizes == (3, 2, 2, 2, 2) and dataset.observation_shape == (64, 64, 1)
  labels = np.stack([np.unique(NPZ_GRID[:, i], return_inverse=True)[1] for i in range(5)], 1)
  observations = dataset.observations_from_factors(labels)
  np.testing.assert_array_equal(observations[..., 0], dsprites.render_dsprites(NPZ_GRID))


def test_tfds_shapes3d(tfds_dir):
  """shapes3d observations are RGB in [0, 1] and belong to the requested factors."""
  dataset = data.get_dataset("tfds:shapes3d", data_dir=tfds_dir)
  assert dataset.factor_names[0] == "floor_hue" and dataset.factor_sizes == (2,) * 6
  factors = dataset.sample_factors(20, np.random.default_rng(0))
  observations = dataset.observations_from_factors(factors)
  assert observations.shape == (20, 64, 64, 3)
  code = (factors * 2 ** np.arange(5, -1, -1)).sum(1)
  np.testing.assert_allclose(observations[:, 5, 7, 2], code / 255, atol=1e-6)
  np.testing.assert_allclose(observations[:, 0, 0, 0], factors[:, :3].sum(1) * 50 / 255, atol=1e-6)


def test_tfds_smallnorb_instances_are_a_nuisance(tfds_dir):
  """smallNORB: 4 factors; each draw picks one of the instances of both splits, resized to 64."""
  dataset = data.get_dataset("tfds:smallnorb", data_dir=tfds_dir)
  assert dataset.factor_names == ("category", "elevation", "azimuth", "lighting")
  assert dataset.examples_per_combination == (3, 3)
  factors = np.tile([[1, 0, 1, 1]], (300, 1))
  observations = dataset.observations_from_factors(factors, np.random.default_rng(0))
  assert observations.shape == (300, 64, 64, 1)
  values = np.round(observations[:, 10, 10, 0] * 255).astype(int)
  expected = {_norb_value(1, inst, 0, 1, 1) for inst in range(3)}
  assert set(values) == expected  # all three instances drawn, nothing else
  with pytest.raises(ValueError, match="random"):
    dataset.observations_from_factors(factors[:1])


def test_tfds_single_split(tfds_dir):
  """A split argument restricts the records (train only: 2 instances per combination)."""
  dataset = data.get_dataset("tfds:smallnorb", data_dir=tfds_dir, split="train")
  assert dataset.examples_per_combination == (2, 2)


def test_tfds_not_prepared(tmp_path):
  """A dataset absent from data_dir: DatasetNotFoundError with the build command."""
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.get_dataset("tfds:shapes3d", data_dir=tmp_path)
  message = str(info.value)
  assert "tfds build shapes3d" in message and "--file_format=array_record" in message
  assert "pip install tensorflow" in message and str(tmp_path) in message


def test_tfds_tfrecord_needs_tensorflow(tmp_path, tfds_dir):
  """A dataset prepared as tfrecord asks for `pip install tensorflow` when TF is absent."""
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed: the tfrecord path would be taken.")
  folder = tmp_path / "dsprites"
  version_dir = next((tfds_dir / "dsprites").iterdir())
  target = folder / version_dir.name
  target.mkdir(parents=True)
  info = json.loads((version_dir / "dataset_info.json").read_text())
  info["fileFormat"] = "tfrecord"
  (target / "dataset_info.json").write_text(json.dumps(info))
  (target / "features.json").write_text((version_dir / "features.json").read_text())
  with pytest.raises(ImportError, match="pip install tensorflow"):
    data.get_dataset("tfds:dsprites", data_dir=tmp_path)


def test_tfds_unknown_name():
  """Only the three supported builders are accepted."""
  with pytest.raises(ValueError, match="valid names"):
    data.TfdsGroundTruth("mnist")


# tfds.testing.mock_data: the loader's data_source path with generated records.
def test_tfds_random_mock_records_form_an_incomplete_grid(tmp_path):
  """Random mock labels do not cover a grid: the loader says so instead of failing later."""
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(ValueError, match="incomplete"):
      data.get_dataset("tfds:shapes3d", data_dir=tmp_path)


def test_tfds_mock_source_with_complete_grid(tmp_path):
  """With a mocked data source holding a complete grid, observations follow the labels."""
  examples = []
  for labels in itertools.product(range(2), repeat=6):
    image = np.full((64, 64, 3), 10 * sum(labels), np.uint8)
    keys = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    examples.append(
      {"image": image, **{f"label_{k}": v for k, v in zip(keys, labels, strict=True)}}
    )

  def as_data_source(self, split=None, decoders=None, deserialize_method=None, **kwargs):
    return examples[::-1]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    dataset = data.get_dataset("tfds:shapes3d", data_dir=tmp_path)
  factors = dataset.sample_factors(16, 3)
  observations = dataset.observations_from_factors(factors)
  np.testing.assert_allclose(observations[:, 0, 0, 0], 10 * factors.sum(1) / 255, atol=1e-6)


def test_area_resize_matrix_by_hand():
  """96 -> 64 area resize: output i averages [1.5 i, 1.5 i + 1.5); rows sum to 1."""
  matrix = real.area_resize_matrix(96, 64)
  assert matrix.shape == (64, 96)
  np.testing.assert_allclose(matrix.sum(axis=1), 1, rtol=1e-6)
  np.testing.assert_allclose(matrix[0, :3], [1 / 1.5, 0.5 / 1.5, 0], rtol=1e-6)
  np.testing.assert_allclose(matrix[1, :3], [0, 0.5 / 1.5, 1 / 1.5], rtol=1e-6)
  # Box average of a piecewise-constant signal: upsample 100x and average blocks of 150.
  signal = np.random.default_rng(0).random(96)
  box = np.repeat(signal, 100).reshape(64, 150).mean(axis=1)
  np.testing.assert_allclose(matrix @ signal, box, rtol=1e-5)


def test_npz_image_count_must_match_labels(tmp_path):
  """An npz whose imgs and latents_classes disagree in length is rejected."""
  labels = np.zeros((4, 6), np.int64)
  np.savez(tmp_path / "short.npz", imgs=np.zeros((3, 64, 64), np.uint8), latents_classes=labels)
  with pytest.raises(ValueError, match="3 images but 4 label rows"):
    data.DSpritesNpz(tmp_path / "short.npz")
