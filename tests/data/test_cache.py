"""Tests of the on-disk cache: atomic writes, corruption detection, rebuilds, the generation lock,
stale temporary files, the cache folder."""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from disentangle_jax.data import cache, dsprites, ground_truth

REPO = pathlib.Path(__file__).parents[2]

# Two full blocks and a partial one: a few ms to render, exercises the block boundaries.
NUM = 2 * 1024 + 300


def _expected_packed(num=NUM):
  factors = ground_truth.index_to_factors(np.arange(num), dsprites.FACTOR_SIZES)
  return np.packbits(dsprites.render_dsprites(factors), axis=-1)


def _wait_for(condition, timeout=60.0):
  """Polls `condition` until true; fails the test after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      pytest.fail(f"timed out after {timeout} s waiting for {condition}")
    time.sleep(0.01)


@pytest.fixture(name="built")
def fixture_built(tmp_path):
  packed = dsprites.load_or_generate(tmp_path, num_images=NUM)
  return tmp_path, dsprites.cache_file(tmp_path, NUM), np.array(packed)


def test_array_file_roundtrip_in_memory(tmp_path):
  """write_array/read_array round-trip chunks into one read-only in-memory array (no map)."""
  path = tmp_path / "sub" / "a.bin"
  data = np.arange(5 * 3 * 2, dtype=np.int32).reshape(5, 3, 2)
  cache.write_array(path, [data[:2], data[2:]], shape=(5, 3, 2), dtype=np.int32, metadata={"v": 3})
  loaded = cache.read_array(path, metadata={"v": 3})
  assert not isinstance(loaded, np.memmap) and not loaded.flags.writeable
  assert loaded.dtype == np.int32 and loaded.shape == (5, 3, 2)
  np.testing.assert_array_equal(loaded, data)
  assert path.stat().st_size == cache.HEADER_BYTES + data.nbytes
  assert cache.leftover_temp_files(path) == []


@pytest.mark.parametrize("change", ["flip_in_place", "replace", "delete"])
def test_array_file_loaded_array_ignores_later_file_changes(tmp_path, change):
  """What was verified is what is used: rewriting, replacing or deleting the file afterwards
  leaves a loaded array unchanged (a memory map would show the in-place flip)."""
  path = tmp_path / "a.bin"
  data = np.arange(3000, dtype=np.int64)
  cache.write_array(path, [data], shape=data.shape, dtype=data.dtype)
  loaded = cache.read_array(path)
  if change == "flip_in_place":
    with open(path, "r+b") as f:  # same size, so a map would not SIGBUS, only change
      f.seek(cache.HEADER_BYTES)
      f.write(b"\xff" * 800)
  elif change == "replace":
    cache.write_array(path, [data + 1], shape=data.shape, dtype=data.dtype)
  else:
    path.unlink()
  np.testing.assert_array_equal(loaded, data)


def test_array_file_metadata_mismatch_is_an_error(tmp_path):
  """A file written with other metadata (e.g. an older generator version) is rejected."""
  path = tmp_path / "a.bin"
  cache.write_array(path, [np.zeros(4, np.uint8)], shape=(4,), dtype=np.uint8, metadata={"v": 1})
  with pytest.raises(cache.CacheError, match="v=1"):
    cache.read_array(path, metadata={"v": 2})


def test_array_file_wrong_total_size_leaves_nothing(tmp_path):
  """Chunks that do not fill the declared shape raise, and no file or temp file remains."""
  path = tmp_path / "a.bin"
  with pytest.raises(ValueError, match="needs 8"):
    cache.write_array(path, [np.zeros(4, np.uint8)], shape=(8,), dtype=np.uint8)
  assert list(tmp_path.iterdir()) == []


def test_array_file_interrupted_write_leaves_no_file(tmp_path):
  """An exception in the middle of writing (a killed generation) leaves no cache, no temp file."""

  def chunks():
    yield np.zeros(4, np.uint8)
    raise KeyboardInterrupt

  path = tmp_path / "a.bin"
  with pytest.raises(KeyboardInterrupt):
    cache.write_array(path, chunks(), shape=(8,), dtype=np.uint8)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_header", "empty", "extend"])
def test_array_file_damage_is_detected(tmp_path, damage):
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


def test_array_file_missing_file(tmp_path):
  """A missing file is a FileNotFoundError, not a CacheError."""
  with pytest.raises(FileNotFoundError):
    cache.read_array(tmp_path / "nothing.bin")


def test_dsprites_generated_subset_equals_renderer(built):
  """The cached first NUM images, unpacked, equal the renderer on the canonical factor order."""
  _, path, packed = built
  assert path.exists() and packed.shape == (NUM, 64, 8)
  np.testing.assert_array_equal(packed, _expected_packed())
  header = json.loads(path.read_bytes()[12 : cache.HEADER_BYTES].decode().rstrip())
  assert header["metadata"]["generator_version"] == dsprites.GENERATOR_VERSION


def test_dsprites_second_load_reuses_cache(built, monkeypatch):
  """A valid cache is loaded, not regenerated."""
  tmp_path, path, packed = built

  def fail(*args, **kwargs):
    raise AssertionError("regenerated a valid cache")

  monkeypatch.setattr(dsprites, "iter_packed_blocks", fail)
  np.testing.assert_array_equal(dsprites.load_or_generate(tmp_path, num_images=NUM), packed)


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "garbage"])
def test_dsprites_corrupt_cache_is_rebuilt_with_warning(built, damage, caplog):
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


def test_dsprites_stale_temp_file_is_removed(tmp_path, caplog):
  """A temp file with no lock holder (a killed generation's) is never read, and the next
  generation removes it, with a logged warning naming it; other files are left alone."""
  path = dsprites.cache_file(tmp_path, NUM)
  leftover = pathlib.Path(str(path) + cache.TEMP_MARKER + "dead")
  leftover.write_bytes(b"partial garbage")
  other = tmp_path / (dsprites.cache_file(tmp_path, NUM + 1).name + cache.TEMP_MARKER + "x")
  other.write_bytes(b"another file's temp")
  with caplog.at_level(logging.WARNING):
    packed = dsprites.load_or_generate(tmp_path, num_images=NUM)
  np.testing.assert_array_equal(packed, _expected_packed())
  assert not leftover.exists() and other.exists()
  assert any("removed 1 temporary file" in r.getMessage() for r in caplog.records)
  assert any(leftover.name in r.getMessage() for r in caplog.records)


def test_dsprites_temp_file_is_kept_while_its_generation_holds_the_lock(tmp_path, caplog):
  """A temp file whose writer holds the lock is live: a second caller waits (with a log line)
  and never touches it; once the writer finishes, the waiter loads that writer's file."""
  path = dsprites.cache_file(tmp_path, NUM)
  live = pathlib.Path(str(path) + cache.TEMP_MARKER + "live")
  result = {}

  def waiter():
    result["packed"] = dsprites.load_or_generate(tmp_path, num_images=NUM)

  with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
    with cache.generation_lock(path):
      live.write_bytes(b"being written")
      thread = threading.Thread(target=waiter)
      thread.start()
      _wait_for(lambda: any("waiting for another" in r.getMessage() for r in caplog.records))
      assert live.read_bytes() == b"being written"
      # Finish "our" generation as write_array would: the temp file becomes the cache.
      live.unlink()
      cache.write_array(
        path,
        [_expected_packed()],
        shape=(NUM, 64, 8),
        dtype=np.uint8,
        metadata={
          "name": "dsprites",
          "generator_version": dsprites.GENERATOR_VERSION,
          "num_images": NUM,
        },
      )
    thread.join(timeout=60)
  np.testing.assert_array_equal(result["packed"], _expected_packed())
  assert any("generated by another process" in r.getMessage() for r in caplog.records)
  assert not any(r.getMessage().startswith("wrote") for r in caplog.records)


def test_dsprites_threads_generate_once(tmp_path, monkeypatch):
  """Four concurrent callers on a missing cache: exactly one generation, same bytes for all."""
  original = dsprites.iter_packed_blocks
  calls = []

  def counted(*args, **kwargs):
    calls.append(1)
    time.sleep(0.2)  # keep the generation open while the others arrive
    yield from original(*args, **kwargs)

  monkeypatch.setattr(dsprites, "iter_packed_blocks", counted)
  results = [None] * 4

  def load(i):
    results[i] = dsprites.load_or_generate(tmp_path, num_images=NUM)

  threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert len(calls) == 1
  for packed in results:
    np.testing.assert_array_equal(packed, _expected_packed())


def test_dsprites_loaded_cache_survives_rebuild(built, caplog):
  """A rebuild while a reader holds the old array does not disturb that reader."""
  tmp_path, path, packed = built
  first = dsprites.load_or_generate(tmp_path, num_images=NUM)
  raw = bytearray(path.read_bytes())
  raw[cache.HEADER_BYTES + 99] ^= 0xFF
  path.write_bytes(bytes(raw))  # truncates and rewrites in place: a map would see it
  with caplog.at_level(logging.WARNING):
    second = dsprites.load_or_generate(tmp_path, num_images=NUM)
  assert any("rebuilding" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(first, packed)
  np.testing.assert_array_equal(second, packed)


def test_dsprites_killed_generation_then_rebuild(tmp_path, monkeypatch):
  """If generation dies midway only the (empty) lock file is left, and the next call builds a
  good cache."""
  original = dsprites.iter_packed_blocks

  def dying(*args, **kwargs):
    blocks = original(*args, **kwargs)
    yield next(blocks)
    raise KeyboardInterrupt

  monkeypatch.setattr(dsprites, "iter_packed_blocks", dying)
  with pytest.raises(KeyboardInterrupt):
    dsprites.load_or_generate(tmp_path, num_images=NUM)
  path = dsprites.cache_file(tmp_path, NUM)
  assert list(tmp_path.iterdir()) == [cache.lock_path(path)]  # no cache, no temp file
  monkeypatch.setattr(dsprites, "iter_packed_blocks", original)
  np.testing.assert_array_equal(
    dsprites.load_or_generate(tmp_path, num_images=NUM), _expected_packed()
  )


def test_dsprites_single_worker_gives_same_bytes(tmp_path):
  """Thread count does not change the output (blocks are written in order)."""
  one = dsprites.load_or_generate(tmp_path / "one", num_images=NUM, num_workers=1)
  three = dsprites.load_or_generate(tmp_path / "three", num_images=NUM, num_workers=3)
  np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("num", [0, -3, dsprites.NUM_IMAGES + 1])
def test_dsprites_rejects_bad_size(tmp_path, num):
  """num_images outside [1, 737280] is a ValueError, and nothing (not even a lock) is written."""
  with pytest.raises(ValueError, match="num_images"):
    dsprites.load_or_generate(tmp_path / "c", num_images=num)
  assert list(tmp_path.iterdir()) == []


def test_generation_lock_file_sits_next_to_the_cache_file(tmp_path):
  path = tmp_path / "sub" / "a.bits"
  with cache.generation_lock(path) as held:
    assert held and cache.lock_path(path) == tmp_path / "sub" / "a.bits.lock"
    assert cache.lock_path(path).exists()


def test_generation_lock_excludes_a_second_holder_until_released(tmp_path):
  """flock is per open file: a second attempt (even in this process) fails while held, and
  succeeds once the holder leaves its block, including by an exception."""
  path = tmp_path / "a.bits"
  with pytest.raises(RuntimeError), cache.generation_lock(path):
    with cache.generation_lock(path, blocking=False) as held:
      assert not held
    raise RuntimeError("generation failed")
  with cache.generation_lock(path, blocking=False) as held:
    assert held


def test_generation_lock_stale_removal_only_touches_this_files_temps(tmp_path):
  path = tmp_path / "a.bits"
  mine = [tmp_path / f"a.bits{cache.TEMP_MARKER}{i}" for i in range(2)]
  others = [
    tmp_path / "a.bits",
    tmp_path / "a.bits.lock",
    tmp_path / f"b.bits{cache.TEMP_MARKER}1",
  ]
  for f in mine + others:
    f.write_bytes(b"x")
  with cache.generation_lock(path):
    assert cache.remove_stale_temp_files(path) == sorted(mine)
  assert [f.exists() for f in mine + others] == [False, False, True, True, True]


def test_generation_lock_without_flock_generation_works_and_keeps_temp_files(
  tmp_path, monkeypatch, caplog
):
  """On a platform without fcntl (Windows) nothing is locked, so no temp file is deleted."""
  monkeypatch.setattr(cache, "fcntl", None)
  path = dsprites.cache_file(tmp_path, NUM)
  other = pathlib.Path(str(path) + cache.TEMP_MARKER + "maybe_live")
  other.write_bytes(b"x")
  with caplog.at_level(logging.WARNING):
    packed = dsprites.load_or_generate(tmp_path, num_images=NUM)
  np.testing.assert_array_equal(packed, _expected_packed())
  assert other.exists() and not cache.lock_path(path).exists()
  assert any("no file locking" in r.getMessage() for r in caplog.records)


# A child process for the cross-process tests: loads (or generates) the cache in argv[1] with
# argv[2] images and checks it against the renderer. PAUSE=<file>: pause the generation after
# its first block until <file> exists (touching <file>.started first). TRUNCATE=1: truncate the
# cache file after loading, then use the loaded images.
_CHILD = """
import os, pathlib, sys, time
import numpy as np
from absl import logging
from disentangle_jax.data import dsprites, ground_truth
logging.set_verbosity(logging.INFO)
folder, num = sys.argv[1], int(sys.argv[2])
pause = os.environ.get("PAUSE")
if pause:
  original = dsprites.iter_packed_blocks
  def paused(*args, **kwargs):
    blocks = original(*args, **kwargs)
    yield next(blocks)
    pathlib.Path(pause + ".started").touch()
    deadline = time.monotonic() + 60
    while not os.path.exists(pause) and time.monotonic() < deadline:
      time.sleep(0.01)
    yield from blocks
  dsprites.iter_packed_blocks = paused
packed = dsprites.load_or_generate(folder, num_images=num)
if os.environ.get("TRUNCATE"):
  os.truncate(dsprites.cache_file(folder, num), 0)
factors = ground_truth.index_to_factors(np.arange(num), dsprites.FACTOR_SIZES)
same = np.array_equal(dsprites.unpack_images(packed), dsprites.render_dsprites(factors))
print("SAME" if same else "DIFFERENT", flush=True)
"""


def _child(folder, num, log, **env):
  return subprocess.Popen(
    [sys.executable, "-c", _CHILD, str(folder), str(num)],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": str(REPO), **env},
    stdout=subprocess.PIPE,
    stderr=open(log, "w"),  # noqa: SIM115 (the child owns it)
    text=True,
  )


def _finish(process, timeout=120):
  try:
    out, _ = process.communicate(timeout=timeout)
  finally:
    process.kill()
  return process.returncode, out


def test_cross_process_second_process_waits_then_loads_the_first_ones_file(tmp_path):
  """Two processes need the same missing cache: the second logs that it waits, leaves the
  first one's live temp file alone, then loads the finished file without generating."""
  folder, pause = tmp_path / "cache", tmp_path / "go"
  path = dsprites.cache_file(folder, NUM)
  first = _child(folder, NUM, tmp_path / "first.log", PAUSE=str(pause))
  second = None
  try:
    _wait_for(lambda: pathlib.Path(str(pause) + ".started").exists())
    assert len(cache.leftover_temp_files(path)) == 1  # the first one's live temp file
    second = _child(folder, NUM, tmp_path / "second.log")
    _wait_for(lambda: "waiting for another process" in (tmp_path / "second.log").read_text())
    with cache.generation_lock(path, blocking=False) as held:
      assert not held
    assert len(cache.leftover_temp_files(path)) == 1
    pause.touch()
    assert _finish(first) == (0, "SAME\n")
    assert _finish(second) == (0, "SAME\n")
  finally:
    for process in (first, second):
      if process is not None:
        process.kill()
  log = (tmp_path / "second.log").read_text()
  assert "generated by another process" in log and "wrote" not in log
  assert "wrote" in (tmp_path / "first.log").read_text()
  assert cache.leftover_temp_files(path) == []


def test_cross_process_killed_generation_leaves_a_temp_file_the_next_one_removes(tmp_path, caplog):
  """SIGKILL mid-generation leaves a temp file (nothing can delete it then); the next
  generation finds no lock holder, removes it with a warning, and builds a good cache."""
  folder, pause = tmp_path / "cache", tmp_path / "go"
  path = dsprites.cache_file(folder, NUM)
  child = _child(folder, NUM, tmp_path / "child.log", PAUSE=str(pause))
  try:
    _wait_for(lambda: pathlib.Path(str(pause) + ".started").exists())
  finally:
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
  (leftover,) = cache.leftover_temp_files(path)
  assert not path.exists()
  with caplog.at_level(logging.WARNING):
    packed = dsprites.load_or_generate(folder, num_images=NUM)
  np.testing.assert_array_equal(packed, _expected_packed())
  assert not leftover.exists() and cache.leftover_temp_files(path) == []
  assert any(leftover.name in r.getMessage() for r in caplog.records)


def test_cross_process_truncating_the_cache_under_a_live_run_does_not_kill_it(tmp_path, built):
  """The loaded images live in process memory: truncating the file afterwards (a memory map
  would die of SIGBUS, exit code -7) changes nothing for the run."""
  folder, path, _ = built
  code, out = _finish(_child(folder, NUM, tmp_path / "child.log", TRUNCATE="1"))
  assert (code, out) == (0, "SAME\n"), (tmp_path / "child.log").read_text()
  assert path.stat().st_size == 0


def test_cache_folder_env_var_wins(tmp_path, monkeypatch):
  """$DISENTANGLE_JAX_CACHE sets the default folder, and the dSprites cache goes there."""
  monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "env"))
  assert cache.default_cache_dir() == tmp_path / "env"
  assert dsprites.cache_file(None, 5).parent == tmp_path / "env"
  dsprites.load_or_generate(num_images=5)
  assert dsprites.cache_file(None, 5).exists()


def test_cache_folder_home_fallback(tmp_path, monkeypatch):
  """Without the env var the folder is ~/.cache/disentangle_jax (HOME is redirected)."""
  monkeypatch.delenv(cache.CACHE_ENV_VAR, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert cache.default_cache_dir() == tmp_path / ".cache" / "disentangle_jax"


def test_cache_folder_explicit_folder_wins_over_env(tmp_path, monkeypatch):
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
