"""Shared pytest set-up: tests run on the CPU, single-threaded XLA is not forced."""

import os

# Tests never use an accelerator, even where one is present: results must match CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
