"""Compile CUDA source with NVRTC through ctypes: no GPU, no CuPy, no CUDA toolkit.

NVRTC is a plain shared library; the ``nvidia-cuda-nvrtc-cu12`` wheel from PyPI
(in the ``dev`` extra) ships it. Compiling to PTX needs no device, so CI can
check that every kernel source minifcn hands to CuPy's ``RawKernel`` compiles.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from functools import cache


@cache
def load() -> ctypes.CDLL | None:
    """libnvrtc from the nvidia-cuda-nvrtc wheel, CuPy's CUDA wheels or the system; or None."""
    candidates = []
    for base in sys.path:
        for sub in ("nvidia/cuda_nvrtc/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"):
            candidates += sorted(glob.glob(os.path.join(base, sub, "libnvrtc.so*")))
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for path in candidates:
        if "builtins" in os.path.basename(path) or ".alt." in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def version() -> str:
    lib = load()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


class NVRTCError(RuntimeError):
    pass


def compile_to_ptx(source: str, name: str = "kernel.cu", arch: str = "compute_75") -> str:
    """Compile ``source`` to PTX; NVRTCError with NVRTC's log when it does not compile."""
    lib = load()
    if lib is None:
        raise NVRTCError("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)")
    prog = ctypes.c_void_p()
    check(
        lib,
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
    )
    try:
        options = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]
        argv = (ctypes.c_char_p * len(options))(*options)
        status = lib.nvrtcCompileProgram(prog, len(options), argv)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise NVRTCError(log.value.decode(errors="replace"))
        size = ctypes.c_size_t()
        check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)))
        ptx = ctypes.create_string_buffer(size.value)
        check(lib, lib.nvrtcGetPTX(prog, ptx))
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def check(lib, status: int) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise NVRTCError(lib.nvrtcGetErrorString(status).decode())
