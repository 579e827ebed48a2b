"""Ground-truth datasets stored as a table of examples with factor labels (files, tfds).

Stored datasets list their examples in any order (tfds shuffles records when it writes them), and
may hold several examples per factor combination (smallNORB has 5 or 10 object instances per
category, elevation, azimuth and lighting). `TableGroundTruth` indexes the label table once so that
a batch of factors maps to stored rows with one gather; where a combination has several rows, one
is drawn per observation with the caller's rng, as disentanglement_lib does for smallNORB.

References:
  Locatello et al., `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations <https://arxiv.org/abs/1811.12359>`_, 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from disentangle_jax.data import ground_truth

FetchFn = Callable[[np.ndarray], np.ndarray]


class TableGroundTruth(ground_truth.GroundTruthData):
  """A ground-truth dataset backed by stored rows and their factor labels.

  Args:
    labels: integer array [N, F], the factor class indices of each stored row.
    factor_names: F names.
    fetch: function mapping stored row numbers int64 [B] to float32 observations
      [B, *observation_shape] in [0, 1].
    observation_shape: (H, W, C) of one observation.
    factor_sizes: number of values of each factor; by default max(label) + 1 per factor.
    expected_sizes: sizes the dataset is documented to have; a mismatch is logged, not an error,
      so that small test fixtures and sub-splits work.
    name: dataset name for messages.
  """

  def __init__(
    self,
    labels: np.ndarray,
    factor_names: Sequence[str],
    fetch: FetchFn,
    observation_shape: tuple[int, int, int],
    *,
    factor_sizes: Sequence[int] | None = None,
    expected_sizes: Sequence[int] | None = None,
    name: str = "dataset",
  ):
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(factor_names) or labels.shape[0] == 0:
      raise ValueError(
        f"{name}: labels must have shape [N > 0, {len(factor_names)}] for factors "
        f"{tuple(factor_names)}, got {labels.shape}."
      )
    if factor_sizes is None:
      factor_sizes = labels.max(axis=0) + 1
    self.factor_names = tuple(factor_names)
    self.factor_sizes = tuple(int(s) for s in factor_sizes)
    self.observation_shape = tuple(observation_shape)
    self.name = name
    self._fetch = fetch
    if expected_sizes is not None and tuple(expected_sizes) != self.factor_sizes:
      logging.warning(
        "%s: factor sizes %s differ from the published %s; using the sizes found in the data.",
        name,
        self.factor_sizes,
        tuple(expected_sizes),
      )
    labels = ground_truth.check_factors(labels, self.factor_sizes, self.factor_names)
    cells = ground_truth.factors_to_index(labels, self.factor_sizes)
    counts = np.bincount(cells, minlength=self.num_examples)
    if (counts == 0).any():
      missing = np.flatnonzero(counts == 0)
      example = ground_truth.index_to_factors(missing[:1], self.factor_sizes)[0]
      described = ", ".join(f"{n}={v}" for n, v in zip(self.factor_names, example, strict=True))
      raise ValueError(
        f"{name}: the factor grid {self.factor_sizes} is incomplete: {missing.size} of "
        f"{self.num_examples} combinations have no example (e.g. {described}). Use a split that "
        "holds the whole dataset."
      )
    # Rows sorted by grid cell; cell g owns rows _order[_starts[g] : _starts[g] + _counts[g]].
    self._order = np.argsort(cells, kind="stable")
    self._counts = counts
    self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.num_rows = int(labels.shape[0])

  @property
  def examples_per_combination(self) -> tuple[int, int]:
    """(min, max) number of stored rows per factor combination."""
    return int(self._counts.min()), int(self._counts.max())

  def rows_from_factors(self, factors: np.ndarray, rng: ground_truth.RngLike = None) -> np.ndarray:
    """Stored row numbers for a batch of factors, drawing among duplicates with `rng`.

    Args:
      factors: integer array [B, F].
      rng: `np.random.Generator` or int seed; required when a combination has several rows.

    Returns:
      int64 [B].
    """
    cells = self.factors_to_index(factors)
    counts = self._counts[cells]
    offsets = np.zeros_like(cells)
    if (counts > 1).any():
      rng = ground_truth.as_rng(rng, required=True, what=f"{self.name}: choosing among instances")
      offsets = rng.integers(0, counts)
    return self._order[self._starts[cells] + offsets]

  def observations_from_factors(
    self, factors: np.ndarray, rng: ground_truth.RngLike = None
  ) -> np.ndarray:
    """Stored observations for a batch of factors.

    Args:
      factors: integer array [B, F].
      rng: `np.random.Generator` or int seed; required when a combination has several rows.

    Returns:
      float32 [B, *observation_shape] in [0, 1].
    """
    rows = self.rows_from_factors(factors, rng)
    images = np.asarray(self._fetch(rows), dtype=np.float32)
    expected = (rows.shape[0], *self.observation_shape)
    if images.shape != expected:
      raise ValueError(f"{self.name}: fetched images have shape {images.shape}, want {expected}.")
    return images
