"""Weight initialisers. All return NumPy float32 arrays unless a dtype is given."""

from __future__ import annotations

import numpy as np


def as_generator(rng) -> np.random.Generator:
    """``rng`` may be None, an int seed, or a ``numpy.random.Generator``."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def kaiming_normal(shape, fan_in: int, rng=None, dtype=np.float32):
    """He et al. (2015) initialisation for layers followed by ReLU: N(0, 2 / fan_in)."""
    std = np.sqrt(2.0 / fan_in)
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)


def bilinear_kernel(kernel_size: int, dtype=np.float32):
    """The 2-D bilinear interpolation filter used by FCN's upsampling layers.

    factor = (k + 1) // 2; center = factor - 1 for odd k, factor - 0.5 for even k;
    w[i, j] = (1 - |i - center| / factor) * (1 - |j - center| / factor).

    For k = 4 (2x upsampling) the 1-D profile is [0.25, 0.75, 0.75, 0.25].

    Returns:
        (k, k) array.
    """
    k = kernel_size
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    profile = 1 - np.abs(np.arange(k) - center) / factor
    return np.outer(profile, profile).astype(dtype)


def bilinear_weight(in_channels: int, out_channels: int, kernel_size: int, dtype=np.float32):
    """A ConvTranspose2d weight (in, out, k, k) that upsamples each channel on its own.

    The bilinear kernel sits on the channel diagonal (input channel c feeds
    output channel c); every other entry is zero.
    """
    w = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=dtype)
    kernel = bilinear_kernel(kernel_size, dtype)
    for c in range(min(in_channels, out_channels)):
        w[c, c] = kernel
    return w
