"""dSprites held on the accelerator as packed bits; each batch gathered and unpacked in the step.

The whole set is 360 MiB bit-packed ([737280, 64, 8] uint8). With it on the device, the host
sends each step only the batch's example indices (from the same shuffled order as the host
pipeline), and the jitted step gathers their rows and unpacks the bits: no host rendering,
unpacking or image transfer per step. Same batches, same images as the host pipeline.

  packed = place_packed(dataset, mesh)               # once, replicated on every device
  step = with_images_from_packed(train_step)         # (state, batch, rng) with batch["packed"]
  batch = {"index": ..., "packed": packed}           # the loop adds the packed set to each batch
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PACKED_KEY = "packed"


def supports(dataset) -> bool:
  """Whether the dataset can live on the device as packed bits (dSprites)."""
  return hasattr(dataset, "packed_images")


def place_packed(dataset, mesh: Mesh) -> jax.Array:
  """The dataset's packed images [N, H, W/8] uint8, replicated on every device of the mesh."""
  return jax.device_put(dataset.packed_images(), NamedSharding(mesh, PartitionSpec()))


def images_from_packed(packed: jax.Array, index: jax.Array) -> jax.Array:
  """Rows `index` of the packed set as float32 images.

  Args:
    packed: uint8 [N, H, W/8], bits packed big-endian along each row (np.packbits).
    index: int32 [B] example indices.

  Returns:
    float32 [B, H, W, 1] in {0, 1}.
  """
  return jnp.unpackbits(packed[index], axis=-1)[..., None].astype(jnp.float32)


def with_images_from_packed(train_step):
  """Wraps a step so that a batch of {"index", "packed", ...} gets its "image" on the device."""

  def step(state, batch, rng):
    batch = dict(batch)
    batch["image"] = images_from_packed(batch.pop(PACKED_KEY), batch["index"])
    return train_step(state, batch, rng)

  return step
