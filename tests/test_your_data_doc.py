"""docs/your-data.md: its Python example runs as a reader would run it, and its commands exist."""

import re
from pathlib import Path

import numpy as np

from minifcn.data.example import write_example
from minifcn.models import FCN8s
from minifcn.models.checkpoint import save_checkpoint

DOC = Path(__file__).resolve().parent.parent / "docs" / "your-data.md"
NAMES = ["background", "disk", "rectangle", "triangle", "cross"]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_python_example_runs_on_the_example_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_example(tmp_path / "data" / "folder", "folder", n=6)
    model = FCN8s(5, "mini", rng=0)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.data.shape)
    save_checkpoint(
        tmp_path / "runs" / "fcn8s_folder" / "best.npz",
        model,
        {"class_names": NAMES, "dataset": "folder"},
    )
    (block,) = python_blocks()
    scope: dict = {}
    exec(block, scope)  # noqa: S102 - the page's code, as a reader runs it
    mask = scope["mask"]
    assert mask.ndim == 2 and mask.dtype == np.int32
    out = capsys.readouterr().out
    assert "mean IU" in out and "disk" in out


def test_every_command_on_the_page_is_a_minifcn_command():
    from minifcn.commands import names

    used = set(re.findall(r"python -m minifcn\.(\w+)", DOC.read_text()))
    assert used and used <= set(names())
