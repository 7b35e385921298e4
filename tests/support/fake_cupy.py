"""A strict stand-in for CuPy, NumPy underneath, so the GPU code path runs on every CI.

Tests install it as minifcn's ``cupy`` module when no real GPU is present
(``tests/conftest.py``). It copies CuPy's rules where they matter for bugs:

* Its ``ndarray`` is not a ``numpy.ndarray``. ``np.asarray(d)`` (and anything
  that needs one implicitly) raises ``TypeError``, as CuPy's ``__array__`` does.
* A host array as an operand of a device operation (``d + h``, ``xp.where(h,
  ...)``, a NumPy ufunc mixing both) raises ``TypeError: Unsupported type``;
  a non-scalar host array assigned into a basic slice of a device array raises
  ``ValueError`` (CuPy's ``fill`` path). Host arrays as *indices*, or assigned
  through an advanced index, are copied to the device, as CuPy does, and counted.
* ``empty``/``empty_like`` return garbage (NaN for floats), as device memory is.
* Every host->device and device->host copy, and every blocking sync
  (``float()``, ``int()``, ``bool()``, ``.get()``, ``.item()``, ``asnumpy``,
  ``repr``, a stream synchronize), is recorded in ``stats`` with its call site.
* Every device operation is counted as a *launch* in ``stats`` (``stats.launches``),
  by category: ``elementwise`` (an operator or ufunc, ``where``, ``clip``...),
  ``reduction`` (``sum``, ``max``...), ``gemm`` (``@``, ``matmul``, ``dot``),
  ``copy`` (``copy``, ``astype``, a non-view ``reshape``, ``ascontiguousarray`` of a
  non-contiguous array, ``setitem``, ``concatenate``, a gather through an advanced
  index, and every host<->device transfer), ``fill`` (``zeros``, ``full``,
  ``arange``...) and ``kernel`` (a ``RawKernel`` launch). Views (basic slicing, a
  ``reshape`` or ``transpose`` that shares memory) and ``empty`` launch nothing, as
  on CuPy. On a GPU each launch costs microseconds of overhead whatever its size,
  so a small network's step is bounded by how many it issues.
* ``RawKernel`` compiles the kernel's **exact source** as host C++ (g++) with a
  small prelude that defines ``__global__``, ``blockIdx``, ``threadIdx``,
  ``blockDim`` and ``gridDim``, and runs every (block, thread) of the launch in
  turn. That is faithful for kernels without shared memory or
  ``__syncthreads`` (grid-stride loops, one thread per output), which are the
  only kind minifcn has. Stricter than CuPy on purpose: every scalar argument
  must be a NumPy scalar of exactly the parameter's C type and every pointer
  argument a device array of the pointee's type, because a Python int or a
  wrong-width scalar is silently misread on a real GPU.

Only the parts of CuPy that minifcn uses are here; anything else raises
``AttributeError``, so new CuPy usage has to be added on purpose.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
_NUMPY_DIR = str(Path(np.__file__).resolve().parent)
_BACKEND = str(Path(__file__).resolve().parents[2] / "minifcn" / "backend.py")


# ----------------------------------------------------------------------- accounting
@dataclass
class Event:
    kind: str  # "sync" or "h2d" / "d2h"
    what: str  # e.g. "float()", ".get()", "asarray"
    nbytes: int
    site: str  # "file.py:123 in function"
    stack: tuple = ()  # every function name on the call stack, outermost first

    def within(self, function: str) -> bool:
        return function in self.stack


@dataclass
class Stats:
    """Everything the stand-in saw cross between host and device."""

    events: list = field(default_factory=list)
    counting: bool = True  # whether device operations are recorded as launches

    def reset(self) -> None:
        self.events.clear()

    @property
    def launches(self) -> list:
        return [e for e in self.events if e.kind == "launch"]

    def launches_by_category(self) -> dict:
        """{category: count} over ``LAUNCH_KINDS``."""
        counts = dict.fromkeys(LAUNCH_KINDS, 0)
        for e in self.launches:
            counts[e.what.split()[0]] += 1
        return counts

    def launches_by_site(self) -> dict:
        """{call site: count}, most first (what to fuse next)."""
        counts: dict = {}
        for e in self.launches:
            counts[e.site] = counts.get(e.site, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    @property
    def syncs(self) -> list:
        return [e for e in self.events if e.kind == "sync"]

    @property
    def transfers(self) -> list:
        return [e for e in self.events if e.kind in ("h2d", "d2h")]

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def describe(self, kind: str = "sync") -> str:
        return "\n".join(f"  {e.what:12s} {e.site}" for e in self.events if e.kind == kind)


stats = Stats()


def _site(frames) -> str:
    """The innermost caller outside this file, NumPy and minifcn's backend helpers."""
    for frame in reversed(frames):
        path = str(Path(frame.filename).resolve())
        if not path.startswith((_HERE, _NUMPY_DIR, _BACKEND)):
            return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    return "?"


