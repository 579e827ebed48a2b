"""Training: configs, the sharded train step, checkpoints and the loop."""

from disentangle_jax.training.config import base_config as base_config
from disentangle_jax.training.config import isa_layout_string as isa_layout_string
from disentangle_jax.training.config import parse_arg as parse_arg
from disentangle_jax.training.loop import NonFiniteError as NonFiniteError
from disentangle_jax.training.loop import evaluate_checkpoint as evaluate_checkpoint
from disentangle_jax.training.loop import train_and_evaluate as train_and_evaluate
from disentangle_jax.training.train_step import TrainState as TrainState
from disentangle_jax.training.train_step import make_train_step as make_train_step
