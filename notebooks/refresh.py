"""Carry edits from a notebook's .py source into its .ipynb, and refresh its saved outputs.

Each notebook is two files: ``NN_name.py`` (jupytext percent format: the source you edit,
lint and diff) and ``NN_name.ipynb`` (the same cells with the outputs of a full run).

    python notebooks/refresh.py 03              # run 03 in full mode, save its outputs
    python notebooks/refresh.py 03 --no-execute # only copy the .py's cells into the .ipynb
    python notebooks/refresh.py 03 --quick      # run 03 in quick mode; nothing is written
    python notebooks/refresh.py --check         # are all pairs in sync? (exit status 1 if not)

Notebook 07 (the capstone) runs with notebooks/solutions/nb07.py filled into its exercise
cells, and saves its stubs back (see ``SOLVED``).

Only the notebooks named are touched. Cells whose text is unchanged keep their id, metadata
and (with --no-execute) their outputs; new cells get new ids. A full run unsets
MINIFCN_QUICK and MPLBACKEND (so that the figures are saved); it sets
OPENBLAS_NUM_THREADS=1 unless it is already set (minifcn's CPU layers then run on one
thread, and the plain path's BLAS too): the outputs are the same for any thread count, and
one thread keeps a notebook's own timings steady beside other jobs.
Notebooks 04 and 05 train for minutes on a laptop CPU.

``jupytext --sync notebooks/03_transposed_convolution.py`` does the same as --no-execute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

HERE = Path(__file__).resolve().parent


def pairs() -> list[tuple[Path, Path]]:
    """(source .py, .ipynb) for every notebook NN_name.py in this folder."""
    return [(py, py.with_suffix(".ipynb")) for py in sorted(HERE.glob("[0-9][0-9]_*.py"))]


def find(key: str) -> tuple[Path, Path]:
    """The pair whose name starts with ``key`` (``03`` or ``03_transposed_convolution``)."""
    found = [p for p in pairs() if p[0].stem.startswith(key)]
    if len(found) != 1:
        names = ", ".join(py.stem for py, _ in pairs())
        raise SystemExit(f"no single notebook matches {key!r}; choose one of {names}")
    return found[0]


def cells(nb) -> list[tuple[str, str]]:
    """What must agree between the two files: each cell's type and text."""
    return [(c.cell_type, c.source.strip("\n")) for c in nb.cells]


def differences(py: Path, ipynb: Path) -> list[str]:
    """Empty when ``ipynb`` holds exactly the cells of ``py``; otherwise what differs."""
    if not ipynb.exists():
        return [f"{ipynb.name} is missing"]
    text, saved = cells(jupytext.read(py)), cells(nbformat.read(ipynb, as_version=4))
    out = []
    if len(text) != len(saved):
        out.append(f"{py.name} has {len(text)} cells, {ipynb.name} {len(saved)}")
    for k, (a, b) in enumerate(zip(text, saved)):
        if a != b:
            first = a[1].strip().splitlines()[:1] or [""]
            out.append(f"cell {k} ({a[0]}, starting {first[0][:60]!r}) differs")
    return out


def merged(py: Path, ipynb: Path):
    """The .py's cells, with the ids, metadata and outputs the .ipynb has for unchanged cells."""
    source = jupytext.read(py)
    if not ipynb.exists():
        return source
    return combine_inputs_with_outputs(source, nbformat.read(ipynb, as_version=4), "py:percent")


# Notebooks whose later cells need the exercises done (the capstone trains on the learner's
# functions): their saved outputs, and the test suite's quick run, come from a run with the
# reference solution filled into the exercise cells. The cells are put back as stubs before
# the notebook is saved, so the saved notebook never shows the solution.
SOLVED = {"07": "nb07.py"}
EXERCISE_MARK = "# YOUR CODE HERE"


def solution_for(py: Path) -> Path | None:
    """The solution file filled in when ``py`` runs, or None."""
    name = SOLVED.get(py.stem[:2])
    return HERE / "solutions" / name if name else None


def fill_in(nb, solution: Path) -> dict:
    """Replace the exercise cells of ``nb`` by the solution's code, in place.

    The first exercise cell gets the whole solution file, the others a comment.
    Returns {cell index: original source} for ``put_back``.
    """
    originals = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and EXERCISE_MARK in cell.source:
            originals[i] = cell.source
            cell.source = solution.read_text() if len(originals) == 1 else "# (filled in above)"
    if not originals:
        raise ValueError(f"no cell with {EXERCISE_MARK!r} to fill in from {solution.name}")
    return originals


def put_back(nb, originals: dict) -> None:
    """Undo ``fill_in``: the exercise cells get their stubs back (their outputs stay)."""
    for i, source in originals.items():
        nb.cells[i].source = source


def execute(nb, quick: bool, timeout: int = 3600, solution: Path | None = None) -> float:
    """Run ``nb`` top to bottom in place (kernel in this folder); returns the seconds taken.

    With ``solution``, the exercise cells run the solution's code (see ``SOLVED``) and get
    their stubs back afterwards.
    """
    from nbclient import NotebookClient

    originals = fill_in(nb, solution) if solution is not None else {}

    saved = {k: os.environ.get(k) for k in ("MINIFCN_QUICK", "OPENBLAS_NUM_THREADS", "MPLBACKEND")}
    if quick:
        os.environ["MINIFCN_QUICK"] = "1"
    else:
        os.environ.pop("MINIFCN_QUICK", None)
        # The kernel's own inline backend, so that plt.show() puts every figure into the
        # saved outputs (MPLBACKEND=Agg, set for tests, would silently drop them).
        os.environ.pop("MPLBACKEND", None)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,  # no per-cell timestamps: diffs show only real changes
            resources={"metadata": {"path": str(HERE)}},
        ).execute()
    finally:
        put_back(nb, originals)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to refresh, e.g. 03 or 05_training")
    parser.add_argument("--no-execute", action="store_true", help="copy cells, run nothing")
    parser.add_argument("--quick", action="store_true", help="run in quick mode, write nothing")
    parser.add_argument("--check", action="store_true", help="report pairs out of sync")
    args = parser.parse_args(argv)
    if args.check:
        bad = {py.name: d for py, ipynb in pairs() if (d := differences(py, ipynb))}
        for name, lines in bad.items():
            print(f"{name}: " + "; ".join(lines))
        print(
            "all pairs in sync" if not bad else "run: python notebooks/refresh.py NN --no-execute"
        )
        return 1 if bad else 0
    if not args.names:
        parser.error("name at least one notebook (e.g. 03), or use --check")
    for py, ipynb in map(find, args.names):
        nb = merged(py, ipynb)
        if args.no_execute:
            nbformat.write(nb, ipynb)
            print(f"{ipynb.name}: cells copied from {py.name}")
            continue
        seconds = execute(nb, quick=args.quick, solution=solution_for(py))
        if args.quick:
            print(f"{py.stem}: quick run passed in {seconds:.0f} s (nothing written)")
        else:
            nbformat.write(nb, ipynb)
            print(f"{ipynb.name}: full run in {seconds:.0f} s, outputs saved", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
