"""The package's layers only look down, and the plain and accelerated paths keep one contract.

The import graph is read from the source with ``ast`` (imports inside functions
included), so a cycle cannot hide in a function body.
"""

from __future__ import annotations

import ast
import inspect
import shutil
from pathlib import Path

import pytest

import minifcn
from minifcn import dispatch

PACKAGE = Path(minifcn.__file__).parent

# Bottom to top. A module may import from its own layer or a lower one.
LAYERS = [
    ("low", ["minifcn.backend", "minifcn.storage"]),
    ("dispatch", ["minifcn.dispatch"]),
    ("nn", ["minifcn.nn"]),
    ("accel", ["minifcn.accel"]),
    ("models, data, optim", ["minifcn.models", "minifcn.data", "minifcn.optim"]),
    (
        "training, inference, export, course",
        [
            "minifcn.training",
            "minifcn.inference",
            "minifcn.export",
            "minifcn.course",
            "minifcn.distributed",
            "minifcn.analysis",
            "minifcn.api",
        ],
    ),
    ("commands", ["minifcn.commands", "minifcn.export.__main__"]),
]
# The package root: its __init__ (the public facade) and the `python -m minifcn.<command>`
# shims are entry points, above everything.
ENTRY = "entry points"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str, root: Path = PACKAGE) -> int | None:
    """Index into LAYERS (higher is further up), len(LAYERS) for entry points, None if unknown."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is not None:
        return best
    leaf = module.split(".")[-1]
    if module == "minifcn" or (module.count(".") == 1 and (root / f"{leaf}.py").is_file()):
        return len(LAYERS)  # minifcn/__init__.py, minifcn/<command>.py
    return None


def layer_name(index: int) -> str:
    return LAYERS[index][0] if index < len(LAYERS) else ENTRY


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the minifcn modules it imports (anywhere in its source)."""
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from pkg import submodule` imports the submodule
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            else:
                continue
            deps |= {t for t in targets if t in files and t != mod}
        graph[mod] = deps
    return graph


def upward_imports(graph, root: Path = PACKAGE) -> list[str]:
    problems = []
    for mod, deps in sorted(graph.items()):
        mine = layer_of(mod, root)
        if mine is None:
            problems.append(f"{mod} is in no layer: add it to LAYERS in {Path(__file__).name}")
            continue
        for dep in sorted(deps):
            theirs = layer_of(dep, root)
            if theirs is not None and theirs > mine:
                problems.append(
                    f"{mod} ({layer_name(mine)}) imports {dep} ({layer_name(theirs)}), "
                    "a higher layer"
                )
    return problems


def cycles(graph) -> list[list[str]]:
    """Every import cycle, each once (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_nn_never_imports_the_accelerated_path():
    graph = import_graph(PACKAGE)
    offenders = {m: d for m, d in graph.items() if m.startswith("minifcn.nn") for d in d}
    assert not [m for m, d in offenders.items() if d.startswith("minifcn.accel")]


@pytest.fixture
def package_copy(tmp_path):
    root = tmp_path / "minifcn"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_planted_upward_import_is_caught(package_copy):
    conv = package_copy / "nn" / "conv.py"
    conv.write_text(conv.read_text() + "\n\ndef _planted():\n    from ..commands import train\n")
    problems = upward_imports(import_graph(package_copy), package_copy)
    assert any("minifcn.nn.conv (nn) imports minifcn.commands.train" in p for p in problems)


def test_a_planted_cycle_is_caught(package_copy):
    im2col = package_copy / "nn" / "im2col.py"
    im2col.write_text(im2col.read_text() + "\n\ndef _planted():\n    from . import conv\n")
    assert ["minifcn.nn.conv", "minifcn.nn.im2col"] in cycles(import_graph(package_copy))


def test_a_module_outside_every_layer_is_reported(package_copy):
    (package_copy / "newpkg").mkdir()
    (package_copy / "newpkg" / "__init__.py").write_text("")
    problems = upward_imports(import_graph(package_copy), package_copy)
    assert any("minifcn.newpkg is in no layer" in p for p in problems)


# ------------------------------------------------------------ the paths' contract
def _arity(fn) -> int:
    return len([p for p in inspect.signature(fn).parameters.values() if p.name != "self"])


def _plain_functions() -> dict:
    from minifcn.nn import conv, conv_transpose, loss, pool

    ops = {}
    for module in (conv, conv_transpose, pool, loss):
        ops.update(vars(module.PLAIN))
    return ops


@pytest.mark.parametrize("path", ["plain", "cpu", "gpu"])
def test_every_path_implements_the_layer_ops_protocol(path):
    from minifcn.accel import cpu, gpu

    functions = {"plain": _plain_functions(), "cpu": vars(cpu), "gpu": vars(gpu)}[path]
    for name in dispatch.ACCELERATED_OPS:
        assert callable(functions.get(name)), f"{path} path lacks {name}"
        assert _arity(functions[name]) == _arity(getattr(dispatch.LayerOps, name)), name


def test_the_protocol_names_the_nine_functions_the_layers_dispatch():
    assert set(dispatch.ACCELERATED_OPS) == set(_plain_functions())
    assert len(dispatch.ACCELERATED_OPS) == 9