def _fast_stack() -> tuple:
    """(site, function names outermost first) without reading source lines (cheap)."""
    frame, names, site = sys._getframe(2), [], None
    while frame is not None:
        names.append(frame.f_code.co_name)
        if site is None:
            path = frame.f_code.co_filename
            if not path.startswith((_HERE, _NUMPY_DIR, _BACKEND)):
                site = f"{Path(path).name}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return site or "?", tuple(reversed(names))


LAUNCH_KINDS = ("elementwise", "reduction", "gemm", "copy", "fill", "kernel")


def _launch(category: str, what: str) -> None:
    """Count one device operation (a kernel launch on a real GPU)."""
    if stats.counting:
        site, stack = _fast_stack()
        stats.events.append(Event("launch", f"{category} {what}", 0, site, stack))


def _record(kind: str, what: str, nbytes: int = 0) -> None:
    frames = traceback.extract_stack()[:-1]
    stack = tuple(f.name for f in frames)
    stats.events.append(Event(kind, what, int(nbytes), _site(frames), stack))


def _sync_to_host(a: ndarray, what: str) -> np.ndarray:
    """A blocking device->host copy of ``a`` (one sync, one d2h transfer, one copy launch)."""
    _record("sync", what)
    _record("d2h", what, a._a.nbytes)
    _launch("copy", "d2h")
    return a._a


# ------------------------------------------------------------------ conversion rules
_PY_SCALARS = (bool, int, float, complex)


def _unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")


def _operand(value):
    """An argument of a device operation -> what NumPy should see; host arrays refused."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, _PY_SCALARS) or isinstance(value, np.generic) or value is None:
        return value
    if isinstance(value, (np.dtype, type, str, slice, type(Ellipsis))):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_operand(v) for v in value)
    if isinstance(value, np.ndarray):
        raise _unsupported(value)
    raise _unsupported(value)


def _wrap(result):
    """NumPy results -> device arrays (0-d included: CuPy reductions return arrays)."""
    if isinstance(result, np.ndarray):
        return ndarray(result)
    if isinstance(result, np.generic):
        return ndarray(np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _index(key):
    """An index for a device array; host arrays and lists in it are copied over, as CuPy does."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (np.ndarray, list)):
        host = np.asarray(key)
        _record("h2d", "index", host.nbytes)
        _launch("copy", "h2d index")
        return host
    return key


