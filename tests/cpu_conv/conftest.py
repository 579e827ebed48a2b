"""The opt-in oneDNN path: its tests run where its wheels are installed (pip install -e
".[cpu-conv]") on Linux x86-64; elsewhere they are skipped with that reason."""

import importlib.metadata
import platform
import sys

import pytest


def _wheels_installed() -> bool:
  try:
    importlib.metadata.distribution("onednn-cpu-gomp")
    importlib.metadata.distribution("onednn-devel-cpu-gomp")
  except importlib.metadata.PackageNotFoundError:
    return False
  return True


SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"
needs_onednn = pytest.mark.skipif(
  not (SUPPORTED and _wheels_installed()),
  reason='needs Linux x86-64 and the oneDNN wheels: pip install -e ".[cpu-conv]"',
)
