"""Output files: never overwritten, complete or absent (a full disk leaves no file, not even
an empty one, and one line instead of a traceback), named for what they hold, with the
permissions the umask gives, and JSON that any parser reads (no bare NaN)."""

import json
import os

import numpy as np
import pytest
from guarantee_tools import checkpoint, command, one_error_line, voc_tree
from PIL import Image

import minifcn.commands.evaluate as evaluate_command


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("ckpt") / "m.npz")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)).save(path)
    return path


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ never overwritten
@pytest.mark.parametrize("flag", ["--json", "--figure"])
def test_compare_outputs_are_checked_first_and_never_replaced(tmp_path, ckpt, flag):
    existing = tmp_path / "old.png"
    existing.write_text("keep me")
    code, out, err = command("minifcn.compare", ckpt, "--val-size", "2", flag, existing)
    assert code == 1 and "exists" in one_error_line(err) and "mean IU" not in out
    assert existing.read_text() == "keep me"


def test_compare_writes_its_figure_and_json_as_new_files(tmp_path, ckpt):
    code, _, err = command(
        "minifcn.compare", ckpt, "--val-size", "2", "--figure", tmp_path / "f.png",
        "--json", tmp_path / "t.json",
    )  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "f.png").format == "PNG"
    assert json.loads((tmp_path / "t.json").read_text())[0]["model"] == "fcn8s"


def test_an_evaluate_json_that_appears_during_the_run_is_not_replaced(tmp_path, ckpt, monkeypatch):
    target = tmp_path / "scores.json"
    real = evaluate_command.Segmenter.evaluate

    def evaluate_while_someone_writes(*args, **kwargs):
        target.write_text("written by someone else meanwhile")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_command.Segmenter, "evaluate", evaluate_while_someone_writes)
    with pytest.raises(SystemExit, match="appeared while the command ran; it was not replaced"):
        evaluate_command.main(["--checkpoint", str(ckpt), "--size", "2", "--json", str(target)])
    assert target.read_text() == "written by someone else meanwhile"
    assert leftovers(tmp_path) == []


def test_predict_never_replaces_a_mask_or_an_overlay_without_force(tmp_path, ckpt, image):
    (tmp_path / "m_overlay.png").write_text("keep")
    code, _, err = command("minifcn.predict", image, "--checkpoint", ckpt, "-o", tmp_path / "m.png")
    assert code == 1 and "m_overlay.png exists" in one_error_line(err)
    assert not (tmp_path / "m.png").exists() and (tmp_path / "m_overlay.png").read_text() == "keep"
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere")  # a broken link is a name taken
    code, _, err = command(
        "minifcn.predict", image, "--checkpoint", ckpt, "-o", tmp_path / "link.png"
    )
    assert code == 1 and "exists" in one_error_line(err)
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------------ full disks
FULL_DISK = [
    ("evaluate", lambda c, t, i: ["minifcn.evaluate", "--checkpoint", c, "--size", "2",
                                  "--json", t / "out.json"], "out.json", 64),
    ("predict", lambda c, t, i: ["minifcn.predict", i, "--checkpoint", c, "-o", t / "out.png"],
     "out.png", 64),
    ("export onnx", lambda c, t, i: ["minifcn.export", "--checkpoint", c, "-o", t / "out.onnx"],
     "out.onnx", 100_000),
    ("export safetensors", lambda c, t, i: ["minifcn.export", "--checkpoint", c, "-o",
                                            t / "out.safetensors"], "out.safetensors", 100_000),
    ("compare", lambda c, t, i: ["minifcn.compare", c, "--val-size", "2", "--figure",
                                 t / "out.png"], "out.png", 1000),
    ("bench", lambda c, t, i: ["minifcn.bench", "--quick", "--repeat", "1", "--no-train",
                               "--no-plain", "--json", t / "out.json"], "out.json", 64),
]  # fmt: skip


@pytest.mark.parametrize("name, argv, output, limit", FULL_DISK, ids=[c[0] for c in FULL_DISK])
def test_a_full_disk_ends_in_one_line_and_leaves_no_file(tmp_path, ckpt, image, name, argv,
                                                          output, limit):  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = command(*argv(ckpt, out, image), file_limit=limit, cwd=tmp_path)
    line = one_error_line(err)
    assert code == 1 and "disk is full" in line and "nothing was written" in line, line
    assert list(out.iterdir()) == [], f"{name} left {list(out.iterdir())}"


# ---------------------------------------------------------- names say what files hold
def test_predict_refuses_a_mask_name_that_is_not_png(tmp_path, ckpt, image):
    for name in ("out.jpg", "out.JPEG", "out.webp"):
        code, _, err = command("minifcn.predict", image, "--checkpoint", ckpt, "-o",
                               tmp_path / name)  # fmt: skip
        assert code == 1 and "ending in .png" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    code, _, err = command("minifcn.predict", image, "--checkpoint", ckpt, "-o", tmp_path / "m.PNG")
    assert code == 0, err
    assert Image.open(tmp_path / "m.PNG").format == Image.open(tmp_path / "m_overlay.PNG").format


def test_export_refuses_a_name_of_the_other_format(tmp_path, ckpt):
    code, _, err = command("minifcn.export", "--checkpoint", ckpt, "--format", "onnx",
                           "-o", tmp_path / "x.safetensors")  # fmt: skip
    assert code == 1 and "names a .safetensors file" in one_error_line(err)
    code, _, err = command("minifcn.export", "--checkpoint", ckpt, "--format", "safetensors",
                           "-o", tmp_path / "x.ONNX")  # fmt: skip
    assert code == 1 and "use --format onnx" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- permissions
@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_exported_files_get_the_permissions_of_the_umask(tmp_path, ckpt, fmt):
    old = os.umask(0o027)
    try:
        code, _, err = command("minifcn.export", "--checkpoint", ckpt, "-o", tmp_path / f"m.{fmt}")
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / f"m.{fmt}").stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------- JSON has no NaN
def test_scores_without_labelled_pixels_are_null_in_json_not_nan(tmp_path):
    root = voc_tree(tmp_path / "voc")
    for label in (root / "SegmentationClass").iterdir():  # every pixel void (255)
        Image.fromarray(np.full((64, 64), 255, np.uint8), mode="L").save(label)
    model = checkpoint(tmp_path / "voc.npz", classes=21, dataset="voc")
    code, _, err = command("minifcn.evaluate", "--checkpoint", model, "--data-root", root,
                           "--json", tmp_path / "s.json")  # fmt: skip
    assert code == 0, err

    def no_constants(name):
        raise AssertionError(f"bare {name} in the JSON")

    scores = json.loads((tmp_path / "s.json").read_text(), parse_constant=no_constants)
    assert scores["mean_iu"] is None and scores["per_class_iu"] == [None] * 21
