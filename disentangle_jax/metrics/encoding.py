"""The whole dataset encoded once: posteriors, categorical codes, and codes looked up by factors.

Every metric needs codes of observations drawn from the dataset. When the observations are a
deterministic function of the factors (dSprites and the other full grids without random colour
or noise), the code of any factor combination is a row of the whole-dataset encoding that Chen
et al.'s MIG and the ELBO decomposition need anyway. A `CodeTable` holds those rows; handed to a
metric in place of a representation function, it replaces rendering and encoding by indexing:
the same codes, in the same order, from the same random stream, without running the encoder
again (disentanglement_lib's default sizes encode about 3 million images besides the dataset).

An encoder may also return the codes of categorical latents (JointVAE): integer codes [B, C]
(each categorical's argmax), or a sequence of C logits arrays [B, V_c]. They become C more
latent columns, discrete ones: the binned metrics (disentanglement_lib's MIG, modularity) do not
bin them, and Chen et al.'s MIG takes their mutual information with each factor from counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from absl import logging

from disentangle_jax.data.ground_truth import GroundTruthData, RngLike, as_rng

EncodeFn = Callable[[np.ndarray], tuple]
"""images float32 [B, H, W, C] -> (mean [B, K], log_var [B, K]) of the Gaussian posterior, or
(mean, log_var, discrete) with the categorical codes: int [B, C], or C logits arrays [B, V_c]."""


class Encoding(NamedTuple):
  """Posterior parameters of every example of a dataset, in index order.

  Attributes:
    mean: float32 [N, K] posterior means.
    log_var: float32 [N, K] posterior log-variances.
    factors: int64 [N, F] the factors of each example.
    discrete: int64 [N, C] categorical codes (argmax), or None.
  """

  mean: np.ndarray
  log_var: np.ndarray
  factors: np.ndarray
  discrete: np.ndarray | None = None

  @property
  def codes(self) -> np.ndarray:
    """float64 [N, K + C]: the means, then the categorical codes as numbers."""
    return join_codes(self.mean, self.discrete)

  @property
  def num_discrete(self) -> int:
    """C, the number of categorical columns (the last C of `codes`)."""
    return 0 if self.discrete is None else self.discrete.shape[1]


class CodeTable(NamedTuple):
  """The code of every example of a dataset whose observations are deterministic.

  Passed to a metric instead of a representation function: codes are looked up by the flat
  index of the factors (`GroundTruthData.factors_to_index`) instead of rendered and encoded.

  Attributes:
    codes: [N, K] codes (posterior means, then categorical codes), N = dataset.num_examples.
  """

  codes: np.ndarray

  def lookup(self, dataset: GroundTruthData, factors: np.ndarray) -> np.ndarray:
    """float64 [B, K]: the codes of the examples with the given factors [B, F]."""
    if len(self.codes) != dataset.num_examples:
      raise ValueError(
        f"the code table holds {len(self.codes)} examples; the dataset has {dataset.num_examples}."
      )
    return np.asarray(self.codes[dataset.factors_to_index(factors)], np.float64)


def as_discrete_codes(discrete: Any, batch: int) -> np.ndarray:
  """Integer codes [B, C] from int codes [B, C] or from a sequence of logits arrays [B, V_c]."""
  if isinstance(discrete, list | tuple):
    parts = [np.asarray(logits) for logits in discrete]
    if any(p.ndim != 2 or p.shape[0] != batch for p in parts):
      raise ValueError(
        f"categorical logits must be arrays [B, V] with B = {batch}; got shapes "
        f"{[p.shape for p in parts]}."
      )
    return np.stack([np.argmax(p, axis=1) for p in parts], axis=1).astype(np.int64)
  codes = np.asarray(discrete)
  if codes.ndim != 2 or codes.shape[0] != batch or not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(
      f"categorical codes must be integers [B, C] with B = {batch} (or a list of logits arrays "
      f"[B, V]); got dtype {codes.dtype}, shape {codes.shape}."
    )
  return codes.astype(np.int64)


def split_encoder_output(
  output: Any, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(mean [B, K], log_var [B, K], discrete [B, C] or None) from an encoder's output, checked.

  Raises:
    ValueError: naming the shapes, when the output is not (mean, log_var[, discrete]) with
      mean and log_var of one shape [B, K].
  """
  if not isinstance(output, list | tuple) or len(output) not in (2, 3):
    raise ValueError(
      "encode_fn must return (mean [B, K], log_var [B, K]) or (mean, log_var, discrete codes); "
      f"got {type(output).__name__} of length {len(output) if hasattr(output, '__len__') else '?'}."
    )
  mean, log_var = np.asarray(output[0]), np.asarray(output[1])
  if mean.ndim != 2 or mean.shape != log_var.shape or mean.shape[0] != batch:
    raise ValueError(
      f"encode_fn returned mean {mean.shape} and log_var {log_var.shape} for {batch} images; "
      f"both must be [B, K] with B = {batch}."
    )
  discrete = None if len(output) == 2 or output[2] is None else as_discrete_codes(output[2], batch)
  return mean, log_var, discrete


