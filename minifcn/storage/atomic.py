"""Atomic, durable file writes: the one way this project writes a file.

Every file goes to a hidden temporary file in the same folder
(``.<name>.<random>.tmp``), which is flushed and ``fsync``-ed, then renamed over
the target, and the folder is ``fsync``-ed too: a crash or power loss leaves
either the old file or the new one, never half of one. The new file gets the
permissions the umask allows (``0666 & ~umask``), like any file a program
creates, not the ``0600`` of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path) -> Path:
    """A fresh hidden temporary name next to ``path``: ``.<name>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_temporary(path) -> bool:
    """True for names made by ``temp_path`` (left behind only by a killed process)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def write_temp(path, write) -> Path:
    """Create a temporary file next to ``path``, call ``write(binary file)``, flush and
    fsync it, and return its name (not yet renamed). Removed again on any error."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_atomic(path, write) -> Path:
    """Write ``path`` through ``write(binary file)``: temp file, fsync, rename, fsync folder."""
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))
