"""benchmarks/profile_step.py's two parsers: HLO instruction origins and trace durations."""

import gzip
import importlib
import json
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
profile_step = importlib.import_module("profile_step")  # benchmarks/ is not a package


def test_every_instruction_of_a_compiled_program_gets_its_shape_and_origin():
  """The product of a jitted function is found under its HLO name with its result shape and
  the JAX operation it came from; the program's parameters are found too."""
  fn = jax.jit(lambda a, b: jnp.tanh(a @ b))
  text = fn.lower(jnp.ones((8, 3)), jnp.ones((3, 5))).compile().as_text()
  origins = profile_step.hlo_origins(text)
  products = [(shape, origin) for shape, origin in origins.values() if "dot_general" in origin]
  assert products and all(shape.startswith("f32[8,5]") for shape, _ in products)
  assert any(shape.startswith("f32[8,3]") for shape, _ in origins.values())  # parameter 0


def test_durations_sum_complete_events_of_operations_only(tmp_path):
  """Complete ('X') events of one name are summed and counted; Python frames, runtime
  bookkeeping and other phases are left out."""
  events = [
    {"ph": "X", "name": "ynn_fusion.3", "dur": 10.0},
    {"ph": "X", "name": "ynn_fusion.3", "dur": 5.5},
    {"ph": "X", "name": "copy.1", "dur": 2.0},
    {"ph": "X", "name": "$profiler.py:307 trace", "dur": 99.0},
    {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 99.0},
    {"ph": "B", "name": "copy.1", "dur": 99.0},
  ]
  (tmp_path / "plugins").mkdir()
  with gzip.open(tmp_path / "plugins" / "perfetto_trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  assert profile_step.op_durations(str(tmp_path)) == {"ynn_fusion.3": (15.5, 2), "copy.1": (2.0, 1)}
