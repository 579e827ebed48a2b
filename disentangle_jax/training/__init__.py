"""Training: configs, the train state and step, checkpoints, the loop and evaluation."""

from disentangle_jax.training.config import ConfigError as ConfigError
from disentangle_jax.training.config import base_config as base_config
from disentangle_jax.training.config import isa_layout_string as isa_layout_string
from disentangle_jax.training.config import parse_arg as parse_arg
from disentangle_jax.training.evaluate import evaluate_checkpoint as evaluate_checkpoint
from disentangle_jax.training.loop import Interrupted as Interrupted
from disentangle_jax.training.loop import NonFiniteError as NonFiniteError
from disentangle_jax.training.loop import WorkdirError as WorkdirError
from disentangle_jax.training.loop import train as train
from disentangle_jax.training.loop import train_and_evaluate as train_and_evaluate
from disentangle_jax.training.loop import train_run as train_run
from disentangle_jax.training.train_step import Trainer as Trainer
from disentangle_jax.training.train_step import TrainState as TrainState
from disentangle_jax.training.train_step import build_trainer as build_trainer
from disentangle_jax.training.train_step import make_train_step as make_train_step
