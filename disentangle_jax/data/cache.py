"""On-disk cache of generated arrays: atomic writes, checked loads, one generation at a time.

File layout (one file per array):

  bytes 0..7       magic b"DJAXARR1"
  bytes 8..11      header length L (uint32, little-endian)
  bytes 12..12+L   JSON header: shape, dtype, sha256 of the payload, plus the caller's metadata
  bytes 4096..     the raw C-ordered payload

A file is written under a temporary name in the same folder, fsynced, then moved into place with
`os.replace`, so a reader sees either no file or a complete one; no file is ever rewritten in
place. Loading checks the magic, the metadata the caller expects (generator version, shape,
dtype) and the file size, reads the payload into process memory and checks its sha256 on those
same bytes. The array in memory is what was verified, and nothing done to the file afterwards (a
rebuild, an external truncation, which would kill a process reading a memory map with SIGBUS)
can change or crash a run that loaded it.

Generation is serialised by an exclusive `flock` on `<file>.lock` (`generation_lock`): a second
process waits for the first and then loads its file. Temporary files are only ever written under
that lock, so the lock's holder knows that any temporary file it finds is a leftover of a killed
generation, and removes it (`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from absl import logging

try:
  import fcntl
except ImportError:  # not POSIX (Windows): generations are not serialised there
  fcntl = None

CACHE_ENV_VAR = "DISENTANGLE_JAX_CACHE"
MAGIC = b"DJAXARR1"
HEADER_BYTES = 4096
TEMP_MARKER = ".tmp-"
LOCK_SUFFIX = ".lock"
_HASH_CHUNK = 16 << 20


class CacheError(Exception):
  """A cache file exists but is unusable (truncated, corrupted, stale); the message says why."""


def default_cache_dir() -> pathlib.Path:
  """The cache folder: `$DISENTANGLE_JAX_CACHE` if set, else `~/.cache/disentangle_jax`."""
  env = os.environ.get(CACHE_ENV_VAR)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path.home() / ".cache" / "disentangle_jax"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> pathlib.Path:
  """`cache_dir` as a Path, or `default_cache_dir()` when None."""
  return default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir).expanduser()


def write_array(
  path: str | os.PathLike,
  chunks: Iterable[np.ndarray],
  *,
  shape: tuple[int, ...],
  dtype: np.dtype | str,
  metadata: Mapping[str, Any] | None = None,
) -> None:
  """Streams `chunks` (concatenated along axis 0) to `path` atomically.

  The data go to a temporary file `<path>.tmp-*` that replaces `path` once complete. Call it while
  holding `generation_lock(path)` if other processes may write `path` too: the lock is what tells
  `remove_stale_temp_files` that a temporary file has no live writer.

  Args:
    path: destination file; its folder is created if needed.
    chunks: arrays of `dtype` whose row-major bytes, concatenated, form the array of `shape`.
    shape: shape of the whole array.
    dtype: its dtype.
    metadata: JSON-serialisable values stored in the header and checked by `read_array`.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  dtype = np.dtype(dtype)
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  fd, tmp_name = tempfile.mkstemp(prefix=path.name + TEMP_MARKER, dir=path.parent)
  try:
    digest = hashlib.sha256()
    written = 0
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared cache from other users.
    with os.fdopen(fd, "wb") as f:
      f.write(b"\0" * HEADER_BYTES)
      for chunk in chunks:
        data = np.ascontiguousarray(chunk, dtype=dtype).tobytes()
        digest.update(data)
        f.write(data)
        written += len(data)
      if written != expected:
        raise ValueError(f"{path}: chunks hold {written} bytes, shape {shape} needs {expected}.")
      header = {
        "shape": list(shape),
        "dtype": dtype.str,
        "sha256": digest.hexdigest(),
        "metadata": dict(metadata or {}),
      }
      f.seek(0)
      f.write(_encode_header(header))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_name, path)
  except BaseException:
    # Includes KeyboardInterrupt: never leave a half-written file behind us.
    pathlib.Path(tmp_name).unlink(missing_ok=True)
    raise
  _fsync_dir(path.parent)


def read_array(
  path: str | os.PathLike,
  *,
  metadata: Mapping[str, Any] | None = None,
  verify: bool = True,
) -> np.ndarray:
  """Reads a file written by `write_array` into memory, after checking it.

  The payload is read into process memory (not memory-mapped) and its sha256 is computed on
  those bytes, so the array returned is exactly what was verified, and later changes to the file
  (a rebuild, a truncation by another program) cannot alter it or crash the reader with SIGBUS.

  Args:
    path: the cache file.
    metadata: values the header must hold (e.g. generator version); any difference is a
      `CacheError`, so a cache from another version of the code is never used.
    verify: also check the payload's sha256 (~0.2 s per 360 MB on top of reading it).

  Returns:
    Read-only np.ndarray with the stored shape and dtype.

  Raises:
    FileNotFoundError: no file at `path`.
    CacheError: the file is truncated (also while being read), corrupted or from other settings.
  """
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    header = _decode_header(f.read(HEADER_BYTES), path)
    stored = header.get("metadata", {})
    for key, want in (metadata or {}).items():
      if stored.get(key) != want:
        raise CacheError(f"{path}: header has {key}={stored.get(key)!r}, expected {want!r}.")
    try:
      shape = tuple(int(s) for s in header["shape"])
      dtype = np.dtype(header["dtype"])
      sha = str(header["sha256"])
    except (KeyError, TypeError, ValueError) as e:
      raise CacheError(f"{path}: malformed header ({e}).") from e
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != HEADER_BYTES + nbytes:
      raise CacheError(f"{path}: file has {size} bytes, header promises {HEADER_BYTES + nbytes}.")
    payload = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(payload)
    digest = hashlib.sha256() if verify else None
    done = 0
    while done < nbytes:
      got = f.readinto(view[done : done + _HASH_CHUNK])
      if not got:
        raise CacheError(f"{path}: file ended after {HEADER_BYTES + done} bytes while reading it.")
      if digest is not None:
        digest.update(view[done : done + got])
      done += got
  if digest is not None and digest.hexdigest() != sha:
    raise CacheError(
      f"{path}: payload checksum {digest.hexdigest()[:12]}... != stored {sha[:12]}..."
    )
  array = payload.view(dtype).reshape(shape)
  array.flags.writeable = False
  return array


