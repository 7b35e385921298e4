"""The ``minifcn`` console script runs the same commands as ``python -m minifcn.<command>``."""

import subprocess
import sys

import pytest

from minifcn.commands import main, names


def test_every_command_module_is_listed_and_has_a_main():
    assert {"train", "evaluate", "predict", "export", "compare", "explain", "bench"} <= set(names())
    assert "args" not in names()


def test_minifcn_command_runs_the_command(capsys):
    main(["explain", "--model", "fcn32s", "--config", "paper"])
    assert "crop" in capsys.readouterr().out.lower()


def test_an_unknown_command_is_one_line_naming_the_commands():
    with pytest.raises(SystemExit) as err:
        main(["trian"])
    assert "unknown command 'trian'" in str(err.value) and "train" in str(err.value)


def test_python_dash_m_minifcn_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "minifcn", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "predict" in out.stdout
