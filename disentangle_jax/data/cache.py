"""On-disk cache of generated arrays: atomic writes, checked loads, memory-mapped reads.

File layout (one file per array):

  bytes 0..7       magic b"DJAXARR1"
  bytes 8..11      header length L (uint32, little-endian)
  bytes 12..12+L   JSON header: shape, dtype, sha256 of the payload, plus the caller's metadata
  bytes 4096..     the raw C-ordered payload

A file is written under a temporary name in the same folder, fsynced, then moved into place with
`os.replace`, so a reader sees either no file or a complete one. Loading checks the magic, the
metadata the caller expects (generator version, shape, dtype), the file size and the payload's
sha256, and returns a read-only `np.memmap`: the payload is never held in memory twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from absl import logging

CACHE_ENV_VAR = "DISENTANGLE_JAX_CACHE"
MAGIC = b"DJAXARR1"
HEADER_BYTES = 4096
TEMP_MARKER = ".tmp-"
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
) -> np.memmap:
  """Opens a file written by `write_array` as a read-only memory map, after checking it.

  Args:
    path: the cache file.
    metadata: values the header must hold (e.g. generator version); any difference is a
      `CacheError`, so a cache from another version of the code is never used.
    verify: also check the payload's sha256 (reads the whole file once, ~0.2 s per 360 MB).

  Returns:
    np.memmap with the stored shape and dtype.

  Raises:
    FileNotFoundError: no file at `path`.
    CacheError: the file is truncated, corrupted or from other settings.
  """
  path = pathlib.Path(path)
  size = path.stat().st_size
  with open(path, "rb") as f:
    head = f.read(HEADER_BYTES)
  header = _decode_header(head, path)
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
  if verify:
    actual = file_sha256(path, offset=HEADER_BYTES)
    if actual != sha:
      raise CacheError(f"{path}: payload checksum {actual[:12]}... != stored {sha[:12]}...")
  return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=shape)


def file_sha256(path: str | os.PathLike, *, offset: int = 0) -> str:
  """sha256 hex digest of a file's bytes from `offset`, read in 16 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    f.seek(offset)
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def leftover_temp_files(path: str | os.PathLike) -> list[pathlib.Path]:
  """Temporary files that interrupted writes of `path` left behind (never read by `read_array`)."""
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    return []
  return sorted(path.parent.glob(path.name + TEMP_MARKER + "*"))


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
