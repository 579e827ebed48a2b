"""Flax models: encoders, decoders and FactorVAE's discriminator."""

from disentangle_jax.models import layers as layers
from disentangle_jax.models import registry as registry
from disentangle_jax.models.decoders import ConvDecoder as ConvDecoder
from disentangle_jax.models.decoders import MLPDecoder as MLPDecoder
from disentangle_jax.models.discriminator import FactorVAEDiscriminator as FactorVAEDiscriminator
from disentangle_jax.models.encoders import ConvEncoder as ConvEncoder
from disentangle_jax.models.encoders import EncoderOutput as EncoderOutput
from disentangle_jax.models.encoders import MLPEncoder as MLPEncoder
from disentangle_jax.models.registry import count_params as count_params
from disentangle_jax.models.registry import make_decoder as make_decoder
from disentangle_jax.models.registry import make_encoder as make_encoder
