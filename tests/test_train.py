"""The training command end to end, on a few shapes images: files, determinism, resume, errors."""

import json

import numpy as np
import pytest

from minifcn.backend import gpu_available
from minifcn.commands import train as train_mod
from minifcn.commands.evaluate import main as evaluate_main
from minifcn.commands.predict import main as predict_main
from minifcn.commands.train import train
from minifcn.models import FCN32s
from minifcn.models.checkpoint import load_checkpoint, save_checkpoint
from minifcn.nn import SoftmaxCrossEntropy
from minifcn.training.step import TrainStep

TINY = ["--train-size", "8", "--val-size", "4", "--batch-size", "4", "--no-progress", "--grid", "2"]


def run(out, *extra):
    return train(["--out", str(out), *TINY, *extra])


def weights(path):
    return load_checkpoint(path)[0]


def test_a_run_leaves_metrics_checkpoints_and_plots(tmp_path, capsys):
    summary = run(tmp_path / "r", "--epochs", "2", "--model", "fcn32s")
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"metrics.csv", "metrics.json", "best.npz", "last.npz", "curves.png",
            "predictions.png"} <= files  # fmt: skip
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "mean_iu" in (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0]
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("best validation mean IU")
    assert summary["best_mean_iu"] == max(h["mean_iu"] for h in history)
    assert not list((tmp_path / "r").glob("*.tmp"))  # atomic writes leave no leftovers


def test_the_same_seed_gives_the_same_numbers(tmp_path):
    run(tmp_path / "a", "--epochs", "1", "--seed", "3")
    run(tmp_path / "b", "--epochs", "1", "--seed", "3")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [h["train_loss"] for h in a] == [h["train_loss"] for h in b]
    for k, v in weights(tmp_path / "a" / "last.npz").items():
        np.testing.assert_array_equal(v, weights(tmp_path / "b" / "last.npz")[k], err_msg=k)


def _interrupt_at(monkeypatch, step):
    """Make the step-th training step's backward pass raise KeyboardInterrupt, as Ctrl-C
    would. Steps are counted, not backward calls: a step runs one loss backward here or
    two (the batch split's halves, with or without its helper, as the load decides)."""
    steps = {"n": 0}
    original, take_step = SoftmaxCrossEntropy.backward, TrainStep.__call__

    def counted_step(self, *a):
        steps["n"] += 1
        return take_step(self, *a)

    def backward(self, *a):
        if steps["n"] == step:
            raise KeyboardInterrupt
        return original(self, *a)

    monkeypatch.setattr(TrainStep, "__call__", counted_step)
    monkeypatch.setattr(SoftmaxCrossEntropy, "backward", backward)
    return original


def _same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_resume_after_an_epoch_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch):
    run(tmp_path / "full", "--epochs", "2")
    original = _interrupt_at(monkeypatch, 3)  # the first step of epoch 2 (2 steps per epoch)
    with pytest.raises(SystemExit):
        run(tmp_path / "part", "--epochs", "2")
    monkeypatch.setattr(SoftmaxCrossEntropy, "backward", original)
    train(["--out", str(tmp_path / "part"), "--resume", "--no-progress"])
    _same_weights(tmp_path / "full" / "last.npz", tmp_path / "part" / "last.npz")
    losses = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "part")]
    assert [h["train_loss"] for h in losses[0]] == [h["train_loss"] for h in losses[1]]
    assert [h["mean_iu"] for h in losses[0]] == [h["mean_iu"] for h in losses[1]]


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, capsys):
    run(tmp_path / "full", "--epochs", "1", "--train-size", "12")
    original = _interrupt_at(monkeypatch, 2)
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "cut", "--epochs", "1", "--train-size", "12")
    assert exc.value.code == 130
    assert "--resume" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "cut" / "last.npz")[1]["state"]["step_in_epoch"] == 1
    monkeypatch.setattr(SoftmaxCrossEntropy, "backward", original)
    train(["--out", str(tmp_path / "cut"), "--resume", "--no-progress"])
    _same_weights(tmp_path / "full" / "last.npz", tmp_path / "cut" / "last.npz")


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run(tmp_path / "r", "--epochs", "1")
    before = weights(tmp_path / "r" / "last.npz")
    original = SoftmaxCrossEntropy.forward

    def nan_loss(self, scores, labels):  # the loss computed (backward can follow), then NaN
        original(self, scores, labels)
        return float("nan")

    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", nan_loss)
    kept = r"last.npz \(end of epoch 1, finite weights\) was kept"
    with pytest.raises(SystemExit, match=r"loss became nan at epoch 2, step 1.*" + kept):
        train(["--out", str(tmp_path / "r"), "--resume", "--epochs", "2", "--no-progress"])
    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", original)
    after = weights(tmp_path / "r" / "last.npz")
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_collapsed_predictions_trigger_a_warning_with_per_class_iu(tmp_path, capsys):
    run(tmp_path / "r", "--epochs", "1", "--lr", "0")  # nothing learnt: scores all zero
    err = capsys.readouterr().err
    assert "predictions collapsed onto class 0" in err and "rectangle" in err


