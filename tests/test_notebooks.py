"""The notebooks: each .py source agrees with its .ipynb, and every notebook runs in quick mode.

Each notebook is a jupytext percent-format ``notebooks/NN_name.py`` (the source people edit)
paired with ``NN_name.ipynb`` (the same cells plus the outputs of a full run). The pair test
fails when one was edited without the other (``python notebooks/refresh.py NN --no-execute``
brings the .ipynb up to date). Quick mode (``MINIFCN_QUICK=1``) shrinks sizes, steps and
epochs; each notebook ends in asserts on what it taught, so running it is the test. Figures
go to matplotlib's Agg backend. The capstone (07) runs with its reference solution filled
into the exercise cells, so the hook that plugs the learner's functions into FCN-8s is
exercised on every run.
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 300

_spec = importlib.util.spec_from_file_location("refresh", ROOT / "notebooks" / "refresh.py")
refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refresh)


def test_all_seven_notebooks_are_present_as_pairs():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]
    assert [p.stem for p in SOURCES] == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_py_source_and_ipynb_hold_the_same_cells(py):
    assert refresh.differences(py, py.with_suffix(".ipynb")) == [], (
        f"{py.name} and its .ipynb differ; run: python notebooks/refresh.py {py.stem[:2]} "
        "--no-execute (then refresh its outputs with a full run)"
    )


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_notebook_has_a_graded_exercise_without_its_solution(py):
    text = py.read_text()
    assert "grade(check_" in text and "raise NotImplementedError" in text
    assert "solutions" not in "".join(
        line for line in text.splitlines() if line.startswith(("import", "from"))
    ), "the notebooks must not import the reference solutions"


def test_pair_check_notices_an_edit_to_either_file(tmp_path):
    py, ipynb = SOURCES[0], NOTEBOOKS[0]
    edited_py = tmp_path / py.name
    copied_ipynb = tmp_path / ipynb.name
    shutil.copy(ipynb, copied_ipynb)
    text = py.read_text()
    edited_py.write_text(text.replace("# # 1. Convolution", "# # 1. Convolutions", 1))
    assert any("cell 0" in d for d in refresh.differences(edited_py, copied_ipynb))
    edited_py.write_text(text + "\n# %%\nprint('one more cell')\n")
    assert refresh.differences(edited_py, copied_ipynb)
    # and an .ipynb edited on its own
    edited_py.write_text(text)
    assert refresh.differences(edited_py, copied_ipynb) == []
    nb = nbformat.read(copied_ipynb, as_version=4)
    nb.cells[-1].source += "\n# edited in Jupyter only"
    nbformat.write(nb, copied_ipynb)
    assert refresh.differences(edited_py, copied_ipynb)


def test_merging_keeps_ids_and_outputs_of_unchanged_cells(tmp_path):
    py, ipynb = SOURCES[0], NOTEBOOKS[0]
    saved = nbformat.read(ipynb, as_version=4)
    edited = tmp_path / py.name
    edited.write_text(py.read_text().replace("# # 1. Convolution", "# # 1. Convolutions", 1))
    shutil.copy(ipynb, tmp_path / ipynb.name)
    nb = refresh.merged(edited, tmp_path / ipynb.name)
    assert nb.cells[0].source.startswith("# 1. Convolutions")
    assert [c.get("id") for c in nb.cells[1:]] == [c.get("id") for c in saved.cells[1:]]
    assert [c.get("outputs") for c in nb.cells[1:]] == [c.get("outputs") for c in saved.cells[1:]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIFCN_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One thread (minifcn's CPU pool takes its count from OPENBLAS_NUM_THREADS): the kernel
    # runs beside pytest on a small CI machine, and the outputs do not depend on the count.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pythonpath = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + pythonpath if pythonpath else ""))
    nb = nbformat.read(path, as_version=4)
    solution = refresh.solution_for(path)
    if solution is not None:  # the capstone trains on the exercises: run the reference solution
        refresh.fill_in(nb, solution)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.get("outputs", []))
    assert "all checks passed" in text


def test_filling_in_the_solution_puts_the_stubs_back():
    nb = nbformat.read(ROOT / "notebooks" / "07_capstone.ipynb", as_version=4)
    before = [c.source for c in nb.cells]
    originals = refresh.fill_in(nb, refresh.solution_for(ROOT / "notebooks" / "07_capstone.py"))
    assert originals and all(refresh.EXERCISE_MARK not in c.source for c in nb.cells)
    refresh.put_back(nb, originals)
    assert [c.source for c in nb.cells] == before


def _imports_before(text: str, marker: str) -> list:
    """The objects the notebook's import lines bind before the first line holding ``marker``."""
    import ast
    import importlib

    head = text[: text.rfind("# %%", 0, text.index(marker))]  # up to the grading cell
    found = []
    for node in ast.walk(ast.parse(head)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minifcn"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name)
                found.append((f"{node.module}.{alias.name}", value))
                if isinstance(value, type):  # a class brings its methods
                    found += [(f"{alias.name}.{k}", v) for k, v in vars(value).items()]
    return found


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_no_notebook_imports_an_exercise_s_operation_before_the_exercise(py):
    import re

    from minifcn.course import graders

    text = py.read_text()
    for check_name in sorted(set(re.findall(r"grade\((check_\w+)", text))):
        check = getattr(graders, check_name)
        blocked = {}
        for group in check.blocks:
            for target in graders.BLOCKED[group]:
                _, _, value = graders._resolve(target)
                blocked[id(getattr(value, "__func__", value))] = target
        early = _imports_before(text, f"grade({check_name}")
        hits = [name for name, v in early if id(getattr(v, "__func__", v)) in blocked]
        assert not hits, f"{py.name} imports {hits} before the exercise graded by {check_name}"
