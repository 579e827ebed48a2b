"""Compiled CPU kernels that XLA:CPU lacks, called as XLA custom calls (`jax.ffi`)."""
