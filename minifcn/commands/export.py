"""``python -m minifcn.export --checkpoint runs/X/best.npz --format onnx -o model.onnx``.

Writes to a temporary file beside the output, reads it back (ONNX: onnxruntime against
minifcn's forward on a random image; safetensors: every tensor), and only then moves it into
place. An existing output is never replaced without ``--force``. Bad input ends in one
``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from minifcn.export.common import (
    FORMATS,
    INSTALL_HINT,
    ExportError,
    default_size,
    refuse_nonfinite,
    require,
)
from minifcn.export.onnx_graph import OPSET, save_onnx
from minifcn.export.runtime import compare_onnx
from minifcn.export.weights import load_safetensors, save_safetensors
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import current_umask, describe_os_error, fsync_dir, temp_path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def export(checkpoint, fmt, output=None, force=False, input_size=None, check=True, log=print):
    """What the command does; raises ExportError (a ValueError) on bad input.

    Args:
        checkpoint: a minifcn ``.npz`` checkpoint.
        fmt: "onnx" or "safetensors".
        output: the file to write (default: the checkpoint's path with the format's suffix).
        force: replace an existing output.
        input_size: ONNX only: (H, W) for a fixed-size graph.
        check: read the file back before putting it in place.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if input_size is not None and fmt != "onnx":
        raise ExportError("--input-size applies to --format onnx only")
    out = Path(output) if output else Path(checkpoint).with_suffix("." + fmt)
    named = out.suffix.lower().lstrip(".")
    if named in FORMATS and named != fmt:  # the name promises the other format
        raise ExportError(
            f"-o {out} names a .{named} file, but --format {fmt} writes {fmt} data; give -o "
            f"a .{fmt} name or use --format {named}"
        )
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name")
    if os.path.lexists(out) and not force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    require("onnx" if fmt == "onnx" else "safetensors")
    try:
        model, meta = load_model(checkpoint)
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ExportError(f"{checkpoint} is not a usable minifcn checkpoint ({err!r})") from None
    try:
        refuse_nonfinite(model)
    except ExportError as err:
        raise ExportError(f"{checkpoint}: {err}; export an earlier checkpoint") from None
    model.eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(out)  # claimed with O_EXCL; the umask gives its permissions
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666))
    except OSError as err:
        raise ExportError(f"cannot write to {out.parent}: {describe_os_error(err)}") from None
    try:
        if fmt == "onnx":
            save_onnx(model, tmp, input_size, meta)
            log(f"{model.name} ({model.config.name} backbone) -> ONNX opset {OPSET}")
            if check:
                _check_onnx(model, tmp, input_size, log)
        else:
            save_safetensors(model, tmp, meta)
            if check:
                _check_safetensors(model, tmp, log)
        _place(tmp, out, force)
    except OSError as err:  # a full disk, a vanished folder
        reason = describe_os_error(err)
        raise ExportError(f"cannot write {out}: {reason}; nothing was written") from None
    except Exception as err:  # safetensors reports its I/O errors (a full disk) as its own
        if type(err).__name__ != "SafetensorError":
            raise
        full = any(f"os error {n})" in str(err) for n in (27, 28, 122))  # EFBIG ENOSPC EDQUOT
        reason = "the disk is full (or the file-size limit is reached)" if full else str(err)
        raise ExportError(f"cannot write {out}: {reason}; nothing was written") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _check_onnx(model, path, input_size, log) -> None:
    try:
        require("onnxruntime")
    except ExportError:
        log(f"onnxruntime is not installed, so the export was not run ({INSTALL_HINT})")
        return
    size = input_size or default_size(model)
    diff, tol = compare_onnx(model, path, size)
    log(
        f"onnxruntime on a 1x3x{size[0]}x{size[1]} input: max |onnx - minifcn| = {diff:.2e} "
        f"(tolerance {tol:.1e})"
    )
    if not diff <= tol:
        raise ExportError("onnxruntime's scores differ from minifcn's; nothing was written")


def _check_safetensors(model, path, log) -> None:
    state, _ = load_safetensors(path)
    ours = model.state_dict()
    if state.keys() != ours.keys() or any(not np.array_equal(state[k], ours[k]) for k in ours):
        raise ExportError("the safetensors file read back differs from the model")
    n = sum(v.size for v in state.values())
    log(f"read back with safetensors (NumPy): {len(state)} tensors, {n:,} values, all equal")


def _place(tmp, out: Path, force: bool) -> None:
    """Move the finished temporary file to ``out``, never over an existing file unless
    ``force`` (a hard link fails when ``out`` appeared in the meantime)."""
    fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW)
    try:
        os.fsync(fd)  # the writers do not fsync: the file is on disk before it has its name
        # The writers may make their own file (safetensors: mode 0600): the umask decides.
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    if force:
        os.replace(tmp, out)
    else:
        try:
            os.link(tmp, out, follow_symlinks=False)
        except FileExistsError:
            raise ExportError(f"{out} exists; pass --force to overwrite it") from None
    fsync_dir(out.parent)


def _parse_size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    try:
        size = (int(h), int(w if sep else h))
    except ValueError:
        raise ExportError(f"--input-size must read HxW, e.g. 64x64; got {text!r}") from None
    if min(size) < 1:
        raise ExportError(f"--input-size must be positive; got {text!r}")
    return size


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.export",
        description="Export a minifcn checkpoint to ONNX or safetensors.",
    )
    p.add_argument("--checkpoint", required=True, help="a minifcn .npz checkpoint")
    p.add_argument(
        "--format", default=None, help="onnx or safetensors (default: from -o's suffix, else onnx)"
    )
    p.add_argument("-o", "--output", default=None, help="default: the checkpoint, new suffix")
    p.add_argument("--input-size", default=None, help="ONNX: a fixed HxW instead of dynamic sides")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-check", action="store_true", help="do not read the export back")
    args = p.parse_args(argv)
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = suffix if suffix in FORMATS else "onnx"
    try:
        size = _parse_size(args.input_size) if args.input_size else None
        out = export(args.checkpoint, fmt, args.output, args.force, size, not args.no_check)
    except ValueError as err:  # ExportError, and the model's own ValueErrors (input sizes)
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out
