"""The parsers of benchmarks/profile_step.py (HLO origins, trace durations) and ab_step.py."""

import gzip
import importlib
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
profile_step = importlib.import_module("profile_step")  # benchmarks/ is not a package
ab_step = importlib.import_module("ab_step")


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


def test_variant_settings_are_typed_like_the_constant_they_replace():
  """Constants take their module's type, XLA options keep strings and become booleans."""
  name, constants, options = ab_step.parse_variant(
    "v:conv_lowering.NETWORK_CHUNK=8,xla.xla_cpu_prefer_vector_width=512,xla.flag=false"
  )
  assert name == "v"
  assert constants == {(ab_step.conv_lowering, "NETWORK_CHUNK"): 8}
  assert options == {"xla_cpu_prefer_vector_width": "512", "flag": False}
  assert ab_step.parse_variant("base") == ("base", {}, {})


@pytest.mark.parametrize(
  "spec, message",
  [
    ("v:conv_lowering.NO_SUCH=1", "has no constant 'NO_SUCH'"),
    ("v:numpy.pi=3", "use module.CONSTANT=value"),
    ("v:conv_lowering.NETWORK_CHUNK", "use module.CONSTANT=value"),
  ],
)
def test_bad_variant_settings_name_the_problem(spec, message):
  with pytest.raises(ValueError, match=message):
    ab_step.parse_variant(spec)
