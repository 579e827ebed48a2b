"""Tests of the input pipeline: determinism, resumption, epochs, prefetching, sharding."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from disentangle_jax.data import dsprites, ground_truth, pipeline, variants

REPO = pathlib.Path(__file__).parents[2]


class Toy(ground_truth.GroundTruthData):
  """12 examples; the image holds the flat index plus rng noise, so batches are checkable."""

  factor_names = ("a", "b")
  factor_sizes = (3, 4)
  observation_shape = (2, 2, 1)

  def __init__(self, fail_at=None):
    self.calls = 0
    self.fail_at = fail_at

  def observations_from_factors(self, factors, rng=None):
    self.calls += 1
    if self.fail_at is not None and self.calls > self.fail_at:
      raise RuntimeError("broken source")
    index = self.factors_to_index(factors).astype(np.float32)
    noise = ground_truth.as_rng(rng, required=True).random(len(index), dtype=np.float32)
    return np.broadcast_to((index + noise)[:, None, None, None], (len(index), 2, 2, 1)).copy()


def _collect(dataset, **kwargs):
  with pipeline.ShardedBatchIterator(dataset, **kwargs) as batches:
    return [jax.tree.map(np.asarray, b) for b in batches]


def _assert_same(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second, strict=True):
    for key in ("image", "factors", "index"):
      np.testing.assert_array_equal(a[key], b[key])


def test_order_same_seed_same_batches():
  """Two iterators with one seed yield identical batches (images, factors, indices)."""
  noisy = variants.NoisyDSprites(dsprites.DSprites(source="render"))
  first = _collect(noisy, batch_size=8, seed=3, num_steps=4)
  second = _collect(noisy, batch_size=8, seed=3, num_steps=4)
  _assert_same(first, second)
  other = _collect(noisy, batch_size=8, seed=4, num_steps=4)
  assert not np.array_equal(first[0]["index"], other[0]["index"])


def test_order_resume_from_step():
  """start_step=s yields exactly the batches an uninterrupted run yields from step s on."""
  toy = Toy()
  full = _collect(toy, batch_size=5, seed=7, num_steps=9)
  resumed = _collect(toy, batch_size=5, seed=7, start_step=4, num_steps=5)
  _assert_same(full[4:], resumed)


def test_order_epochs_are_permutations():
  """Each epoch visits distinct examples (remainder dropped); epochs differ; keys agree."""
  toy = Toy()
  batches = _collect(toy, batch_size=5, seed=1, num_steps=6)  # 2 steps per epoch, 3 epochs
  epochs = [np.concatenate([b["index"] for b in batches[e : e + 2]]) for e in (0, 2, 4)]
  for e, indices in enumerate(epochs):
    assert len(set(indices)) == 10
    np.testing.assert_array_equal(indices, pipeline.epoch_permutation(12, 1, e)[:10])
  assert len({tuple(i) for i in epochs}) == 3
  for b in batches:
    np.testing.assert_array_equal(b["factors"], toy.index_to_factors(b["index"]))
    np.testing.assert_array_equal(np.floor(b["image"][:, 0, 0, 0]), b["index"])


def test_order_is_a_pure_function_of_seed_and_epoch():
  """The permutation depends only on (seed, epoch): recomputed equal, other inputs differ."""
  a = pipeline.epoch_permutation(1000, 5, 2)
  np.testing.assert_array_equal(a, pipeline.epoch_permutation(1000, 5, 2))
  assert not np.array_equal(a, pipeline.epoch_permutation(1000, 5, 3))
  assert not np.array_equal(a, pipeline.epoch_permutation(1000, 6, 2))
  np.testing.assert_array_equal(np.sort(a), np.arange(1000))


def test_order_iterator_equals_host_batch():
  """The iterator yields host_batch(step) for each step, as float32/int32 arrays."""
  toy = Toy()
  batches = _collect(toy, batch_size=4, seed=2, start_step=5, num_steps=3)
  for offset, batch in enumerate(batches):
    expected = pipeline.host_batch(toy, 5 + offset, batch_size=4, seed=2)
    for key in ("image", "factors", "index"):
      np.testing.assert_array_equal(batch[key], expected[key])
  assert batches[0]["image"].dtype == np.float32 and batches[0]["factors"].dtype == np.int32


def test_iterator_prefetches_in_background():
  """The background thread prepares `prefetch` batches before the consumer asks."""
  toy = Toy()
  with pipeline.ShardedBatchIterator(toy, batch_size=4, seed=0, prefetch=3) as batches:
    deadline = time.monotonic() + 10
    while toy.calls < 4 and time.monotonic() < deadline:  # 3 queued + 1 waiting to be queued
      time.sleep(0.01)
    assert toy.calls == 4
    next(batches)
    assert batches.step == 1


def test_iterator_close_stops_thread():
  """close() ends the producer thread; later next() raises StopIteration."""
  batches = pipeline.ShardedBatchIterator(Toy(), batch_size=4, seed=0)
  next(batches)
  batches.close()
  assert not batches._thread.is_alive()
  with pytest.raises(StopIteration):
    next(batches)


def test_iterator_producer_errors_reach_the_consumer():
  """An exception while preparing a batch is re-raised by next(), not swallowed."""
  batches = pipeline.ShardedBatchIterator(Toy(fail_at=2), batch_size=4, seed=0)
  next(batches)
  next(batches)
  with pytest.raises(RuntimeError, match="broken source"):
    next(batches)
  assert not batches._thread.is_alive()


def test_iterator_finite_run_ends():
  """num_steps batches, then StopIteration; the thread is gone."""
  batches = pipeline.ShardedBatchIterator(Toy(), batch_size=4, seed=0, num_steps=2)
  assert len(list(batches)) == 2
  assert not batches._thread.is_alive()


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"batch_size": 13}, "batch_size must be in"),
    ({"batch_size": 4, "seed": -1}, "seed"),
    ({"batch_size": 4, "start_step": -1}, "start_step"),
    ({"batch_size": 4, "prefetch": 0}, "prefetch"),
    ({"batch_size": 4, "axis_name": "model"}, "no data axis"),
  ],
)
def test_iterator_bad_arguments(kwargs, match):
  """Invalid sizes, seeds, steps and axis names raise ValueError naming the value."""
  kwargs.setdefault("seed", 0)
  mesh = pipeline.make_data_mesh() if "axis_name" in kwargs else None
  with pytest.raises(ValueError, match=match):
    pipeline.ShardedBatchIterator(Toy(), mesh=mesh, **kwargs)


def test_iterator_single_device_mesh():
  """On one device the batch is a NamedSharding over the 'data' axis of the helper's mesh."""
  mesh = pipeline.make_data_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
  with pipeline.ShardedBatchIterator(Toy(), batch_size=4, seed=0, mesh=mesh) as batches:
    batch = next(batches)
  assert batch["image"].sharding == jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec("data")
  )


