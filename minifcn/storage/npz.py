"""``.npz`` files of named arrays plus a JSON metadata string, written atomically.

The arrays are stored under their names, the metadata under ``__meta__``; a
reader gets ``(arrays, meta)`` back and a clear ``ValueError`` for a damaged file.

Reading allocates nothing a small file could make large: every member's ``.npy``
header is read first, and its declared shape must account for exactly the bytes
the member holds, and the arrays together must fit in ``memory_budget()``. So a
4 MB file that declares a 100 GB array, or a compressed member that would inflate
beyond the budget, is refused with one line before any array is made.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..backend import get_array_module
from .atomic import write_atomic

META_KEY = "__meta__"
EXTRA_PREFIX = "__extra__/"


def nonfinite_arrays(arrays) -> list[str]:
    """Names of the floating-point arrays that hold NaN or inf: the one finiteness check.

    ``arrays``: name -> NumPy or CuPy array, or a ``Module`` (its parameters, read where
    they live: a GPU model's weights are checked on the GPU, not copied to the host).
    """
    if hasattr(arrays, "named_parameters"):
        arrays = {name: p.data for name, p in arrays.named_parameters()}
    bad = []
    for name, v in arrays.items():
        v = np.asarray(v) if not hasattr(v, "dtype") else v
        if v.dtype.kind in "fc" and not bool(get_array_module(v).isfinite(v).all()):
            bad.append(name)
    return bad


def _npz_writer(arrays: dict, meta: dict | None):
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(meta or {}))
    return lambda f: np.savez(f, **payload)


def save_npz_atomic(path, arrays: dict, meta: dict | None = None) -> Path:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON-able) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, _npz_writer(arrays, meta))


def memory_budget() -> int:
    """Bytes the arrays of one archive may declare: half of this machine's memory
    (8 GiB where the size of the memory is unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 16 * 2**30
    return int(total) // 2


def declared_arrays(path, budget: int | None = None) -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (shape, dtype) of every array in the ``.npz`` at ``path``, from the
    headers alone (no array is read).

    ValueError naming the file when it is not a zip of ``.npy`` members, when a
    member's declared shape does not match the bytes it holds, when a member holds
    Python objects, or when the arrays together declare more than ``budget`` bytes
    (default ``memory_budget()``).
    """
    budget = memory_budget() if budget is None else budget
    found, total = {}, 0
    file_bytes = os.path.getsize(path)
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise ValueError(f"member {name!r} is not an .npy array")
            # What the archive can hold: a stored member its own bytes, a deflated one at
            # most 1032 times (deflate's limit) its compressed bytes; both inside the file.
            most = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else 1032)
            if info.compress_size > file_bytes or info.file_size > most:
                raise ValueError(
                    f"array {name[:-4]!r} declares {_size(info.file_size)} but the file "
                    f"holds {_size(min(info.compress_size, file_bytes))} for it"
                )
            with z.open(info) as f:
                version = npy_format.read_magic(f)
                read_header = (
                    npy_format.read_array_header_1_0
                    if version == (1, 0)
                    else npy_format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
                header_bytes = f.tell()
            if dtype.hasobject:
                raise ValueError(f"array {name[:-4]!r} holds Python objects")
            nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
            if header_bytes + nbytes != info.file_size:
                raise ValueError(
                    f"array {name[:-4]!r} declares shape {tuple(shape)} ({_size(nbytes)}) "
                    f"but holds {_size(info.file_size - header_bytes)}"
                )
            total += nbytes
            found[name[:-4]] = (tuple(shape), dtype)
    if total > budget:
        raise ValueError(
            f"its arrays declare {_size(total)}, more than the {_size(budget)} a file may "
            "take here (half of this machine's memory)"
        )
    return found


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def load_npz(path, budget: int | None = None) -> tuple[dict, dict]:
    """Read a file written by ``save_npz_atomic``: (arrays, meta).

    Every header is checked first (``declared_arrays``, against ``budget`` bytes).
    FileNotFoundError for a missing file; ValueError (naming the file) for one that is
    truncated, corrupt, not an ``.npz`` at all, or declares more than it holds or than
    the budget allows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    damaged = (OSError, zipfile.BadZipFile, EOFError, KeyError, RecursionError)
    try:
        declared_arrays(path, budget)
    except damaged as err:
        raise ValueError(f"cannot read checkpoint {path} (damaged or not an .npz): {err}") from None
    except ValueError as err:
        raise ValueError(f"refusing checkpoint {path}: {err}") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop(META_KEY))) if META_KEY in arrays else {}
    except (ValueError, *damaged) as err:
        raise ValueError(f"cannot read checkpoint {path} (damaged or not an .npz): {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"cannot read checkpoint {path}: its metadata is not a JSON object")
    return arrays, meta
