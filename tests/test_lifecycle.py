"""Careless and hostile use of train / evaluate / predict: every case ends in one clear line
and a non-zero exit, or succeeds; nothing saved is ever corrupt or inconsistent."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minifcn.commands.bench import main as bench_main
from minifcn.commands.evaluate import main as evaluate_main
from minifcn.commands.predict import main as predict_main
from minifcn.commands.train import best_row, train
from minifcn.models.checkpoint import (
    load_checkpoint,
    load_model,
    load_run_checkpoint,
    save_checkpoint,
)
from minifcn.optim import Adam
from minifcn.storage.npz import save_npz_atomic
from minifcn.training import runfolder as runs

TINY = ["--train-size", "4", "--val-size", "4", "--batch-size", "4", "--no-progress", "--grid", "1"]


def run(out, *extra):
    return train(["--out", str(out), *TINY, *extra])


def command(*args, cwd=None):
    """The real command in a fresh interpreter: (exit code, last line of stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    lines = p.stderr.strip().splitlines()
    return p.returncode, lines[-1] if lines else ""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One finished 1-epoch run, copied by the tests that change it."""
    out = tmp_path_factory.mktemp("base") / "r"
    run(out, "--epochs", "1")
    return out


def copy_run(base_run, tmp_path, name="r"):
    dst = tmp_path / name
    shutil.copytree(base_run, dst)
    return dst


def state_of(path):
    return load_checkpoint(path)[1]["state"]


def assert_consistent(out):
    """last.npz, best.npz and metrics.json tell the same story; no temporaries."""
    last, best = state_of(out / "last.npz"), state_of(out / "best.npz")
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, last["epoch"] + 1))
    assert best["epoch"] == last["best_epoch"] == best_row(history)["epoch"]
    assert len((out / "metrics.csv").read_text().splitlines()) == len(history) + 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for name in ("last.npz", "best.npz"):
        for k, v in load_checkpoint(out / name)[0].items():
            assert np.isfinite(v).all(), (name, k)


# --------------------------------------------------------------- non-finite weights
def test_a_diverging_command_saves_nothing_and_says_so(tmp_path):
    out = tmp_path / "n2"
    code, line = command("minifcn.train", *TINY, "--epochs", "3", "--lr", "1e39", "--out", str(out))
    assert code == 1
    assert line.startswith("error: ") and "Nothing was saved" in line
    assert not out.exists()  # the folder this run created held nothing and was removed
    code, line = command("minifcn.train", "--lr", "nan", "--out", str(tmp_path / "n3"))
    assert code == 2 and "--lr: must be a finite number" in line


def test_weights_that_become_non_finite_are_never_saved(base_run, tmp_path, monkeypatch):
    out = copy_run(base_run, tmp_path)
    before = (out / "last.npz").read_bytes(), (out / "best.npz").read_bytes()
    step = Adam.step

    def poisoned(self):
        step(self)
        self.params[0].data[...] = np.inf

    monkeypatch.setattr(Adam, "step", poisoned)
    with pytest.raises(SystemExit, match=r"NaN or infinite.*last.npz \(end of epoch 1, finite"):
        train(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    assert ((out / "last.npz").read_bytes(), (out / "best.npz").read_bytes()) == before
    assert_consistent(out)


def test_evaluate_and_predict_refuse_non_finite_weights(base_run, tmp_path):
    weights, meta, _ = load_checkpoint(base_run / "best.npz")
    weights = {k: np.full_like(v, np.nan) for k, v in weights.items()}
    save_npz_atomic(tmp_path / "bad.npz", weights, meta)  # what an old version could write
    with pytest.raises(SystemExit, match="non-finite weights"):
        evaluate_main(["--checkpoint", str(tmp_path / "bad.npz"), "--size", "2"])
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 64)).save(image)
    with pytest.raises(SystemExit, match="non-finite weights"):
        predict_main([str(image), "--checkpoint", str(tmp_path / "bad.npz")])
    model = load_model(base_run / "best.npz")[0]
    next(iter(model.parameters())).data[0] = np.nan
    with pytest.raises(ValueError, match="refusing to save"):
        save_checkpoint(tmp_path / "never.npz", model)
    assert not (tmp_path / "never.npz").exists()


# --------------------------------------------------------------- one run per folder
def test_two_commands_into_one_folder_one_wins(tmp_path):
    args = [sys.executable, "-m", "minifcn.train", *TINY, "--epochs", "1", "--out", "dup"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "in use by another training run" in loser or "is not empty" in loser
    assert_consistent(tmp_path / "dup")


def test_a_locked_folder_is_refused(tmp_path):
    folder = runs.RunFolder.open(tmp_path / "busy")
    try:
        with pytest.raises(SystemExit, match="in use by another training run"):
            run(tmp_path / "busy", "--epochs", "1")
    finally:
        folder.close()


# ------------------------------------------------------------------ bad data, early
def _voc(root, n=3, size=(64, 64)):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    ids = [f"im{i}" for i in range(n)]
    for i in ids:
        Image.new("RGB", size, (90, 120, 30)).save(root / "JPEGImages" / f"{i}.jpg")
        Image.new("L", size, 0).save(root / "SegmentationClass" / f"{i}.png")
    for split in ("train", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    return root


VOC = ["--dataset", "voc", "--config", "mini", "--batch-size", "1", "--epochs", "1",
       "--no-progress", "--grid", "0"]  # fmt: skip


def test_bad_data_files_are_listed_before_training(tmp_path, capsys):
    root = _voc(tmp_path / "voc")
    (root / "JPEGImages/im0.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("L", (60, 64)).save(root / "SegmentationClass/im1.png")
    data = (root / "JPEGImages/im2.jpg").read_bytes()
    (root / "JPEGImages/im2.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exc:
        train(["--data-root", str(root), "--out", str(tmp_path / "o"), *VOC])
    msg = str(exc.value.code)
    assert "data problem(s) found before training" in msg
    assert "im0.jpg" in msg and "im1.png is 60x64 but image" in msg and "im2.jpg" in msg
    assert msg.count("im1.png") == 1  # listed in both splits, reported once
    assert "epoch 1/" not in capsys.readouterr().out  # nothing was trained
    assert not (tmp_path / "o").exists()


def test_a_bad_label_value_stops_in_one_line_with_a_resumable_save(tmp_path):
    root = _voc(tmp_path / "voc")
    Image.new("L", (64, 64), 77).save(root / "SegmentationClass/im2.png")
    with pytest.raises(SystemExit) as exc:
        train(["--data-root", str(root), "--out", str(tmp_path / "o"), *VOC])
    msg = str(exc.value.code)
    assert msg.startswith("error: label file") and "im2.png has value 77" in msg
    assert "--resume" in msg and "\n" not in msg
    load_run_checkpoint(tmp_path / "o" / "last.npz")  # a valid run checkpoint


def test_unusable_out_folders(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        run(tmp_path / "f", "--epochs", "1")
    with pytest.raises(SystemExit, match="a part of that path is a file"):
        run(tmp_path / "f" / "sub", "--epochs", "1")
    code, line = command("minifcn.train", "--out", "/proc/minifcn_run", *TINY)
    assert code == 1 and line.startswith("error: cannot create run folder /proc/minifcn_run")


# ------------------------------------------------------------ the save is one unit
def test_ctrl_c_during_the_epoch_save_finishes_it(tmp_path, monkeypatch):
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 1:  # in the middle of the first commit's renames
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(runs.os, "replace", replace)
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "r", "--epochs", "2")
    assert exc.value.code == 130
    assert_consistent(tmp_path / "r")
    assert state_of(tmp_path / "r" / "last.npz")["epoch"] == 1


def test_a_failed_save_rolls_back(base_run, tmp_path, monkeypatch):
    out = copy_run(base_run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, seen = runs.write_temp, []

    def full_disk(path, write):  # the file after the epoch-2 last.npz cannot be written
        if seen:
            raise OSError(28, "No space left on device")
        if path.name == "last.npz":
            seen.append(path)
        return real(path, write)

    monkeypatch.setattr(runs, "write_temp", full_disk)
    with pytest.raises(SystemExit, match="cannot save epoch 2.*No space left.*end of epoch 1"):
        train(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


# -------------------------------------------------------------------------- resume
def test_resume_refuses_conflicting_flags(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    code, line = command("minifcn.train", "--out", str(out), "--resume", "--model", "fcn32s",
                         "--lr", "1e-5")  # fmt: skip
    assert code == 1
    assert "--lr 1e-05 (the run's: 0.003)" in line and "--model fcn32s (the run's: fcn8s)" in line


def test_resume_rejects_foreign_and_weights_only_checkpoints(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    other = tmp_path / "o32"
    run(other, "--epochs", "1", "--model", "fcn32s")
    shutil.copy(other / "last.npz", out / "last.npz")
    before = (out / "best.npz").read_bytes()
    with pytest.raises(SystemExit, match="does not agree with itself.*fcn32s.*fcn8s"):
        train(["--out", str(out), "--resume", "--no-progress"])
    assert (out / "best.npz").read_bytes() == before
    save_checkpoint(out / "last.npz", load_model(base_run / "best.npz")[0])
    with pytest.raises(SystemExit, match="not a training-run checkpoint.*--init-from"):
        train(["--out", str(out), "--resume", "--no-progress"])


def test_a_damaged_last_checkpoint_falls_back_to_best(base_run, tmp_path, capsys):
    out = copy_run(base_run, tmp_path)
    data = (out / "last.npz").read_bytes()
    (out / "last.npz").write_bytes(data[: len(data) // 2])
    train(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "Resuming from best.npz" in err
    assert (out / "last.damaged.npz").exists()
    assert_consistent(out)
    assert state_of(out / "last.npz")["epoch"] == 2


# --------------------------------------------------------------------- --init-from
def test_init_from_the_same_model_keeps_at_once(base_run, tmp_path):
    run(tmp_path / "a", "--epochs", "1", "--at-once", "--init-from", str(base_run / "best.npz"))
    meta = load_checkpoint(tmp_path / "a" / "last.npz")[1]
    assert meta["spec"]["at_once"] is True and meta["args"]["at_once"] is True
    src = load_model(base_run / "best.npz")[0]
    assert src.spec()["at_once"] is False


# ------------------------------------------------------------- counts and numbers
@pytest.mark.parametrize(
    "flag, value",
    [("--train-size", "0"), ("--epochs", "0"), ("--batch-size", "-2"), ("--seed", "-1"),
     ("--lr", "inf"), ("--epochs", "two")],
)  # fmt: skip
def test_zero_and_negative_counts_are_errors(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        train(["--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_refuses_zero_sizes(base_run, capsys):
    for flag in ("--size", "--batch-size"):
        with pytest.raises(SystemExit) as exc:
            evaluate_main(["--checkpoint", str(base_run / "best.npz"), flag, "0"])
        assert exc.value.code == 2 and f"argument {flag}: must be a positive integer" in (
            capsys.readouterr().err
        )


# ---------------------------------------------------------------------- big images
def test_predict_in_tiles_and_refusal_with_the_memory_needed(base_run, tmp_path):
    image = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (140, 180, 3), dtype=np.uint8)).save(image)
    ckpt = str(base_run / "best.npz")
    predict_main([str(image), "--checkpoint", ckpt, "-o", str(tmp_path / "whole.png")])
    predict_main([str(image), "--checkpoint", ckpt, "-o", str(tmp_path / "tiled.png"),
                  "--tile", "96"])  # fmt: skip
    whole, tiled = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("whole", "tiled"))
    np.testing.assert_array_equal(whole, tiled)
    with pytest.raises(SystemExit, match="raise --max-memory"):
        predict_main([str(image), "--checkpoint", ckpt, "-o", str(tmp_path / "x.png"),
                      "--max-memory", "0.0001"])  # fmt: skip


# ------------------------------------------------------------------- file hygiene
def test_files_respect_the_umask_and_leftovers_are_removed(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    stale = [out / ".last.npz.dead1234.tmp", out / ".curves.png.dead1234.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    old = os.umask(0o027)
    try:
        train(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    finally:
        os.umask(old)
    assert not any(p.exists() for p in stale)
    for name in ("last.npz", "best.npz", "metrics.csv", "curves.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name
    assert_consistent(out)


def test_bench_json_is_checked_before_the_run(tmp_path):
    (tmp_path / "b.json").write_text("keep")
    with pytest.raises(SystemExit, match="exists"):
        bench_main(["--quick", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "b.json").read_text() == "keep"
    with pytest.raises(SystemExit, match="does not exist"):
        bench_main(["--quick", "--json", str(tmp_path / "missing" / "b.json")])
