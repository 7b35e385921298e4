"""NumPy or CuPy: one code path for both.

Every layer asks ``get_array_module(x)`` for the array module of its input and
writes its arithmetic against that module (called ``xp``), so the same code runs
on the CPU with NumPy and on an NVIDIA GPU with CuPy. This is the only file in
minifcn that imports CuPy.
"""

from __future__ import annotations

import numpy as np

try:  # CuPy is optional: the `gpu` extra installs it.
    import cupy as _cupy
except Exception:  # ImportError, or a CUDA library that fails to load
    _cupy = None

GPU_INSTALL_HINT = (
    'Install CuPy for your CUDA version, e.g. `pip install -e ".[gpu]"` (cupy-cuda12x) or '
    "`pip install cupy-cuda13x` on CUDA 13, on a machine with an NVIDIA GPU."
)


def cupy_module():
    """Return the ``cupy`` module, or ``None`` when CuPy is not installed."""
    return _cupy


def gpu_available() -> bool:
    """True when CuPy is importable and at least one CUDA device answers."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_gpu() -> None:
    """Raise ``RuntimeError`` with an install hint unless a GPU can be used."""
    if _cupy is None:
        raise RuntimeError(f"GPU requested but CuPy is not installed. {GPU_INSTALL_HINT}")
    if not gpu_available():
        raise RuntimeError(
            "GPU requested but no CUDA device is visible to CuPy "
            f"(is there an NVIDIA GPU and driver?). {GPU_INSTALL_HINT}"
        )


def is_gpu_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``) that the given arrays live in.

    Any CuPy array among ``arrays`` selects CuPy; otherwise NumPy. ``None`` and
    Python scalars are skipped, so ``get_array_module(x, None)`` works.
    """
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def to_device(array, device: str):
    """Copy ``array`` to ``device`` ("cpu" or "gpu"); a no-op if it is already there."""
    if device == "cpu":
        return as_numpy(array)
    if device == "gpu":
        require_gpu()
        return _cupy.asarray(array)
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def as_numpy(array):
    """A NumPy array with the same values (copies from the GPU when needed)."""
    if is_gpu_array(array):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def device_of(array) -> str:
    """ "gpu" for a CuPy array, "cpu" otherwise."""
    return "gpu" if is_gpu_array(array) else "cpu"


def synchronize(xp) -> None:
    """Wait for queued GPU work (for honest timings); nothing to do on NumPy."""
    if xp is not np and _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()