def _is_basic(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return not any(isinstance(k, (np.ndarray, ndarray, list)) for k in keys)


def _binary(op):
    def method(self, other):
        result = _wrap(op(self._a, _operand(other)))
        _launch("gemm" if op is np.matmul else "elementwise", op.__name__)
        return result

    return method


def _rbinary(op):
    def method(self, other):
        result = _wrap(op(_operand(other), self._a))
        _launch("gemm" if op is np.matmul else "elementwise", op.__name__)
        return result

    return method


def _inplace(op):
    def method(self, other):
        op(self._a, _operand(other), out=self._a)
        _launch("elementwise", op.__name__)
        return self

    return method


def _is_view(result, source) -> bool:
    """Whether ``result`` (NumPy) shares ``source``'s memory: a view, no launch."""
    return isinstance(result, np.ndarray) and np.may_share_memory(result, source)


# How ndarray methods and module functions count (anything not listed is elementwise).
_VIEWS = {  # a view when NumPy returns one, a copy otherwise
    "reshape", "transpose", "ravel", "squeeze", "swapaxes", "view", "expand_dims",
    "broadcast_to", "moveaxis", "flip", "rot90", "diag",
}  # fmt: skip
_REDUCTIONS = {
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "all", "any", "prod",
    "var", "std", "count_nonzero", "cumsum", "allclose", "array_equal", "bincount",
    "nonzero", "unique", "argsort", "sort",
}  # fmt: skip
_GEMMS = {"matmul", "dot", "tensordot", "einsum", "outer"}
_COPIES = {
    "copy", "flatten", "astype", "ascontiguousarray", "concatenate", "stack", "pad", "take",
    "repeat", "take_along_axis",
}  # fmt: skip
_FILLS = {
    "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "linspace",
    "eye", "fill",
}  # fmt: skip


def _count(name: str, result, sources) -> None:
    """Count the launch (if any) a method or function ``name`` that gave ``result`` made."""
    if name in _VIEWS or name in ("ascontiguousarray", "astype"):
        if any(_is_view(result, s) for s in sources if isinstance(s, np.ndarray)):
            return  # a view, or ascontiguousarray / astype(copy=False) of what was already so
    category = (
        "copy" if name in _VIEWS or name in _COPIES
        else "reduction" if name in _REDUCTIONS
        else "gemm" if name in _GEMMS
        else "fill" if name in _FILLS
        else "elementwise"
    )  # fmt: skip
    _launch(category, name)


_METHODS = {  # ndarray methods CuPy has and minifcn may call; results stay on the device
    "reshape", "transpose", "astype", "copy", "sum", "mean", "max", "min", "argmax",
    "argmin", "ravel", "flatten", "squeeze", "clip", "any", "all", "cumsum", "prod",
    "var", "std", "dot", "take", "repeat", "swapaxes", "nonzero", "round", "view",
    "fill",
}  # fmt: skip


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: a NumPy array that refuses to be treated as one."""

    __slots__ = ("_a",)
    __array_priority__ = 100.0
    __hash__ = None

    def __init__(self, array: np.ndarray):
        assert isinstance(array, np.ndarray)
        self._a = array

    # ---- attributes (no sync: CuPy keeps shape and dtype on the host)
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: _Device(0))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    # ---- explicit and implicit copies to the host
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream=None, order="C", out=None):
        return _sync_to_host(self, ".get()").copy()

    def item(self):
        return _sync_to_host(self, ".item()").item()

    def tolist(self):
        return _sync_to_host(self, ".tolist()").tolist()

    def __float__(self):
        return float(_sync_to_host(self, "float()"))

    def __int__(self):
        return int(_sync_to_host(self, "int()"))

    def __bool__(self):
        return bool(_sync_to_host(self, "bool()"))

    def __complex__(self):
        return complex(_sync_to_host(self, "complex()"))

    def __repr__(self):
        return repr(_sync_to_host(self, "repr()")).replace("array", "device_array", 1)

    __str__ = __repr__

    def __format__(self, spec):
        return format(_sync_to_host(self, "format()"), spec)

    # ---- indexing
    def __getitem__(self, key):
        basic = _is_basic(key)
        result = _wrap(self._a[_index(key)])
        if not basic:
            _launch("copy", "gather")  # an advanced index copies
        return result

    def __setitem__(self, key, value):
        basic = _is_basic(key)
        key = _index(key)
        _launch("copy" if isinstance(value, ndarray) else "fill", "setitem")
        if isinstance(value, ndarray):
            self._a[key] = value._a
        elif isinstance(value, (np.ndarray, list, tuple)):
            host = np.asarray(value)
            if basic and host.ndim > 0:  # CuPy fills basic slices only from scalars
                raise ValueError(
                    f"non-scalar {type(value).__module__}.ndarray cannot be used for fill"
                )
            _record("h2d", "setitem", host.nbytes)
            _launch("copy", "h2d setitem")
            self._a[key] = host
        elif isinstance(value, _PY_SCALARS) or isinstance(value, np.generic):
            self._a[key] = value
        else:
            raise _unsupported(value)

    # ---- methods
    def __getattr__(self, name):
        if name not in _METHODS:
            raise AttributeError(f"the CuPy stand-in's ndarray has no attribute {name!r}")
        method = getattr(self._a, name)

        def call(*args, **kwargs):
            out = kwargs.get("out")
            result = method(*_operand(list(args)), **{k: _operand(v) for k, v in kwargs.items()})
            _count(name, result, (self._a,))
            return out if isinstance(out, ndarray) else _wrap(result)

        return call

    # ---- NumPy protocols: device-only ufuncs and functions, like CuPy
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        for x in inputs + (tuple(out) if out else ()):
            if isinstance(x, np.ndarray):
                raise _unsupported(x)
        inputs = tuple(_operand(x) for x in inputs)
        if out:
            kwargs["out"] = tuple(_operand(o) for o in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        category = "elementwise" if method == "__call__" else "reduction"
        _launch("gemm" if ufunc is np.matmul else category, ufunc.__name__)
        if out:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        ours = getattr(module, func.__name__, None)
        if ours is None or func.__name__ not in _FUNCTIONS:
            return NotImplemented
        return ours(*args, **kwargs)

    # ---- arithmetic: + - * / & | and their variants are set by the loop below the class
    __floordiv__, __rfloordiv__ = _binary(np.floor_divide), _rbinary(np.floor_divide)
    __mod__, __rmod__ = _binary(np.remainder), _rbinary(np.remainder)
    __pow__, __rpow__ = _binary(np.power), _rbinary(np.power)
    __matmul__, __rmatmul__ = _binary(np.matmul), _rbinary(np.matmul)
    __xor__ = _binary(np.bitwise_xor)
    __lt__, __le__ = _binary(np.less), _binary(np.less_equal)
    __gt__, __ge__ = _binary(np.greater), _binary(np.greater_equal)
    __eq__, __ne__ = _binary(np.equal), _binary(np.not_equal)

    def __neg__(self):
        _launch("elementwise", "negative")
        return ndarray(-self._a)

    def __pos__(self):
        _launch("elementwise", "positive")
        return ndarray(+self._a)

    def __abs__(self):
        _launch("elementwise", "absolute")
        return ndarray(abs(self._a))

    def __invert__(self):
        _launch("elementwise", "invert")
        return ndarray(~self._a)


# a + b, b + a and a += b for each operator; all of them refuse host arrays.
_OPERATORS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "and": np.bitwise_and, "or": np.bitwise_or,
}  # fmt: skip
for _name, _op in _OPERATORS.items():
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _rbinary(_op))
    setattr(ndarray, f"__i{_name}__", _inplace(_op))


# ------------------------------------------------------------------- module functions
def _host_to_device(obj, dtype, what: str) -> ndarray:
    host = np.array(obj, dtype=dtype, copy=True)
    _record("h2d", what, host.nbytes)
    _launch("copy", f"h2d {what}")
    return ndarray(host)


def asarray(a, dtype=None, order=None, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
    return _host_to_device(a, dtype, "asarray")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    if isinstance(obj, ndarray):
        result = np.array(obj._a, dtype=dtype, copy=copy, ndmin=ndmin)
        _count("astype", result, (obj._a,))
        return ndarray(result)
    return _host_to_device(obj, dtype, "array")


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return _sync_to_host(a, "asnumpy").copy()
    return np.asarray(a)


def _garbage(shape, dtype):
    out = np.empty(shape, dtype=dtype)
    if out.dtype.kind in "fc":
        out.fill(np.nan)
    elif out.dtype.kind in "iu":
        out.fill(np.iinfo(out.dtype).max)
    return out


def empty(shape, dtype=np.float64, order="C"):
    return ndarray(_garbage(shape, dtype))


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    return ndarray(_garbage(a.shape if shape is None else shape, dtype or a.dtype))


def get_array_module(*args):
    return module if any(isinstance(a, ndarray) for a in args) else np


_FUNCTIONS = {  # NumPy functions CuPy has; taken from NumPy, device arrays only
    "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "linspace",
    "eye", "where", "maximum", "minimum", "exp", "log", "log1p", "expm1", "sqrt", "abs",
    "absolute", "square", "tanh", "sign", "add", "subtract", "multiply", "divide",
    "true_divide", "negative", "power", "equal", "not_equal", "less", "less_equal",
    "greater", "greater_equal", "logical_and", "logical_or", "logical_not", "isfinite",
    "isnan", "isinf", "concatenate", "stack", "bincount", "sum", "mean", "max", "min",
    "amax", "amin", "argmax", "argmin", "all", "any", "count_nonzero", "cumsum", "prod",
    "clip", "take_along_axis", "matmul", "dot", "tensordot", "einsum", "transpose",
    "reshape", "ravel", "pad", "flip", "rot90", "unique", "ascontiguousarray",
    "broadcast_to", "expand_dims", "squeeze", "moveaxis", "allclose", "array_equal",
    "nonzero", "argsort", "sort", "diag", "outer", "floor", "ceil", "rint",
}  # fmt: skip


def _device_function(name):
    fn = getattr(np, name)

    def call(*args, **kwargs):
        out = kwargs.get("out")
        args = _operand(list(args))
        kwargs = {k: _operand(v) for k, v in kwargs.items()}
        result = fn(*args, **kwargs)
        sources = [a for a in args if isinstance(a, np.ndarray)]
        if name in _COPIES and args and isinstance(args[0], (list, tuple)):  # concatenate, stack
            sources = []
        _count(name, result, sources)
        return out if out is not None else _wrap(result)

    call.__name__ = name
    return call


# ------------------------------------------------------------------------ cuda.*
class _Device:
    def __init__(self, device_id=0):
        self.id = device_id

    def synchronize(self):
        _record("sync", "Device.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    def synchronize(self):
        _record("sync", "stream.synchronize")


class _Event:
    """``cupy.cuda.Event``: on the stand-in the work is done when it is queued, so an
    event's time is the host clock when it is recorded."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        import time

        self.time = time.perf_counter()

    def synchronize(self):
        _record("sync", "Event.synchronize")

    @property
    def done(self) -> bool:  # cupy.cuda.Event.done: the work before it has finished
        return self.time is not None


def _get_elapsed_time(start: _Event, end: _Event) -> float:
    """Milliseconds between two recorded events, as ``cupy.cuda.get_elapsed_time``."""
    if start.time is None or end.time is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    return (end.time - start.time) * 1e3


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


class _Runtime:
    device_count = 1  # tests set 0 to play "no device"

    class CUDARuntimeError(RuntimeError):
        pass

    def getDeviceCount(self):  # noqa: N802 - CuPy's name
        return self.device_count

    def runtimeGetVersion(self):  # noqa: N802
        return 12090

    def driverGetVersion(self):  # noqa: N802
        return 12090

    def getDeviceProperties(self, device_id):  # noqa: N802
        return {"name": b"CuPy stand-in (NumPy on the CPU)", "totalGlobalMem": 0}


_runtime = _Runtime()
_stream = _Stream()
_pool = _MemoryPool()

cuda = types.SimpleNamespace(
    runtime=_runtime,
    Device=_Device,
    get_current_stream=lambda: _stream,
    MemoryPool=_MemoryPool,
    Event=_Event,
    get_elapsed_time=_get_elapsed_time,
)


def get_default_memory_pool():
    return _pool


# ---------------------------------------------------------------- kernels, as host C++
HOST_PRELUDE = r"""
// Host C++ stand-in for the CUDA built-ins a grid-stride kernel uses.
#include <cmath>
#include <type_traits>
using std::exp; using std::log; using std::sqrt; using std::fabs;
struct minifcn_dim3 { unsigned int x, y, z; };
static minifcn_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#line 1 "kernel.cu"
"""

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)

