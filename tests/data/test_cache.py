"""Tests of the on-disk cache: atomic writes, corruption detection, rebuilds, the cache folder."""

import json
import logging
import os
import pathlib

import numpy as np
import pytest

from disentangle_jax.data import cache, dsprites, ground_truth

# Two full blocks and a partial one: a few ms to render, exercises the block boundaries.
NUM = 2 * 1024 + 300


def _expected_packed(num=NUM):
  factors = ground_truth.index_to_factors(np.arange(num), dsprites.FACTOR_SIZES)
  return np.packbits(dsprites.render_dsprites(factors), axis=-1)


@pytest.fixture(name="built")
def fixture_built(tmp_path):
  packed = dsprites.load_or_generate(tmp_path, num_images=NUM)
  return tmp_path, dsprites.cache_file(tmp_path, NUM), np.array(packed)


class TestArrayFile:
  def test_roundtrip_and_memmap(self, tmp_path):
    """write_array/read_array round-trip chunks into one read-only memory map with metadata."""
    path = tmp_path / "sub" / "a.bin"
    data = np.arange(5 * 3 * 2, dtype=np.int32).reshape(5, 3, 2)
    cache.write_array(
      path, [data[:2], data[2:]], shape=(5, 3, 2), dtype=np.int32, metadata={"v": 3}
    )
    loaded = cache.read_array(path, metadata={"v": 3})
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, data)
    assert path.stat().st_size == cache.HEADER_BYTES + data.nbytes
    assert cache.leftover_temp_files(path) == []

  def test_metadata_mismatch_is_an_error(self, tmp_path):
    """A file written with other metadata (e.g. an older generator version) is rejected."""
    path = tmp_path / "a.bin"
    cache.write_array(path, [np.zeros(4, np.uint8)], shape=(4,), dtype=np.uint8, metadata={"v": 1})
    with pytest.raises(cache.CacheError, match="v=1"):
      cache.read_array(path, metadata={"v": 2})

  def test_wrong_total_size_leaves_nothing(self, tmp_path):
    """Chunks that do not fill the declared shape raise, and no file or temp file remains."""
    path = tmp_path / "a.bin"
    with pytest.raises(ValueError, match="needs 8"):
      cache.write_array(path, [np.zeros(4, np.uint8)], shape=(8,), dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []

  def test_interrupted_write_leaves_no_file(self, tmp_path):
    """An exception in the middle of writing (a killed generation) leaves no cache, no temp file."""

    def chunks():
      yield np.zeros(4, np.uint8)
      raise KeyboardInterrupt

    path = tmp_path / "a.bin"
    with pytest.raises(KeyboardInterrupt):
      cache.write_array(path, chunks(), shape=(8,), dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []

  @pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_header", "empty", "extend"])
  def test_damage_is_detected(self, tmp_path, damage):
    """Truncation, bit flips in header or payload, and extra bytes are all CacheErrors."""
    path = tmp_path / "a.bin"
    data = np.arange(1000, dtype=np.uint8)
    cache.write_array(path, [data], shape=(1000,), dtype=np.uint8)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
      raw = raw[:-10]
    elif damage == "flip_payload":
      raw[cache.HEADER_BYTES + 500] ^= 0x01
    elif damage == "flip_header":
      raw[len(cache.MAGIC) + 4 + 3] ^= 0xFF
    elif damage == "empty":
      raw = b""
    else:
      raw += b"\0"
    path.write_bytes(bytes(raw))
    with pytest.raises(cache.CacheError):
      cache.read_array(path)

  def test_missing_file(self, tmp_path):
    """A missing file is a FileNotFoundError, not a CacheError."""
    with pytest.raises(FileNotFoundError):
      cache.read_array(tmp_path / "nothing.bin")


class TestDSpritesCache:
  def test_generated_subset_equals_renderer(self, built):
    """The cached first NUM images, unpacked, equal the renderer on the canonical factor order."""
    _, path, packed = built
    assert path.exists() and packed.shape == (NUM, 64, 8)
    np.testing.assert_array_equal(packed, _expected_packed())
    header = json.loads(path.read_bytes()[12 : cache.HEADER_BYTES].decode().rstrip())
    assert header["metadata"]["generator_version"] == dsprites.GENERATOR_VERSION

  def test_second_load_reuses_cache(self, built, monkeypatch):
    """A valid cache is loaded, not regenerated."""
    tmp_path, path, packed = built

    def fail(*args, **kwargs):
      raise AssertionError("regenerated a valid cache")

    monkeypatch.setattr(dsprites, "iter_packed_blocks", fail)
    np.testing.assert_array_equal(dsprites.load_or_generate(tmp_path, num_images=NUM), packed)

  @pytest.mark.parametrize("damage", ["truncate", "flip_payload", "garbage"])
  def test_corrupt_cache_is_rebuilt_with_warning(self, built, damage, caplog):
    """A truncated or corrupted cache is never used: it is rebuilt, with a logged warning."""
    tmp_path, path, packed = built
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
      raw = raw[: len(raw) // 2]
    elif damage == "flip_payload":
      raw[cache.HEADER_BYTES + 1234] ^= 0x10
    else:
      raw = bytearray(os.urandom(len(raw)))
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
      reloaded = dsprites.load_or_generate(tmp_path, num_images=NUM)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(reloaded, packed)
    cache.read_array(path)  # the rebuilt file verifies

  def test_leftover_temp_file_is_ignored(self, tmp_path, caplog):
    """A temp file left by an interrupted generation is never read; a fresh cache is built."""
    path = dsprites.cache_file(tmp_path, NUM)
    leftover = pathlib.Path(str(path) + cache.TEMP_MARKER + "dead")
    leftover.write_bytes(b"partial garbage")
    with caplog.at_level(logging.WARNING):
      packed = dsprites.load_or_generate(tmp_path, num_images=NUM)
    np.testing.assert_array_equal(packed, _expected_packed())
    assert leftover.read_bytes() == b"partial garbage"
    assert any("leftover" in r.getMessage() for r in caplog.records)

  def test_killed_generation_then_rebuild(self, tmp_path, monkeypatch):
    """If generation dies midway nothing is left behind, and the next call builds a good cache."""
    original = dsprites.iter_packed_blocks

    def dying(*args, **kwargs):
      blocks = original(*args, **kwargs)
      yield next(blocks)
      raise KeyboardInterrupt

    monkeypatch.setattr(dsprites, "iter_packed_blocks", dying)
    with pytest.raises(KeyboardInterrupt):
      dsprites.load_or_generate(tmp_path, num_images=NUM)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(dsprites, "iter_packed_blocks", original)
    np.testing.assert_array_equal(
      dsprites.load_or_generate(tmp_path, num_images=NUM), _expected_packed()
    )

  def test_single_worker_gives_same_bytes(self, tmp_path):
    """Thread count does not change the output (blocks are written in order)."""
    one = dsprites.load_or_generate(tmp_path / "one", num_images=NUM, num_workers=1)
    three = dsprites.load_or_generate(tmp_path / "three", num_images=NUM, num_workers=3)
    np.testing.assert_array_equal(one, three)

  def test_rejects_bad_size(self, tmp_path):
    """num_images outside [1, 737280] is a ValueError."""
    with pytest.raises(ValueError, match="num_images"):
      dsprites.load_or_generate(tmp_path, num_images=dsprites.NUM_IMAGES + 1)


class TestCacheFolder:
  def test_env_var_wins(self, tmp_path, monkeypatch):
    """$DISENTANGLE_JAX_CACHE sets the default folder, and the dSprites cache goes there."""
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache.default_cache_dir() == tmp_path / "env"
    assert dsprites.cache_file(None, 5).parent == tmp_path / "env"
    dsprites.load_or_generate(num_images=5)
    assert dsprites.cache_file(None, 5).exists()

  def test_home_fallback(self, tmp_path, monkeypatch):
    """Without the env var the folder is ~/.cache/disentangle_jax (HOME is redirected)."""
    monkeypatch.delenv(cache.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path / ".cache" / "disentangle_jax"

  def test_explicit_folder_wins_over_env(self, tmp_path, monkeypatch):
    """An explicit cache_dir argument is used even when the env var is set."""
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.slow
def test_full_generation_and_dataset(tmp_path):
  """The full 737,280-image set generates, reloads verified, and matches the renderer."""
  data = dsprites.DSprites(cache_dir=tmp_path)
  assert data._packed.shape == (dsprites.NUM_IMAGES, 64, 8)
  rng = np.random.default_rng(0)
  indices = np.concatenate(
    [[0, dsprites.NUM_IMAGES - 1], rng.integers(0, dsprites.NUM_IMAGES, 4000)]
  )
  factors = data.index_to_factors(indices)
  np.testing.assert_array_equal(data.binary_images(factors), dsprites.render_dsprites(factors))
  again = dsprites.DSprites(cache_dir=tmp_path)
  np.testing.assert_array_equal(again.binary_images(factors), dsprites.render_dsprites(factors))
