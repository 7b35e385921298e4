"""The commands: each module is argparse + ``main`` over library calls.

They are the top layer: nothing in the library imports them. Run one as
``python -m minifcn.<command>`` or ``minifcn <command>`` (this module's ``main``,
the console script).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from minifcn.commands.args import check_environment

check_environment()  # before any command imports matplotlib, which fails on a bad MPLBACKEND

NOT_COMMANDS = {"args"}  # helper modules of the commands


def names() -> list[str]:
    """Every command, found from the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_COMMANDS)


def _summary(name: str) -> str:
    doc = importlib.import_module(f"{__name__}.{name}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv=None) -> None:
    """``minifcn <command> [args]``: run one command, as ``python -m minifcn.<command>``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    available = names()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: minifcn <command> [options]   (minifcn <command> --help for its options)\n")
        for name in available:
            print(f"  {name:<10} {_summary(name)}")
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in available:
        sys.exit(f"minifcn: unknown command {name!r}; the commands are: {', '.join(available)}")
    sys.argv = [f"minifcn {name}", *rest]
    importlib.import_module(f"{__name__}.{name}").main(rest)