# How a C type's kind and size must match a NumPy dtype.
_KIND = {"f": "f", "i": "i", "u": "u", "b": "u"}


class CompileError(RuntimeError):
    """g++ (or NVRTC, in the tests that use it) refused a kernel source."""


@dataclass
class _HostKernel:
    lib: ctypes.CDLL
    launch: object
    params: list  # [(is_pointer, kind, size)]


def kernel_parameters(source: str, name: str) -> list[str]:
    """The parameter declarations of ``extern "C" __global__ void name(...)`` in ``source``."""
    for match in _SIGNATURE.finditer(source):
        if match.group(1) == name:
            return [p.strip() for p in match.group(2).split(",") if p.strip()]
    raise CompileError(f'no extern "C" __global__ kernel named {name!r} in the source')


def _param_type(decl: str) -> str:
    """'const float* __restrict__ img' -> 'const float* __restrict__'."""
    return re.sub(r"\s*\b\w+\s*$", "", decl)


def _launcher(name: str, params: list[str]) -> str:
    """C++ appended to the kernel source: parameter info, and a loop over the launch."""
    lines = []
    types_ = [_param_type(p) for p in params]
    for k, t in enumerate(types_):
        lines.append(f"typedef {t} minifcn_p{k};")
    lines.append("template <class P> static void minifcn_describe(long long* d) {")
    lines.append(
        "  typedef typename std::remove_cv<typename std::remove_pointer<P>::type>::type E;"
    )
    lines.append("  d[0] = std::is_pointer<P>::value;")
    lines.append(
        "  d[1] = std::is_floating_point<E>::value ? 'f' : std::is_signed<E>::value ? 'i' : 'u';"
    )
    lines.append("  d[2] = sizeof(E);")
    lines.append("}")
    lines.append(f'extern "C" void minifcn_info_{name}(long long* d) {{')
    for k in range(len(types_)):
        lines.append(f"  minifcn_describe<minifcn_p{k}>(d + {3 * k});")
    lines.append("}")
    args = ", ".join(f"*(minifcn_p{k}*)a[{k}]" for k in range(len(types_)))
    lines.append(
        f'extern "C" void minifcn_launch_{name}(const unsigned* g, const unsigned* b, void** a) {{'
    )
    lines.append("  gridDim = {g[0], g[1], g[2]}; blockDim = {b[0], b[1], b[2]};")
    lines.append("  for (unsigned bz = 0; bz < g[2]; ++bz) for (unsigned by = 0; by < g[1]; ++by)")
    lines.append("  for (unsigned bx = 0; bx < g[0]; ++bx) for (unsigned tz = 0; tz < b[2]; ++tz)")
    lines.append(
        "  for (unsigned ty = 0; ty < b[1]; ++ty) for (unsigned tx = 0; tx < b[0]; ++tx) {"
    )
    lines.append("    blockIdx = {bx, by, bz}; threadIdx = {tx, ty, tz};")
    lines.append(f"    {name}({args});")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


