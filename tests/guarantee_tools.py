"""What the guarantee tests share: the real commands in a fresh interpreter, small
checkpoints and datasets made in a moment, and files crafted the way a hostile user would."""

import os
import resource
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from minifcn.models import build_model
from minifcn.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def command(*args, cwd=None, env=None, file_limit=None, timeout=300, **popen):
    """``python -m <args>`` in a fresh interpreter: (exit code, stdout, stderr).

    ``file_limit``: no file may grow past this many bytes (RLIMIT_FSIZE, with SIGXFSZ
    ignored), so every write beyond it fails as on a full disk (EFBIG).
    """
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}

    def limit():
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    p = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        preexec_fn=limit,
        **popen,
    )
    return p.returncode, p.stdout, p.stderr


def one_error_line(stderr: str) -> str:
    """The command's message: the last line of stderr, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


def checkpoint(path, model="fcn8s", classes=5, dataset="shapes", seed=0, **meta):
    """A checkpoint of a fresh mini model, as evaluate and predict read it."""
    net = build_model(model, classes, "mini", rng=seed)
    save_checkpoint(path, net, {"dataset": dataset, "args": {"seed": 0}, **meta})
    return Path(path)


def png_bomb(path, width=30000, height=30000):
    """A PNG whose header declares ``width`` x ``height`` pixels in a few hundred bytes:
    Pillow refuses to open it (DecompressionBombError) before decoding anything."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    Path(path).write_bytes(data)
    return Path(path)


def voc_tree(root, ids=("a", "b"), side=64, split_text=None, image=None):
    """A tiny PASCAL VOC 2012 folder: ``ids`` images of ``side`` x ``side`` pixels with
    their labels, in the train and val lists (``split_text``: the lists' raw bytes)."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{i}.jpg")
        label = Image.fromarray(rng.integers(0, 21, (side, side), dtype=np.uint8), mode="L")
        label.save(root / "SegmentationClass" / f"{i}.png")
    text = split_text if split_text is not None else ("\n".join(ids) + "\n").encode()
    for split in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_bytes(text)
    return root


def tree_state(folder) -> dict:
    """name -> (kind, bytes or link target) of everything under ``folder``, links not followed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                state[str(p.relative_to(folder))] = ("link", os.readlink(p))
            elif p.is_file():
                state[str(p.relative_to(folder))] = ("file", p.read_bytes())
            else:
                state[str(p.relative_to(folder))] = ("dir", None)
    return state
