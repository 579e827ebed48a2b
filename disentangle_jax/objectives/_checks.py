"""Trace-time argument checks shared by the objectives (raise ValueError naming the shapes)."""

import jax


def check_same_shape(**arrays: jax.Array) -> None:
  shapes = {name: jax.numpy.shape(a) for name, a in arrays.items()}
  if len(set(shapes.values())) > 1:
    listed = ", ".join(f"{name}{shape}" for name, shape in shapes.items())
    raise ValueError(f"Expected arrays of one shape, got {listed}.")


def check_rank(name: str, array: jax.Array, rank: int) -> None:
  if jax.numpy.ndim(array) != rank:
    raise ValueError(f"{name} must have rank {rank}, got shape {jax.numpy.shape(array)}.")


def check_batch(name: str, array: jax.Array, batch_size: int) -> None:
  if jax.numpy.ndim(array) < 1 or jax.numpy.shape(array)[0] != batch_size:
    raise ValueError(
      f"{name} must have leading (batch) size {batch_size}, got shape {jax.numpy.shape(array)}."
    )
