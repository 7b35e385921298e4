"""The run folder touches only what is its own: no write through a link, no removal of a
file the project did not make, nothing left behind by a refused or failed run."""

import os
import shutil

import pytest
from guarantee_tools import tree_state

from minifcn.commands.train import train
from minifcn.training.runfolder import LOCK_NAME, MARKER_NAME, RunFolder, RunFolderError

TINY = ["--train-size", "4", "--val-size", "4", "--batch-size", "4", "--no-progress", "--grid", "1"]


def run(out, *extra):
    return train(["--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "r"
    run(out, "--epochs", "1")
    return out


@pytest.fixture
def victim(tmp_path):
    """A user's file outside every run folder; the tests check it is never changed."""
    path = tmp_path / "precious.txt"
    path.write_text("the user's thesis\n")
    return path


def refused(out, *extra) -> str:
    with pytest.raises(SystemExit) as exc:
        run(out, *extra)
    assert exc.value.code != 0
    return str(exc.value.code)


# ----------------------------------------------------------------- links are not followed
@pytest.mark.parametrize("resume", [False, True], ids=["new run", "resume"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(
    finished_run, tmp_path, victim, resume
):
    if resume:
        out = tmp_path / "r"
        shutil.copytree(finished_run, out)
        (out / LOCK_NAME).unlink()
    else:
        out = tmp_path / "empty"
        out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    message = refused(out, *(["--resume"] if resume else []))
    assert "symbolic link" in message and str(out) in message
    assert victim.read_text() == "the user's thesis\n"
    assert os.readlink(out / LOCK_NAME) == str(victim)


def test_a_lock_file_with_another_name_or_foreign_content_is_never_rewritten(tmp_path, victim):
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(victim, hard / LOCK_NAME)  # the same file under a second name
    assert "hard links" in refused(hard)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / LOCK_NAME).write_text("my own notes, not a process id\n")
    assert "not a minifcn lock file" in refused(foreign)
    assert victim.read_text() == "the user's thesis\n"
    assert (foreign / LOCK_NAME).read_text() == "my own notes, not a process id\n"


def test_a_marker_that_is_a_link_is_refused(tmp_path, victim):
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER_NAME).symlink_to(victim)
    assert "not a plain file" in refused(out)
    assert victim.read_text() == "the user's thesis\n"


def test_files_saved_over_links_replace_the_link_not_its_target(finished_run, tmp_path, victim):
    out = tmp_path / "r"
    shutil.copytree(finished_run, out)
    for name in ("metrics.json", "curves.png"):
        (out / name).unlink()
        (out / name).symlink_to(victim)
    run(out, "--resume", "--epochs", "2")
    assert victim.read_text() == "the user's thesis\n"
    for name in ("metrics.json", "curves.png"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0


# ---------------------------------------------------------------- nothing not ours removed
def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path):
    out = tmp_path / "u"
    out.mkdir()
    (out / ".draft.tmp").write_text("x")
    (out / ".last.npz.0123abcd.tmp").write_text("looks like ours, is not")  # no run marker
    before = tree_state(out)
    assert "not empty" in refused(out)
    assert tree_state(out) == before  # no .lock, no marker, both files kept


def test_in_a_run_folder_only_our_own_leftover_temporaries_go(finished_run, tmp_path, victim):
    out = tmp_path / "r"
    shutil.copytree(finished_run, out)
    ours = out / ".last.npz.dead1234.tmp"
    ours.write_bytes(b"half a checkpoint")
    kept = {
        ".notes.tmp": "a user's file",
        ".my.draft.0123abcd.tmp": "named like ours, for a file a run never writes",
        ".best.npz.12345678.tmp.bak": "not our pattern",
    }
    for name, text in kept.items():
        (out / name).write_text(text)
    (out / ".best.npz.cafe1234.tmp").symlink_to(victim)  # our pattern, but a link
    run(out, "--resume", "--epochs", "2")
    assert not ours.exists()
    for name, text in kept.items():
        assert (out / name).read_text() == text
    assert (out / ".best.npz.cafe1234.tmp").is_symlink()
    assert victim.read_text() == "the user's thesis\n"


# ------------------------------------------------------------ refused and failed runs
def test_a_failed_run_leaves_no_folder_it_created(tmp_path):
    """--out a/b/c: the run creates a, a/b and a/b/c and fails before saving: all three go."""
    voc = ["--dataset", "voc", "--config", "mini", "--data-root", str(tmp_path / "no-voc")]
    message = refused(tmp_path / "a" / "b" / "c", *voc, "--batch-size", "1")
    assert "no-voc" in message
    assert not (tmp_path / "a").exists()
    (tmp_path / "keep").mkdir()  # a parent that existed stays, with what it holds
    (tmp_path / "keep" / "mine.txt").write_text("x")
    refused(tmp_path / "keep" / "b" / "c", *voc, "--batch-size", "1")
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["mine.txt"]


def test_an_empty_folder_of_the_user_gets_back_its_state_after_a_refused_run(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    voc = ["--dataset", "voc", "--config", "mini", "--data-root", str(tmp_path / "no-voc")]
    refused(out, *voc, "--batch-size", "1")
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_second_run_into_a_locked_folder_leaves_the_lock_alone(tmp_path):
    out = tmp_path / "r"
    first = RunFolder.open(out)
    try:
        pid = (out / LOCK_NAME).read_text()
        with pytest.raises(RunFolderError, match="in use"):
            RunFolder.open(out)
        assert (out / LOCK_NAME).read_text() == pid
    finally:
        first.close(remove_if_unused=True)
    assert not out.exists()
