"""What must be the same on every rank: the arguments and the code.

Ranks started with different flags (another ``--lr`` on one node) or from different
checkouts would silently train different models into one folder; comparing two
hashes at start-up turns that into one line on every rank.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # minifcn/


@functools.cache
def code_digest(root: Path = PACKAGE) -> str:
    """A hash of every ``.py`` file of the minifcn package (relative path and contents)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def fingerprint(argv) -> dict:
    """``{"arguments": hash of argv, "code": hash of the package}``."""
    args = hashlib.sha256(json.dumps(list(argv)).encode()).hexdigest()[:12]
    return {"arguments": args, "code": code_digest()}
