"""Shared fixtures: every test that takes ``xp`` runs on NumPy and again on the device.

The device is real CuPy when a GPU answers; otherwise the strict CuPy stand-in
in ``tests/support/fake_cupy.py`` plays CuPy (NumPy underneath, but it refuses
implicit host/device mixing, counts syncs and runs the CUDA kernels' exact
source as host C++), so the device variants run on every CI machine.
"""

import numpy as np
import pytest
from support import fake_cupy

from minifcn import backend

REAL_GPU = backend.gpu_available()
if not REAL_GPU:
    backend._cupy = fake_cupy.module
DEVICE = "real CuPy" if REAL_GPU else "CuPy stand-in"
requires_real_gpu = pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA device")
STANDIN = None if REAL_GPU else fake_cupy


def pytest_report_header(config):
    return f"minifcn device tests run on: {DEVICE}"


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: numpy, then cupy (real, or the stand-in)."""
    return np if request.param == "numpy" else backend.cupy_module()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def no_cupy(monkeypatch):
    """Play a machine without CuPy installed."""
    monkeypatch.setattr(backend, "_cupy", None)


@pytest.fixture
def standin():
    """The CuPy stand-in, with its transfer/sync record cleared (skips on a real GPU)."""
    if STANDIN is None:
        pytest.skip("counts syncs on the CuPy stand-in; a real GPU is in use")
    fake_cupy.stats.reset()
    return fake_cupy
