"""A training run under signals, full disks, logs and absurd numbers: SIGTERM and SIGHUP
end it as Ctrl-C does (the partial epoch saved), a full disk at Ctrl-C is one line, a log
file gets lines rather than progress-bar frames, metrics.json stays strict JSON."""

import errno
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from guarantee_tools import REPO, command, one_error_line, voc_tree
from PIL import Image

import minifcn.training.loop as loop
from minifcn.commands.train import train
from minifcn.models.checkpoint import load_checkpoint
from minifcn.training import runfolder

TINY = ["--train-size", "4", "--val-size", "4", "--batch-size", "4", "--grid", "1"]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_the_partial_epoch_like_ctrl_c(tmp_path, signame):
    out = tmp_path / "r"
    p = subprocess.Popen(
        [sys.executable, "-m", "minifcn.train", "--out", str(out), "--train-size", "160",
         "--val-size", "4", "--batch-size", "2", "--epochs", "3", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "curves.png").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch is saved and reported: the signal lands in the second
    time.sleep(1.0)
    p.send_signal(getattr(signal, signame))
    _, err = p.communicate(timeout=120)
    signum = getattr(signal, signame)
    assert p.returncode == 128 + signum, err
    line = one_error_line(err)
    assert line.startswith(f"stopped by {signame}: saved {out / 'last.npz'} at epoch 2, step")
    state = load_checkpoint(out / "last.npz")[1]["state"]
    assert state["epoch"] == 1 and state["step_in_epoch"] > 0  # the partial epoch is kept


def test_ctrl_c_on_a_full_disk_is_one_line_and_keeps_the_previous_files(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "r"
    calls = []
    real = loop.batch_to_device

    def interrupted_after_a_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "batch_to_device", interrupted_after_a_step)
    monkeypatch.setattr(runfolder, "write_temp", full_disk)
    with pytest.raises(SystemExit) as exc:
        train(["--out", str(out), "--no-progress", "--train-size", "8", "--val-size", "4",
               "--batch-size", "2"])  # fmt: skip
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "During handling" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: could not save") and "disk is full" in line
    assert "Nothing was saved" in line
    assert not out.exists()  # the run created it and saved nothing: it is removed again


def test_a_log_file_gets_lines_not_progress_bar_frames(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        p = subprocess.run(
            [sys.executable, "-m", "minifcn.train", "--out", str(tmp_path / "r"), *TINY,
             "--epochs", "2"],
            stdout=f, stderr=subprocess.STDOUT,
            env={"PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"},
            timeout=300,
        )  # fmt: skip
    text = log.read_text()
    assert p.returncode == 0, text
    assert "\r" not in text and "it/s" not in text
    assert len(text.splitlines()) < 40  # a few lines per epoch, not a frame per step
    assert sum("epoch" in line for line in text.splitlines()) >= 2


def test_an_epoch_without_labelled_pixels_writes_null_not_nan(tmp_path):
    root = voc_tree(tmp_path / "voc", side=64)
    for label in (root / "SegmentationClass").iterdir():  # every pixel void (255)
        Image.fromarray(np.full((64, 64), 255, np.uint8), mode="L").save(label)
    out = tmp_path / "r"
    code, _, err = command(
        "minifcn.train", "--dataset", "voc", "--config", "mini", "--data-root", root,
        "--batch-size", "1", "--epochs", "1", "--out", out, "--no-progress", "--grid", "1",
    )  # fmt: skip
    assert code == 0, err

    def no_constants(name):
        raise AssertionError(f"bare {name} in metrics.json")

    history = json.loads((out / "metrics.json").read_text(), parse_constant=no_constants)
    assert history[0]["mean_iu"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", str(10**9)], "--epochs: must be at most 100,000"),
        (["--train-size", str(10**11)], "--train-size: must be at most"),
        (["--train-size", "100000000"], "GiB of memory"),
        (["--crop-size", "100000"], "--crop-size: must be at most 8,192"),
        (["--grid", "1000"], "--grid: must be at most 100"),
    ],
)
def test_absurd_numbers_are_refused_before_anything(tmp_path, args, message):
    code, _, err = command("minifcn.train", "--out", tmp_path / "r", *args, cwd=tmp_path)
    assert code in (1, 2) and message in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_resume_refuses_every_flag_it_would_not_apply(tmp_path):
    out = tmp_path / "r"
    train(["--out", str(out), *TINY, "--no-progress", "--epochs", "1"])
    for flag, value in (("--val-size", "2"), ("--seed", "3"), ("--schedule", "step")):
        with pytest.raises(SystemExit) as exc:
            train(["--out", str(out), "--resume", "--no-progress", flag, value])
        assert f"{flag} {value} (the run's:" in str(exc.value.code)
    train(["--out", str(out), "--resume", "--no-progress", "--val-size", "4", "--epochs", "2"])
    assert load_checkpoint(out / "last.npz")[1]["state"]["epoch"] == 2


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint16", "uint32", "int64", "uint64"])
def test_the_loss_takes_every_integer_label_type_on_both_paths(xp, dtype):
    """The device's kernels are compiled for three label types; the others are converted
    once, so the device gives what the plain path and the CPU give."""
    from helpers import close

    from minifcn.nn import SoftmaxCrossEntropy

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 5, 6)).astype(dtype)
    labels[0, 0, :3] = 255 if np.iinfo(dtype).max >= 255 else -1
    ignore = int(labels[0, 0, 0])
    want = SoftmaxCrossEntropy(ignore_index=ignore)
    want_loss = want(scores, labels.astype(np.int64))
    want_grad = want.backward()
    loss_fn = SoftmaxCrossEntropy(ignore_index=ignore)
    loss = loss_fn(xp.asarray(scores), xp.asarray(labels))
    assert loss == pytest.approx(want_loss, rel=1e-6)
    close(loss_fn.backward(), want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "side, extra", [(50, []), (64, ["--crop-size", "50"])], ids=["image-side", "crop-size"]
)
def test_sizes_the_network_cannot_take_never_reach_a_step_unadapted(tmp_path, side, extra):
    """Sides the mini backbone rejects (50) are fitted before the first step, with a note
    saying how (minifcn.data.sizes), instead of a ValueError from inside the network."""
    root = voc_tree(tmp_path / "voc", side=side)
    out = tmp_path / "r"
    code, stdout, err = command(
        "minifcn.train", "--dataset", "voc", "--config", "mini", "--data-root", root,
        "--batch-size", "1", "--epochs", "1", "--out", out, "--no-progress", "--grid", "1",
        *extra,
    )  # fmt: skip
    assert code == 0 and "Traceback" not in err, err
    assert "note:" in stdout and "50" in stdout
    assert (out / "last.npz").exists()


def test_the_loss_takes_float16_scores_on_both_paths(xp):
    from helpers import close

    from minifcn.nn import SoftmaxCrossEntropy

    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 3, 4, 5)).astype(np.float16)
    labels = rng.integers(0, 3, (2, 4, 5)).astype(np.uint8)
    want = SoftmaxCrossEntropy()
    want_loss = want(scores.astype(np.float32), labels)
    want_grad = want.backward()
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn(xp.asarray(scores), xp.asarray(labels))
    grad = loss_fn.backward()
    assert loss == pytest.approx(want_loss, rel=1e-3)
    assert grad.dtype == np.float16
    close(grad.astype(np.float32), want_grad, rtol=1e-2, atol=1e-3)