_BUILD_DIR = Path(tempfile.mkdtemp(prefix="minifcn_fake_cupy_"))
_COMPILED: dict = {}


def compile_host(source: str, name: str) -> _HostKernel:
    """Compile ``source`` (exactly as it would go to NVRTC) as host C++; cached per source."""
    key = (source, name)
    if key in _COMPILED:
        return _COMPILED[key]
    params = kernel_parameters(source, name)
    text = HOST_PRELUDE + source + '\n#line 1 "launcher.cpp"\n' + _launcher(name, params)
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    src, lib_path = _BUILD_DIR / f"{digest}.cpp", _BUILD_DIR / f"{digest}.so"
    src.write_text(text)
    cmd = [os.environ.get("CXX", "g++"), "-std=c++17", "-O1", "-shared", "-fPIC", "-w"]
    proc = subprocess.run(cmd + ["-o", str(lib_path), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"kernel {name!r} does not compile as host C++:\n{proc.stderr}")
    lib = ctypes.CDLL(str(lib_path))
    info = (ctypes.c_longlong * (3 * len(params)))()
    getattr(lib, f"minifcn_info_{name}")(info)
    described = [
        (bool(info[3 * k]), chr(info[3 * k + 1]), info[3 * k + 2]) for k in range(len(params))
    ]
    kernel = _HostKernel(lib, getattr(lib, f"minifcn_launch_{name}"), described)
    _COMPILED[key] = kernel
    return kernel


def _dims(value) -> tuple:
    dims = tuple(value) if isinstance(value, tuple) else (value,)
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d < 1 for d in dims):
        raise ValueError(
            f"invalid launch configuration {value!r} (CUDA: invalid configuration argument)"
        )
    return dims


