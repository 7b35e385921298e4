"""Shared fixtures: every layer test runs on NumPy, and again on CuPy when a GPU is present."""

import numpy as np
import pytest

from minifcn.backend import cupy_module, gpu_available

GPU = gpu_available()
requires_gpu = pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA device")


@pytest.fixture(
    params=["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, requires_gpu])],
)
def xp(request):
    """The array module under test: numpy always, cupy when a GPU is available."""
    return np if request.param == "numpy" else cupy_module()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
