"""The commands on your own data: example_data, predict on folders and globs, evaluate by name."""

import re

import numpy as np
import pytest
from PIL import Image

from minifcn.commands.evaluate import _parser as evaluate_parser
from minifcn.commands.example_data import main as example_main
from minifcn.commands.predict import main as predict_main
from minifcn.data import LabelmeDataset
from minifcn.data.registry import DATASETS
from minifcn.models import FCN8s
from minifcn.models.checkpoint import load_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = FCN8s(5, "mini", rng=0)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.data.shape)
    path = tmp_path_factory.mktemp("ckpt") / "best.npz"
    names = ["background", "disk", "rectangle", "triangle", "cross"]
    save_checkpoint(path, model, {"class_names": names, "dataset": "folder"})
    return str(path)


def _photos(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.{'jpg' if i % 2 else 'png'}")
    (folder / "notes.txt").write_text("not an image")


def test_predict_on_a_folder_writes_one_mask_and_one_overlay_per_image(
    checkpoint, tmp_path, capsys
):
    _photos(tmp_path / "photos", [(50, 70), (91, 33), (64, 64)])
    out = tmp_path / "out"
    written = predict_main([str(tmp_path / "photos"), "--checkpoint", checkpoint, "-o", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"p{i}_{kind}.png" for i in range(3) for kind in ("mask", "overlay")
    )
    assert len(written) == 3
    mask = Image.open(out / "p1_mask.png")
    assert mask.mode == "P" and mask.size == (91, 33)  # class ids, shown in colour
    assert np.asarray(mask).max() < 5
    assert Image.open(out / "p1_overlay.png").size == (91, 33)
    assert "wrote 3 masks and 3 overlays" in capsys.readouterr().out


def test_predict_never_overwrites_and_checks_everything_before_writing(checkpoint, tmp_path):
    _photos(tmp_path / "photos", [(40, 40), (40, 40)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1_overlay.png").write_bytes(b"mine")
    with pytest.raises(SystemExit, match=r"p1_overlay.png exists; pass --force"):
        predict_main([str(tmp_path / "photos"), "--checkpoint", checkpoint, "-o", str(out)])
    assert [p.name for p in out.iterdir()] == ["p1_overlay.png"]
    assert (out / "p1_overlay.png").read_bytes() == b"mine"
    (tmp_path / "photos" / "p2.png").write_bytes(b"broken")
    (tmp_path / "photos" / "p0.jpg").write_bytes((tmp_path / "photos" / "p1.jpg").read_bytes())
    with pytest.raises(SystemExit) as exc:
        predict_main(
            [str(tmp_path / "photos"), "--checkpoint", checkpoint, "-o", str(tmp_path / "o2")]
        )
    message = str(exc.value)
    assert "problems, nothing was written" in message and "cannot read image" in message
    assert "would both write" in message and not (tmp_path / "o2").exists()


def test_predict_takes_a_glob_and_a_single_image_keeps_its_own_names(checkpoint, tmp_path):
    _photos(tmp_path / "photos", [(40, 40), (45, 60), (30, 30)])
    out = tmp_path / "globbed"
    predict_main([str(tmp_path / "photos" / "*.png"), "--checkpoint", checkpoint, "-o", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [
        "p0_mask.png", "p0_overlay.png", "p2_mask.png", "p2_overlay.png"
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="no file matches"):
        predict_main([str(tmp_path / "*.tif"), "--checkpoint", checkpoint])
    single = tmp_path / "one.png"
    predict_main(
        [str(tmp_path / "photos" / "p1.jpg"), "--checkpoint", checkpoint, "-o", str(single)]
    )
    assert single.exists() and (tmp_path / "one_overlay.png").exists()


def test_example_data_writes_each_layout_once_and_never_over_a_folder(tmp_path, capsys):
    targets = example_main([str(tmp_path / "ex"), "--images", "4"])
    assert [t.name for t in targets] == ["folder", "folder-split", "labelme"]
    assert len(list((tmp_path / "ex" / "folder" / "images").iterdir())) == 4
    assert len(list((tmp_path / "ex" / "labelme").glob("*.json"))) == 4
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "ex").rglob("*"))
    with pytest.raises(SystemExit, match="folder exists; choose another folder"):
        example_main([str(tmp_path / "ex"), "--layout", "folder"])
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "ex").rglob("*")) == before


def test_the_commands_take_their_dataset_choices_from_the_registry():
    action = next(a for a in evaluate_parser()._actions if a.dest == "dataset")
    assert action.choices == list(DATASETS)
    assert {"shapes", "voc", "ade20k", "folder", "labelme"} <= set(DATASETS)


# ------------------------------------------------------------------ end to end, real commands
def test_from_the_example_folder_to_a_model_its_metrics_and_predicted_masks(tmp_path, capsys):
    from minifcn.commands.evaluate import main as evaluate_main
    from minifcn.commands.train import train

    example_main([str(tmp_path / "ex"), "--images", "5", "--layout", "folder"])
    data, run = tmp_path / "ex" / "folder", tmp_path / "run"
    summary = train(["--dataset", "folder", "--data-root", str(data), "--epochs", "1",
                     "--out", str(run), "--no-progress", "--grid", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert "random 20% of its 5 images (seed 0)" in out and "4 train / 1 val" in out
    assert re.search(r"differ in size .* random (\d+)x\1 crops .* the mini FCN-8s takes", out)
    assert summary["best_epoch"] == 1 and (run / "best.npz").exists()
    scores = evaluate_main(["--checkpoint", str(run / "best.npz")])
    table = capsys.readouterr().out
    assert scores["class_names"] == ["background", "disk", "rectangle", "triangle", "cross"]
    assert "rectangle" in table and "folder val (1 images)" in table
    assert scores["mean_iu"] == pytest.approx(summary["final"]["mean_iu"])
    predict_main([str(data / "images"), "--checkpoint", str(run / "best.npz"),
                  "-o", str(tmp_path / "pred")])  # fmt: skip
    assert len(list((tmp_path / "pred").glob("*_mask.png"))) == 5


def test_training_on_labelme_files_follows_their_classes(tmp_path, capsys):
    from minifcn.commands.train import train

    example_main([str(tmp_path / "ex"), "--images", "4", "--layout", "labelme"])
    summary = train(["--dataset", "labelme", "--data-root", str(tmp_path / "ex" / "labelme"),
                     "--epochs", "1", "--batch-size", "1", "--out", str(tmp_path / "run"),
                     "--no-progress", "--grid", "0"])  # fmt: skip
    out = capsys.readouterr().out
    classes = LabelmeDataset(tmp_path / "ex" / "labelme").class_names  # background + the labels
    assert classes[0] == "background" and len(classes) > 2
    assert f"labelme: 3 train / 1 val images, {len(classes)} classes" in out
    model = load_model(tmp_path / "run" / "best.npz")
    assert model[0].num_classes == len(classes) and model[1]["class_names"] == list(classes)
    assert summary["best_epoch"] == 1


def test_bad_data_stops_training_before_anything_is_written(tmp_path):
    from minifcn.commands.train import train

    example_main([str(tmp_path / "ex"), "--images", "4", "--layout", "folder"])
    data = tmp_path / "ex" / "folder"
    mask = data / "masks" / "shapes_001.png"
    ids = np.asarray(Image.open(mask)).copy()
    ids[3, 4] = 9
    Image.fromarray(ids).save(mask)
    (data / "masks" / "shapes_002.png").unlink()
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train(["--dataset", "folder", "--data-root", str(data), "--out", str(run), "--no-progress"])
    message = str(exc.value)
    assert message.startswith("error: 2 problem(s) with the data in")
    assert "shapes_002.jpg has no mask" in message
    assert f"mask {mask} has value 9 at x=4, y=3" in message
    assert not run.exists()
    with pytest.raises(SystemExit, match="--num-classes is for your own data"):
        train(["--num-classes", "3", "--out", str(run), "--no-progress"])
    assert not run.exists()