class RawKernel:
    """``cupy.RawKernel(code, name)``: ``kernel(grid, block, args)`` runs it on the host."""

    def __init__(
        self, code: str, name: str, options=(), backend="nvrtc", translate_cucomplex=False
    ):
        self.code, self.name, self.options = code, name, tuple(options)

    def compile(self):
        compile_host(self.code, self.name)

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        kernel = compile_host(self.code, self.name)
        if len(args) != len(kernel.params):
            raise TypeError(f"{self.name}: {len(kernel.params)} parameters, {len(args)} arguments")
        keep, pointers = [], (ctypes.c_void_p * len(args))()
        for k, (arg, (is_pointer, kind, size)) in enumerate(zip(args, kernel.params)):
            where = f"{self.name}: argument {k} ({kernel_parameters(self.code, self.name)[k]})"
            if is_pointer:
                if not isinstance(arg, ndarray):
                    raise TypeError(f"{where} must be a device array, got {type(arg).__name__}")
                if _KIND[arg.dtype.kind] != kind or arg.dtype.itemsize != size:
                    raise TypeError(f"{where}: array of {arg.dtype} for a {kind}{8 * size} pointer")
                cell = ctypes.c_void_p(arg._a.ctypes.data)
            else:
                if not isinstance(arg, np.generic):
                    raise TypeError(
                        f"{where} must be a NumPy scalar of the parameter's C type, got "
                        f"{type(arg).__name__} (a Python scalar is passed as 64 bits by CuPy)"
                    )
                if _KIND[arg.dtype.kind] != kind or arg.dtype.itemsize != size:
                    raise TypeError(f"{where}: {arg.dtype} scalar for a {kind}{8 * size} parameter")
                cell = np.array(arg)
            keep.append(cell)
            pointers[k] = ctypes.addressof(cell) if is_pointer else cell.ctypes.data
        g = (ctypes.c_uint * 3)(*_dims(grid))
        b = (ctypes.c_uint * 3)(*_dims(block))
        _launch("kernel", self.name)
        kernel.launch(g, b, pointers)