def join_codes(mean: np.ndarray, discrete: np.ndarray | None) -> np.ndarray:
  """float64 [..., K + C]: the means followed by the categorical codes (or the means alone)."""
  mean = np.asarray(mean, np.float64)
  if discrete is None:
    return mean
  return np.concatenate([mean, np.asarray(discrete, np.float64)], axis=-1)


def encode_all(
  dataset: GroundTruthData,
  encode_fn: EncodeFn,
  rng: RngLike = None,
  *,
  batch_size: int = 2048,
  log_every_seconds: float = 30.0,
) -> Encoding:
  """Encodes every example of the dataset once, in index order.

  The first batch is checked before the rest is encoded: an encoder whose mean and log_var
  differ in shape fails at once with a ValueError naming both shapes.

  Args:
    dataset: the ground-truth dataset (all `num_examples` examples are encoded).
    encode_fn: images [B, H, W, C] -> (mean [B, K], log_var [B, K][, discrete]).
    rng: generator for datasets with random observations (colour, noise); ignored otherwise.
    batch_size: images per call.
    log_every_seconds: interval of the progress line.

  Returns:
    `Encoding` (mean float32 [N, K], log_var float32 [N, K], factors int64 [N, F], discrete
    int64 [N, C] or None).
  """
  rng = as_rng(rng if rng is not None else 0)
  num = dataset.num_examples
  means, log_vars, discretes = [], [], []
  start_time = last_log = time.perf_counter()
  for start in range(0, num, batch_size):
    images = dataset.observations_from_indices(np.arange(start, min(start + batch_size, num)), rng)
    mean, log_var, discrete = split_encoder_output(encode_fn(images), len(images))
    if means and (mean.shape[1] != means[0].shape[1] or (discrete is None) != (not discretes)):
      raise ValueError(
        f"encode_fn changed its output at image {start}: mean {mean.shape}, categorical codes "
        f"{None if discrete is None else discrete.shape}."
      )
    means.append(mean.astype(np.float32))
    log_vars.append(log_var.astype(np.float32))
    if discrete is not None:
      discretes.append(discrete)
    if time.perf_counter() - last_log > log_every_seconds:
      last_log = time.perf_counter()
      done = start + len(images)
      logging.info(
        "encoding the dataset: %d/%d (%.0f images/s)", done, num, done / (last_log - start_time)
      )
  factors = dataset.index_to_factors(np.arange(num))
  return Encoding(
    np.concatenate(means),
    np.concatenate(log_vars),
    factors,
    np.concatenate(discretes) if discretes else None,
  )


def as_encoding(encoded: Encoding | Sequence[np.ndarray]) -> Encoding:
  """An `Encoding` from itself or from a tuple (mean, log_var, factors[, discrete])."""
  if isinstance(encoded, Encoding):
    return encoded
  if len(encoded) not in (3, 4):
    raise ValueError(
      f"encoded must be (mean, log_var, factors[, discrete]); got {len(encoded)} arrays."
    )
  mean, log_var, factors = (np.asarray(a) for a in encoded[:3])
  discrete = None if len(encoded) == 3 or encoded[3] is None else np.asarray(encoded[3], np.int64)
  if mean.ndim != 2 or mean.shape != log_var.shape or factors.shape[:1] != mean.shape[:1]:
    raise ValueError(
      f"encoded needs mean, log_var [N, K] and factors [N, F]; got {mean.shape}, "
      f"{log_var.shape}, {factors.shape}."
    )
  if discrete is not None and (discrete.ndim != 2 or len(discrete) != len(mean)):
    raise ValueError(f"encoded discrete codes must be [N, C]; got {discrete.shape}.")
  return Encoding(mean, log_var, factors, discrete)


def observations_are_deterministic(dataset: GroundTruthData, *, num_probe: int = 16) -> bool:
  """Whether the dataset renders the same observation for the same factors whatever the rng.

  Renders `num_probe` examples (spread over the index range) with two different generators
  and compares them exactly. Datasets with random colour, noise or nuisance instances differ
  with overwhelming probability; deterministic ones are equal.
  """
  num = dataset.num_examples
  indices = np.unique(np.linspace(0, num - 1, min(num_probe, num)).astype(np.int64))
  first = dataset.observations_from_indices(indices, np.random.default_rng(1))
  second = dataset.observations_from_indices(indices, np.random.default_rng(2))
  return bool(np.array_equal(first, second))
