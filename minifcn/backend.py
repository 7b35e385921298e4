"""NumPy or CuPy: one code path for both.

Every layer asks ``get_array_module(x)`` for the array module of its input and
writes its arithmetic against that module (called ``xp``), so the same code runs
on the CPU with NumPy and on an NVIDIA GPU with CuPy. This is the only file in
minifcn that imports CuPy.

Plain or accelerated: the one switch. Every layer in ``minifcn/nn/`` holds its
algorithm written once in plain array code (the *plain path*, what a learner
reads). The *accelerated path*, ``minifcn/accel/``, computes the same values
faster: CPU fast paths on NumPy, custom CUDA kernels on the GPU. It is the
default. The environment variable ``MINIFCN_ACCEL=0`` selects the plain path
everywhere (``accelerated()`` then returns False); ``MINIFCN_CUDA_KERNELS=0``
selects it on the GPU only, keeping the CPU fast paths (``cuda_kernels_enabled()``).
Both are read at every layer call, so ``with plain_path(): ...`` (or setting the
variable) switches a running program; a layer's backward always follows the path
its forward took. The tests check that both paths give the same values and
gradients for every layer, on NumPy and on the device.

Environment variables are parsed here, strictly: a value the code does not
understand (``MINIFCN_ACCEL=false``) raises ``BadEnvironment``, one line naming
the accepted values, instead of being read as some default. The commands check
them all at start-up (``environment_problem``).
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

try:  # CuPy is optional: the `gpu` extra installs it.
    import cupy as _cupy
except Exception:  # ImportError, or a CUDA library that fails to load
    _cupy = None

GPU_INSTALL_HINT = (
    'Install CuPy with the CUDA parts it compiles kernels with: `pip install -e ".[gpu]"` '
    '(cupy-cuda12x[ctk], for a CUDA 12 driver) or `pip install "cupy-cuda13x[ctk]"` for a '
    "CUDA 13 driver (`nvidia-smi` shows the driver's CUDA version)."
)

# The smallest kernel that proves the GPU tool chain works: NVRTC compiles it, the
# driver loads it, and it runs (minifcn's own kernels need nothing more).
PROBE_KERNEL = r"""
extern "C" __global__ void minifcn_probe(float* x, const int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        x[i] = 2.0f * x[i] + 1.0f;
    }
}
"""


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
    """Raise ``RuntimeError`` naming what is missing unless the GPU can run minifcn.

    Beyond CuPy and a visible device, this compiles and runs one tiny kernel
    (once per process), so a missing NVRTC, CUDA headers or a driver too old
    for the installed CuPy stops here with one message instead of mid-forward.
    """
    if _cupy is None:
        raise RuntimeError(f"GPU requested but CuPy is not installed. {GPU_INSTALL_HINT}")
    if not gpu_available():
        raise RuntimeError(
            "GPU requested but no CUDA device is visible to CuPy "
            f"(is there an NVIDIA GPU and driver?). {GPU_INSTALL_HINT}"
        )
    problem = _toolchain_problem()
    if problem:
        raise RuntimeError(
            f"GPU requested but CuPy cannot compile and run a kernel: {problem}. {GPU_INSTALL_HINT}"
        )


@functools.cache
def _toolchain_problem() -> str | None:
    """None when a probe kernel compiles and gives the right numbers, else what went wrong."""
    try:
        x = _cupy.arange(5, dtype=_cupy.float32)
        _cupy.RawKernel(PROBE_KERNEL, "minifcn_probe")((1,), (32,), (x, np.int32(5)))
        got = _cupy.asnumpy(x)
    except Exception as err:  # CompileException, CUDARuntimeError, missing libnvrtc...
        message = " ".join(str(err).split())[:300]
        return f"{type(err).__name__}: {message}"
    if not np.array_equal(got, 2 * np.arange(5, dtype=np.float32) + 1):
        return f"the probe kernel computed {got.tolist()} instead of [1, 3, 5, 7, 9]"
    return None


class BadEnvironment(ValueError):
    """An environment variable holds a value minifcn does not understand."""


# The on/off switches: name -> what "1" means (the message for a bad value says it).
SWITCHES = {
    "MINIFCN_ACCEL": "1 (the default) runs the accelerated path, 0 the plain path everywhere",
    "MINIFCN_CUDA_KERNELS": "1 (the default) uses the custom CUDA kernels, 0 the plain path "
    "on the GPU",
    "CUPY_TF32": "0 (the default) keeps CuPy's float32 products in full precision, 1 lets "
    "them use TF32 tensor cores",
}
THREADS_ENV = "MINIFCN_THREADS"
MAX_THREADS = 1024


def env_switch(name: str, environ=None) -> bool:
    """The on/off switch ``name`` (one of ``SWITCHES``): "1" or "0", unset or empty for
    its default; anything else is ``BadEnvironment``."""
    environ = os.environ if environ is None else environ
    value = environ.get(name, "").strip()
    if value == "":
        return name != "CUPY_TF32"
    if value in ("0", "1"):
        return value == "1"
    raise BadEnvironment(
        f"environment variable {name}={value!r} is not understood: use 1 or 0 ({SWITCHES[name]})"
    )


AUTO_THREADS = "auto"


def requested_threads(environ=None) -> int | str | None:
    """``MINIFCN_THREADS``: a fixed BLAS thread count, "auto" (follow the idle cores), or
    None when unset or empty (leave the BLAS at its own default); ``BadEnvironment`` for
    anything else."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if value.lower() == AUTO_THREADS:
        return AUTO_THREADS
    if value.isdigit() and 1 <= int(value) <= MAX_THREADS:
        return int(value)
    raise BadEnvironment(
        f"environment variable {THREADS_ENV}={value!r} is not understood: use a thread count "
        f"1..{MAX_THREADS}, or auto (as many threads as there are idle cores)"
    )