# ------------------------------------------------------------------------ the module
class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name in _FUNCTIONS:
            fn = _device_function(name)
            setattr(self, name, fn)
            return fn
        raise AttributeError(f"the CuPy stand-in has no attribute {name!r} (add it on purpose)")


module = _Module("cupy", "A strict CuPy stand-in for minifcn's tests (NumPy on the CPU).")
module.__file__ = __file__
for _name in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool_", "intp", "dtype", "inf", "nan", "newaxis", "pi", "e",
):  # fmt: skip
    setattr(module, _name, getattr(np, _name))
for _obj in (
    ndarray, asarray, array, asnumpy, empty, empty_like, get_array_module,
    get_default_memory_pool, RawKernel,
):  # fmt: skip
    setattr(module, _obj.__name__, _obj)
module.cuda = cuda
module.stats = stats
module.__version__ = "stand-in"


# ------------------------------------------------- NCCL collectives (minifcn.distributed)
# ``cupy.cuda.nccl`` on the stand-in: the calls minifcn.distributed makes, with NCCL's
# argument rules (device pointers, a datatype code that matches the buffer, a count
# that fits it, a stream handle). Between processes the bytes travel by MPI on the
# host memory behind the fake device arrays; a communicator of one rank copies.
class _DevicePointer:
    """``ndarray.data``: CuPy's memory pointer, with the address NCCL calls take."""

    def __init__(self, array: ndarray):
        if not array._a.flags.c_contiguous:
            raise ValueError("NCCL needs a contiguous device array")
        self.ptr = array._a.ctypes.data
        _DEVICE_BUFFERS[self.ptr] = array._a.nbytes


