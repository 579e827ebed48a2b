"""Shared pytest set-up: tests run on the CPU, single-threaded XLA is not forced.

Compiled programs are shared between tests (and with the processes tests start) through a
persistent compilation cache in a temporary directory removed at exit: many tests train the same
small models, and recompiling their train and evaluation steps was most of the suite's time.
"""

import atexit
import os
import shutil
import tempfile

# Tests never use an accelerator, even where one is present: results must match CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="disentangle_jax_test_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
