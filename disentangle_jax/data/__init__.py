"""Ground-truth-factor datasets: dSprites (generated), its variants, real files, input pipeline."""

from disentangle_jax.data.cache import CACHE_ENV_VAR as CACHE_ENV_VAR
from disentangle_jax.data.cache import CacheError as CacheError
from disentangle_jax.data.cache import default_cache_dir as default_cache_dir
from disentangle_jax.data.dsprites import DSprites as DSprites
from disentangle_jax.data.dsprites import render_dsprites as render_dsprites
from disentangle_jax.data.ground_truth import GroundTruthData as GroundTruthData
from disentangle_jax.data.ground_truth import factors_to_index as factors_to_index
from disentangle_jax.data.ground_truth import index_to_factors as index_to_factors
from disentangle_jax.data.pipeline import ShardedBatchIterator as ShardedBatchIterator
from disentangle_jax.data.pipeline import epoch_permutation as epoch_permutation
from disentangle_jax.data.pipeline import host_batch as host_batch
from disentangle_jax.data.pipeline import make_data_mesh as make_data_mesh
from disentangle_jax.data.real import DatasetNotFoundError as DatasetNotFoundError
from disentangle_jax.data.real import DSpritesNpz as DSpritesNpz
from disentangle_jax.data.real import TfdsGroundTruth as TfdsGroundTruth
from disentangle_jax.data.registry import DATASET_NAMES as DATASET_NAMES
from disentangle_jax.data.registry import get_dataset as get_dataset
from disentangle_jax.data.table import TableGroundTruth as TableGroundTruth
from disentangle_jax.data.variants import ColorDSprites as ColorDSprites
from disentangle_jax.data.variants import NoisyDSprites as NoisyDSprites