_DEVICE_BUFFERS: dict = {}  # address -> bytes, of every device array whose pointer was taken
ndarray.data = property(_DevicePointer)
_Stream.ptr = 0
_Device.use = lambda self: None


class _Nccl(types.SimpleNamespace):
    """The NCCL names minifcn uses; ``calls`` records every collective (name, count)."""


_NCCL_TYPES = {0: np.int8, 7: np.float32, 8: np.float64}
nccl = _Nccl(
    available=True,
    NCCL_INT8=0, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0,
    calls=[],
)  # fmt: skip


def _nccl_unique_id():
    return tuple(int(b) for b in np.frombuffer(os.urandom(128), dtype=np.int8))


class NcclCommunicator:
    """``cupy.cuda.nccl.NcclCommunicator(ndev, unique_id, rank)`` on the host."""

    def __init__(self, ndev: int, commId: tuple, rank: int):  # noqa: N803 - CuPy's names
        if len(commId) != 128 or not 0 <= rank < ndev:
            raise ValueError(f"NCCL: invalid unique id or rank {rank} of {ndev}")
        self.ndev, self.rank, self._mpi = ndev, rank, None
        if ndev > 1:
            from mpi4py import MPI

            world = MPI.COMM_WORLD
            if (world.Get_size(), world.Get_rank()) != (ndev, rank):
                raise ValueError(f"NCCL stand-in: rank {rank} of {ndev} is not MPI's")
            self._mpi = world.Dup()

    def _view(self, ptr: int, count: int, datatype: int) -> np.ndarray:
        if datatype not in _NCCL_TYPES:
            raise TypeError(f"NCCL: unknown datatype code {datatype}")
        dtype = np.dtype(_NCCL_TYPES[datatype])
        if ptr not in _DEVICE_BUFFERS or count * dtype.itemsize > _DEVICE_BUFFERS[ptr]:
            raise ValueError(f"NCCL: {count} x {dtype} at {ptr:#x} is not inside a device array")
        return np.ctypeslib.as_array(
            (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
        ).view(dtype)

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        if op != nccl.NCCL_SUM or not isinstance(stream, int):
            raise ValueError("NCCL stand-in: only NCCL_SUM on a stream handle")
        send, recv = self._view(sendbuf, count, datatype), self._view(recvbuf, count, datatype)
        nccl.calls.append(("allReduce", int(count)))
        if self._mpi is None:
            recv[...] = send
        else:
            from mpi4py import MPI

            self._mpi.Allreduce(MPI.IN_PLACE if sendbuf == recvbuf else send, recv, op=MPI.SUM)

    def abort(self):
        nccl.calls.append(("abort", 0))

    def destroy(self):
        if self._mpi is not None:
            self._mpi.Free()
            self._mpi = None


nccl.get_unique_id = _nccl_unique_id
nccl.NcclCommunicator = NcclCommunicator
cuda.nccl = nccl