def leftover_temp_files(path: str | os.PathLike) -> list[pathlib.Path]:
  """Temporary files of writes of `path` (live ones included; `read_array` never reads them)."""
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    return []
  return sorted(path.parent.glob(path.name + TEMP_MARKER + "*"))


def lock_path(path: str | os.PathLike) -> pathlib.Path:
  """The lock file `<path>.lock` that serialises generations of `path` (kept after use)."""
  path = pathlib.Path(path)
  return path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def generation_lock(path: str | os.PathLike, *, blocking: bool = True) -> Iterator[bool]:
  """Holds an exclusive `flock` on `<path>.lock` for the `with` block.

  If another process holds it, logs that it waits for that process and blocks until it is free
  (with `blocking=False` it does not wait and yields False instead). The kernel releases the lock
  when its holder exits, however it dies, so a killed generation never blocks the next one. The
  lock file itself stays (removing it would let two processes lock two different files).
  Locks are per open file, so two threads of one process also exclude each other.

  Args:
    path: the cache file the lock protects.
    blocking: wait for the lock; if False, yield False when another process holds it.

  Yields:
    True when the lock is held, False (only with blocking=False) when it is not.
  """
  if fcntl is None:
    logging.warning(
      "no file locking on this platform: make sure no other process generates %s now", path
    )
    yield True
    return
  lock = lock_path(path)
  lock.parent.mkdir(parents=True, exist_ok=True)
  # Read-only is enough for flock, so users who may not write the file can still lock it.
  fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not blocking:
        yield False
        return
      logging.warning("waiting for another process that is generating %s (lock %s)", path, lock)
      start = time.perf_counter()
      fcntl.flock(fd, fcntl.LOCK_EX)
      logging.info("got the lock %s after %.1f s", lock, time.perf_counter() - start)
    yield True
  finally:
    os.close(fd)  # releases the lock


def remove_stale_temp_files(path: str | os.PathLike) -> list[pathlib.Path]:
  """Deletes the temporary files that killed writes of `path` left behind; returns them.

  Call only while holding `generation_lock(path)`: temporary files are written under that lock,
  so while it is held none of them can belong to a live generation.
  """
  if fcntl is None:
    # Without locks a temporary file may belong to a live generation: name them, keep them.
    leftovers = leftover_temp_files(path)
    if leftovers:
      logging.warning(
        "temporary files of %s (delete them when no process is generating it): %s",
        path,
        ", ".join(p.name for p in leftovers),
      )
    return []
  removed = []
  for leftover in leftover_temp_files(path):
    try:
      leftover.unlink()
    except FileNotFoundError:
      continue
    removed.append(leftover)
  if removed:
    logging.warning(
      "removed %d temporary file(s) of interrupted generations of %s: %s",
      len(removed),
      path,
      ", ".join(p.name for p in removed),
    )
  return removed


def _encode_header(header: dict[str, Any]) -> bytes:
  body = json.dumps(header, sort_keys=True).encode("utf-8")
  if len(MAGIC) + 4 + len(body) > HEADER_BYTES:
    raise ValueError(f"cache header is {len(body)} bytes, more than fits in {HEADER_BYTES}.")
  head = MAGIC + struct.pack("<I", len(body)) + body
  return head + b" " * (HEADER_BYTES - len(head))


def _decode_header(head: bytes, path: pathlib.Path) -> dict[str, Any]:
  if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
    raise CacheError(f"{path}: not a disentangle_jax cache file (bad magic or truncated header).")
  (length,) = struct.unpack("<I", head[len(MAGIC) : len(MAGIC) + 4])
  body = head[len(MAGIC) + 4 : len(MAGIC) + 4 + length]
  if length > HEADER_BYTES - len(MAGIC) - 4 or len(body) != length:
    raise CacheError(f"{path}: header length {length} is inconsistent.")
  try:
    header = json.loads(body.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CacheError(f"{path}: header is not valid JSON ({e}).") from e
  if not isinstance(header, dict):
    raise CacheError(f"{path}: header is not a JSON object.")
  return header


def _fsync_dir(folder: pathlib.Path) -> None:
  """Makes the rename durable; some file systems do not support it, which is harmless."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    logging.debug("fsync of folder %s not supported", folder)
  finally:
    os.close(fd)