def environment_problem(environ=None) -> str | None:
    """The first minifcn environment variable with a value it does not understand, as
    one line; None when all are fine."""
    try:
        for name in SWITCHES:
            env_switch(name, environ)
        requested_threads(environ)
    except BadEnvironment as err:
        return str(err)
    return None


def accelerated() -> bool:
    """True unless ``MINIFCN_ACCEL=0``: the layers use ``minifcn.accel`` (the default)."""
    return env_switch("MINIFCN_ACCEL")


def cuda_kernels_enabled() -> bool:
    """True unless ``MINIFCN_ACCEL=0`` or ``MINIFCN_CUDA_KERNELS=0``: on the GPU, use the
    accelerated path's custom CUDA kernels (otherwise the GPU runs the plain path)."""
    return accelerated() and env_switch("MINIFCN_CUDA_KERNELS")


def set_tf32(enabled: bool) -> bool:
    """Let CuPy's float32 matrix products use TF32 tensor cores (``CUPY_TF32=1``), or
    not. CuPy reads the variable once, at its first float32 product, so this also sets
    the compute type it cached, when this CuPy has the setter. Returns whether the
    setting was also given to CuPy directly (False: only the variable was set, which
    CuPy reads before its first float32 product)."""
    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    if _cupy is None:
        return False
    try:
        from cupy._core import _routines_linalg as linalg  # CuPy's own cached setting

        kind = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
        linalg.set_compute_type(np.float32, kind)
    except Exception:  # the stand-in, or a CuPy without the setter: the variable only
        return False
    return True


@contextlib.contextmanager
def plain_path(plain: bool = True):
    """Run the block on the plain path (``MINIFCN_ACCEL=0``), or on the accelerated
    path with ``plain=False``; the variable is restored afterwards."""
    old = os.environ.get("MINIFCN_ACCEL")
    os.environ["MINIFCN_ACCEL"] = "0" if plain else "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINIFCN_ACCEL", None)
        else:
            os.environ["MINIFCN_ACCEL"] = old


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


# --------------------------------------------------------------- NCCL (minifcn.distributed)
def nccl_module():
    """CuPy's NCCL binding (``cupy.cuda.nccl``), or ``None`` without CuPy or NCCL.

    ``minifcn.distributed`` averages device gradients with it, one GPU per rank.
    """
    if _cupy is None:
        return None
    nccl = getattr(_cupy.cuda, "nccl", None)
    if nccl is None and getattr(_cupy, "__version__", "") != "stand-in":
        try:
            from cupy.cuda import nccl  # noqa: F811 - some CuPy builds load it lazily
        except Exception:  # ImportError, or libnccl missing
            return None
    if nccl is None or not getattr(nccl, "available", True):
        return None
    return nccl


def use_gpu(index: int) -> None:
    """Make GPU ``index`` current for this process (``index`` modulo the visible count)."""
    if not gpu_available():
        require_gpu()  # raises, naming what is missing
    _cupy.cuda.Device(index % _cupy.cuda.runtime.getDeviceCount()).use()


def device_pointer(array) -> int:
    """The device address of a contiguous CuPy array (what NCCL calls take)."""
    return array.data.ptr


def current_stream_pointer() -> int:
    """The handle of the current CUDA stream (NCCL queues its work there)."""
    return _cupy.cuda.get_current_stream().ptr


def stream_marker():
    """An event recorded now on the current stream; ``.done`` is True once the
    work queued before it has finished (polled, so a wait can time out)."""
    event = _cupy.cuda.Event()
    event.record(_cupy.cuda.get_current_stream())
    return event
