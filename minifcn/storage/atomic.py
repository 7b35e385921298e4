"""Atomic, durable file writes: the one way this project writes a file.

Every file goes to a hidden temporary file in the same folder
(``.<name>.<8 hex digits>.tmp``, created with ``O_EXCL``, so never through a link
or over an existing file), which is flushed and ``fsync``-ed, then put in place
and the folder is ``fsync``-ed too: a crash or power loss leaves either the old
file or the new one, never half of one.

- ``write_atomic`` renames the temporary over the target (``rename`` replaces a
  link at the target's name, it never writes through it);
- ``write_new_atomic`` never replaces anything: the temporary is hard-linked to
  the new name, which fails when a file (or a link) of that name appeared in the
  meantime. This is how outputs that promise "never overwritten" are placed.

A failed write (a full disk) removes its temporary and leaves no file, not even
an empty one, at the target. The new file gets the permissions the umask allows
(``0666 & ~umask``), like any file a program creates, not the ``0600`` of
``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.tmp$")


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path) -> Path:
    """A fresh hidden temporary name next to ``path``: ``.<name>.<8 hex digits>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def temporary_target(path) -> str | None:
    """The file name a temporary made by ``temp_path`` stands for (``last.npz`` for
    ``.last.npz.0a1b2c3d.tmp``), or None for any other name."""
    m = _TEMP_NAME.match(Path(path).name)
    return m.group("target") if m else None


def is_temporary(path) -> bool:
    """True for names made by ``temp_path`` (left behind only by a killed process)."""
    return temporary_target(path) is not None


def is_plain_file(path) -> bool:
    """True when ``path`` itself (not what a link points to) is a regular file."""
    import stat

    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def write_temp(path, write) -> Path:
    """Create a temporary file next to ``path``, call ``write(binary file)``, flush and
    fsync it, and return its name (not yet renamed). Removed again on any error."""
    tmp = temp_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask applies
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


def write_new_atomic(path, write) -> Path:
    """Like ``write_atomic``, but ``path`` must not exist: FileExistsError (and nothing
    written) when a file, folder or link of that name is there, even one that appeared
    while ``write`` ran. The file appears complete or not at all."""
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{path} exists")
    tmp = write_temp(path, write)
    try:
        try:
            os.link(tmp, path, follow_symlinks=False)  # fails if the name is taken
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: claim the name, then rename
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            os.close(os.open(path, flags, 0o666))
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_text_new(path, text: str) -> Path:
    """``write_new_atomic`` for a text file."""
    return write_new_atomic(path, lambda f: f.write(text.encode()))


def describe_os_error(err: OSError) -> str:
    """A short reason for a failed write: 'no space left on device', 'permission denied'."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (or the file-size limit is reached)"
    return (err.strerror or str(err)).lower()