def test_staged_training_starts_from_the_previous_stage(tmp_path, capsys):
    run(tmp_path / "s32", "--epochs", "1", "--model", "fcn32s")
    run(tmp_path / "s16", "--epochs", "1", "--model", "fcn16s",
        "--init-from", str(tmp_path / "s32" / "best.npz"))  # fmt: skip
    assert "initialised fcn16s from fcn32s" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot start fcn32s from a fcn16s checkpoint"):
        run(tmp_path / "bad", "--epochs", "1", "--model", "fcn32s",
            "--init-from", str(tmp_path / "s16" / "best.npz"))  # fmt: skip


def test_bad_input_is_refused_and_nothing_is_overwritten(tmp_path):
    run(tmp_path / "r", "--epochs", "1")
    before = (tmp_path / "r" / "last.npz").read_bytes()
    with pytest.raises(SystemExit, match="is not empty; pass --resume"):
        run(tmp_path / "r", "--epochs", "1")
    assert (tmp_path / "r" / "last.npz").read_bytes() == before
    with pytest.raises(SystemExit, match="cannot resume"):
        train(["--out", str(tmp_path / "nothing"), "--resume"])
    with pytest.raises(SystemExit, match="pass --data-root"):
        run(tmp_path / "voc", "--dataset", "voc", "--batch-size", "1")
    with pytest.raises(SystemExit, match="does not exist|not found|No such"):
        run(tmp_path / "voc2", "--dataset", "voc", "--data-root", str(tmp_path / "missing"),
            "--batch-size", "1")  # fmt: skip
    if not gpu_available():
        with pytest.raises(SystemExit, match="--device gpu: GPU requested"):
            run(tmp_path / "g", "--device", "gpu")


def test_evaluate_prints_the_four_metrics_and_a_per_class_table(tmp_path, capsys):
    run(tmp_path / "r", "--epochs", "1")
    scores = evaluate_main(["--checkpoint", str(tmp_path / "r" / "best.npz"), "--size", "4"])
    out = capsys.readouterr().out
    for word in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "triangle"):
        assert word in out
    assert 0 <= scores["mean_iu"] <= 1
    with pytest.raises(SystemExit, match="checkpoint not found"):
        evaluate_main(["--checkpoint", str(tmp_path / "nope.npz")])
    (tmp_path / "scores.json").write_text("keep me")
    with pytest.raises(SystemExit, match="scores.json exists"):
        evaluate_main(["--checkpoint", str(tmp_path / "r" / "best.npz"), "--json",
                       str(tmp_path / "scores.json")])  # fmt: skip
    assert (tmp_path / "scores.json").read_text() == "keep me"


def test_evaluate_refuses_a_checkpoint_for_other_classes(tmp_path):
    save_checkpoint(tmp_path / "m.npz", FCN32s(21, "mini"))
    with pytest.raises(SystemExit, match="predicts 21 classes but shapes has 5"):
        evaluate_main(["--checkpoint", str(tmp_path / "m.npz"), "--size", "2"])


def test_predict_writes_a_mask_and_an_overlay(tmp_path, capsys):
    from PIL import Image

    from minifcn.data import ShapesDataset

    run(tmp_path / "r", "--epochs", "1")
    image = tmp_path / "img.png"
    Image.fromarray(ShapesDataset("val", size=1, image_size=70).raw_image(0)).save(image)
    out = tmp_path / "out.png"
    predict_main([str(image), "--checkpoint", str(tmp_path / "r" / "best.npz"), "-o", str(out)])
    assert Image.open(out).size == (70, 70)
    assert (tmp_path / "out_overlay.png").is_file()
    with pytest.raises(SystemExit, match="exists; pass --force"):
        predict_main([str(image), "--checkpoint", str(tmp_path / "r" / "best.npz"), "-o", str(out)])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="bad.png"):
        predict_main([str(tmp_path / "bad.png"), "--checkpoint", str(tmp_path / "r" / "best.npz")])


def test_module_is_runnable():
    assert callable(train_mod.main)
