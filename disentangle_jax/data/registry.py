"""`get_dataset(name, **kwargs)`: every ground-truth dataset behind one name-based factory.

Names:
  dsprites, color_dsprites, noisy_dsprites   generated dSprites and its variants (cached on disk)
  dsprites_npz                               the official dSprites npz file
  tfds:dsprites, tfds:shapes3d, tfds:smallnorb   tensorflow-datasets builders prepared locally
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from disentangle_jax.data import dsprites, ground_truth, real, variants

_FACTORIES: dict[str, Callable[..., ground_truth.GroundTruthData]] = {
  "dsprites": dsprites.DSprites,
  "color_dsprites": variants.ColorDSprites,
  "noisy_dsprites": variants.NoisyDSprites,
  "dsprites_npz": real.DSpritesNpz,
  **{f"tfds:{name}": functools.partial(real.TfdsGroundTruth, name) for name in real.TFDS_SPECS},
}

DATASET_NAMES = tuple(_FACTORIES)


def get_dataset(name: str, **kwargs) -> ground_truth.GroundTruthData:
  """Builds the ground-truth dataset called `name`.

  Args:
    name: one of `DATASET_NAMES`.
    **kwargs: passed to the dataset's constructor: `DSprites(source, cache_dir, verify_cache)`,
      the variants (`base` or the DSprites arguments), `DSpritesNpz(path, cache_dir)`,
      `TfdsGroundTruth(data_dir, split)`.

  Returns:
    The dataset.

  Raises:
    ValueError: `name` is not a known dataset.
  """
  if name not in _FACTORIES:
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")
  return _FACTORIES[name](**kwargs)