_MULTI_DEVICE_SCRIPT = textwrap.dedent(
  """
  import json
  import jax
  import numpy as np
  from disentangle_jax.data import dsprites, pipeline

  dataset = dsprites.DSprites(source="render")
  mesh = pipeline.make_data_mesh()
  result = {"devices": jax.device_count(), "mesh": dict(mesh.shape)}
  with pipeline.ShardedBatchIterator(dataset, batch_size=32, seed=4, mesh=mesh, num_steps=2) as it:
    batches = list(it)
  expected = pipeline.host_batch(dataset, 1, batch_size=32, seed=4)
  image = batches[1]["image"]
  result["spec"] = list(image.sharding.spec)
  result["shard_shapes"] = sorted({tuple(s.data.shape) for s in image.addressable_shards})
  result["shard_devices"] = len({s.device for s in image.addressable_shards})
  result["shards_match"] = all(
    np.array_equal(np.asarray(s.data), expected["image"][s.index]) for s in image.addressable_shards
  )
  factors = np.asarray(batches[1]["factors"])
  result["factors_match"] = bool(np.array_equal(factors, expected["factors"]))
  try:
    pipeline.ShardedBatchIterator(dataset, batch_size=12, seed=0, mesh=mesh)
  except ValueError as e:
    result["error"] = str(e)
  print(json.dumps(result))
  """
)


def test_sharding_over_eight_simulated_devices():
  """With 8 CPU devices, batches are split 8-way along 'data' and shards hold the right rows."""
  env = dict(os.environ)
  env.update(
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
  )
  completed = subprocess.run(
    [sys.executable, "-c", _MULTI_DEVICE_SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(completed.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["mesh"] == {"data": 8}
  assert result["spec"] == ["data"]
  assert result["shard_shapes"] == [[4, 64, 64, 1]] and result["shard_devices"] == 8
  assert result["shards_match"] and result["factors_match"]
  assert "batch_size 12 does not divide by the 8 devices" in result["error"]
