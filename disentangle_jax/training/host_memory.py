"""Whether glibc's malloc gives XLA:CPU's large per-step buffers transparent huge pages.

XLA:CPU allocates a step's temporary buffer afresh on every execution; above glibc's mmap
threshold malloc maps it from the OS and unmaps it when freed, so every step pays one page fault
per 4 KiB page it touches (8,400 faults per step for the MLP at batch 64 on a 2-core CPU,
50,000 at batch 2048). glibc 2.35+ can back that memory with 2 MiB huge pages where the kernel's
mode is "madvise", which made the MLP step 9-21% faster on that CPU (docs/benchmarks.md). glibc
reads the setting when the process starts, so it is the user's choice, in the environment:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python experiments/main.py ...

`describe()` is the log line that says whether it is on.
"""

from __future__ import annotations

import os

TUNABLE = "glibc.malloc.hugetlb"
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


def describe(environ=None) -> str:
  """One line for the log: whether malloc's large buffers get huge pages, and how to ask."""
  tunables = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
  values = [
    value for name, _, value in (t.partition("=") for t in tunables.split(":")) if name == TUNABLE
  ]
  if values and values[-1] not in ("", "0"):  # 1: transparent huge pages, 2: hugetlbfs pages
    return f"malloc with huge pages (GLIBC_TUNABLES={tunables})"
  mode = thp_mode()
  hint = (
    " (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 can speed up XLA:CPU)" if mode == "madvise" else ""
  )
  return f"default malloc, kernel huge page mode {mode}{hint}"
