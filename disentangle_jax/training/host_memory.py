"""Transparent huge pages for XLA:CPU's per-step buffers, turned on by restarting the process.

XLA:CPU allocates a step's temporary buffer afresh on every execution. Above glibc's mmap
threshold (32 MiB at most) malloc maps it from the OS and unmaps it when it is freed, so every
step pays one page fault per 4 KiB page it touches. On a 2-core AMD EPYC that was 8,400 faults
per step for the MLP at batch 64 (a 33 MiB buffer) and 50,000 at batch 2048 (196 MiB).
glibc 2.35 and later can ask the kernel for 2 MiB transparent huge pages on the memory it maps
(the tunable `glibc.malloc.hugetlb=1`), which takes 512 times fewer faults. With it, the MLP
step ran 21% faster at batch 64 and 9% faster at batch 2048; the conv step, whose chunked
buffers stay small, was level at batch 64 and 6-7% faster at 256 and 2048
(`benchmarks/ab_huge_pages.py`, BUILD_NOTES).

glibc reads its tunables once, when the process starts, so `reexec_with_huge_pages` restarts
the process (same interpreter, same arguments) with the tunable added to GLIBC_TUNABLES.
`experiments/main.py` and the benchmarks call it first thing. It does nothing when the
environment already sets the tunable, off glibc or below 2.35, when the kernel's huge-page mode
is not "madvise" ("always" gives malloc's memory huge pages already, "never" none at all), or
with DISENTANGLE_JAX_HUGE_PAGES=0.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "DISENTANGLE_JAX_HUGE_PAGES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent huge page mode ("always", "madvise", "never"), None if unknown."""
  try:
    with open(path) as f:
      words = f.read().split()
  except OSError:
    return None
  chosen = [w.strip("[]") for w in words if w.startswith("[")]
  return chosen[0] if chosen else None


def huge_page_environ(
  environ: Mapping[str, str], libc: tuple[str, str], mode: str | None
) -> dict[str, str] | None:
  """The environment to restart the process with, or None when nothing needs to change.

  Args:
    environ: the current environment.
    libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").
    mode: the kernel's transparent huge page mode (`thp_mode`).

  Returns:
    `environ` with `glibc.malloc.hugetlb=1` appended to GLIBC_TUNABLES, or None: opted out
    (DISENTANGLE_JAX_HUGE_PAGES=0), not glibc >= 2.35, mode other than "madvise", or the
    tunable already set (to any value: the user's choice stands).
  """
  name, version = libc
  if environ.get(OPT_OUT, "1") == "0" or name != "glibc" or mode != "madvise":
    return None
  try:
    major, minor = (int(part) for part in version.split(".")[:2])
  except ValueError:
    return None
  if (major, minor) < (2, 35):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if any(item.split("=")[0] == TUNABLE for item in tunables.split(":")):
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def reexec_with_huge_pages() -> None:
  """Restarts this process with huge-page malloc if `huge_page_environ` says so; else returns.

  Call it before any work that must not run twice: the restarted process runs from the top.
  """
  environ = huge_page_environ(os.environ, platform.libc_ver(), thp_mode())
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def describe() -> str:
  """One line for the log: whether malloc's large buffers get huge pages, and why."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  settings = [item.partition("=") for item in tunables.split(":")]
  values = [value for name, _, value in settings if name == TUNABLE]
  if values and values[-1] not in ("", "0"):  # 1: madvise, 2: hugetlbfs pages
    return f"malloc with transparent huge pages (GLIBC_TUNABLES={tunables})"
  return f"default malloc (kernel huge page mode {thp_mode()}, GLIBC_TUNABLES={tunables!r})"
