"""Opt-in: the conv nets' convolutions run by oneDNN on CPU (`config.model.conv_impl="onednn"`).

The default models use Flax's `nn.Conv` / `nn.ConvTranspose` everywhere. On a CPU, XLA runs the
strided and transposed convolutions of the field's conv nets slowly; `Conv` and `ConvTranspose`
here are drop-in replacements (same parameters and outputs) computed by oneDNN's primitives
through an XLA custom call, several times faster there (docs/benchmarks.md).

  pip install -e ".[cpu-conv]"      # the oneDNN wheels; the kernels build with g++ on first use
  python experiments/main.py --config=experiments/configs/beta_vae.py:model=conv \\
      --config.model.conv_impl=onednn --workdir=...

Nothing here builds or loads a kernel unless a model asks for it.
"""

from disentangle_jax.cpu_conv.layers import Conv as Conv
from disentangle_jax.cpu_conv.layers import ConvTranspose as ConvTranspose
from disentangle_jax.cpu_conv.layers import conv as conv
from disentangle_jax.cpu_conv.layers import conv_transpose as conv_transpose
from disentangle_jax.cpu_conv.onednn import Unavailable as Unavailable
from disentangle_jax.cpu_conv.onednn import available as available
from disentangle_jax.cpu_conv.onednn import load as load
