"""Your own data: the folder and labelme readers, their checks, and the backbone's size rules."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from minifcn.data import DataProblems, FolderDataset, LabelmeDataset, iterate_batches
from minifcn.data.example import write_example
from minifcn.data.labelme import rasterize
from minifcn.data.registry import DATASETS, build_dataset, dataset_kwargs
from minifcn.data.sizes import fit_sizes
from minifcn.models import FCN8s

CLASSES = "background\ncat\ndog\n"


def _pair(root, name, size=(40, 30), values=(0, 1, 2), image_suffix=".jpg", sub=""):
    """Write images/<name> and masks/<name>.png of ``size`` (w, h) under ``root/sub``."""
    w, h = size
    base = root / sub if sub else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (120, 60, 30)).save(base / "images" / f"{name}{image_suffix}")
    mask = np.resize(np.asarray(values, dtype=np.uint8), h * w).reshape(h, w)
    Image.fromarray(mask).save(base / "masks" / f"{name}.png")
    return mask


def _folder(tmp_path, n=5, classes=CLASSES):
    root = tmp_path / "data"
    for i in range(n):
        _pair(root, f"im{i}")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def _problems(root, **kw):
    with pytest.raises(DataProblems) as exc:
        FolderDataset(root, "train", **kw)
    return exc.value.problems


# ------------------------------------------------------------------ folder: layout and split
def test_a_folder_without_split_files_gets_a_seeded_split_said_in_the_notes(tmp_path):
    root = _folder(tmp_path, n=10)
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert (len(train), len(val)) == (8, 2)
    assert not {p[0] for p in train.pairs} & {p[0] for p in val.pairs}
    assert "random 20% of its 10 images (seed 0)" in train.notes[0]
    assert FolderDataset(root, "val").pairs == val.pairs  # the same seed, the same split
    assert FolderDataset(root, "val", split_seed=1).pairs != val.pairs
    assert train.class_names == ("background", "cat", "dog") and train.num_classes == 3
    image, label = train[0]
    assert image.shape == (3, 30, 40) and image.dtype == np.float32 and label.dtype == np.int64


def test_train_and_val_come_from_subfolders_or_from_list_files(tmp_path):
    root = tmp_path / "split"
    for i in range(3):
        _pair(root, f"t{i}", sub="train")
    _pair(root, "v0", sub="val")
    (root / "classes.txt").write_text(CLASSES)
    assert (len(FolderDataset(root, "train")), len(FolderDataset(root, "val"))) == (3, 1)
    lists = _folder(tmp_path, n=4)
    (lists / "train.txt").write_text("im0\nim1.jpg\n\nim2\n")  # a suffix and a blank line are fine
    (lists / "val.txt").write_text("im3\n")
    val = FolderDataset(lists, "val")
    assert [p[0].stem for p in val.pairs] == ["im3"] and len(FolderDataset(lists, "train")) == 3


def test_without_classes_txt_the_number_of_classes_names_them(tmp_path):
    root = _folder(tmp_path, classes=None)
    assert FolderDataset(root, num_classes=4).class_names == tuple(f"class_{i}" for i in range(4))
    assert any("has no classes.txt" in p and "--num-classes" in p for p in _problems(root))


def test_the_ignore_value_is_configurable_and_never_a_class(tmp_path):
    root = _folder(tmp_path)
    ds = FolderDataset(root, ignore_index=9)
    assert ds.ignore_index == 9 and ds.transform.ignore_index == 9
    assert ds.check_files() == []
    assert any(
        "ignore value 2 is also class 2 ('dog')" in p for p in _problems(root, ignore_index=2)
    )


# ------------------------------------------------------------------ folder: bad input
def test_every_structural_problem_is_listed_at_once(tmp_path):
    root = _folder(tmp_path, classes="background\n\ncat\ncat\n")
    (root / "masks" / "im0.png").unlink()
    Image.new("L", (4, 4)).save(root / "masks" / "stray.png")
    problems = _problems(root)
    assert any("image" in p and "im0.jpg has no mask" in p for p in problems)
    assert any("stray.png has no image" in p for p in problems)
    assert any("line 2 is blank" in p for p in problems)
    assert any("names 'cat' twice (lines 3 and 4)" in p for p in problems)
    with pytest.raises(
        DataProblems, match=r"^4 problem\(s\) with the data in .*nothing was written"
    ):
        FolderDataset(root)


def test_an_empty_split_is_refused(tmp_path):
    root = tmp_path / "split"
    _pair(root, "t0", sub="train")
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir()
    (root / "classes.txt").write_text(CLASSES)
    assert _problems(root) == [f"the val split of {root} is empty"]


def test_a_mask_value_that_is_not_a_class_id_names_the_first_file_and_value(tmp_path):
    root = _folder(tmp_path)
    _pair(root, "im3", values=(0, 1, 7))
    (problem,) = (
        FolderDataset(root, "train").check_files() + FolderDataset(root, "val").check_files()
    )
    assert problem.startswith(f"mask {root / 'masks' / 'im3.png'} has value 7 at x=2, y=0")
    assert "not a class id (0..2) nor the ignore value 255" in problem


def test_a_mask_of_another_size_than_its_image_is_reported(tmp_path):
    root = _folder(tmp_path, n=3)
    Image.new("L", (41, 30)).save(root / "masks" / "im1.png")
    problems = FolderDataset(root, "train").check_files() + FolderDataset(root, "val").check_files()
    assert problems == [
        f"mask {root / 'masks' / 'im1.png'} is 41x30 but its image {root / 'images' / 'im1.jpg'} "
        "is 40x30 (width x height)"
    ]


def test_rgb_masks_are_refused_with_how_to_convert_them(tmp_path):
    root = _folder(tmp_path, n=3)
    grey = np.zeros((30, 40, 3), np.uint8)
    grey[5:9] = 2
    Image.fromarray(grey).save(root / "masks" / "im0.png")
    colour = np.zeros((30, 40, 3), np.uint8)
    colour[5:9] = (128, 0, 0)
    Image.fromarray(colour).save(root / "masks" / "im1.png")
    problems = sorted(
        FolderDataset(root, "train").check_files() + FolderDataset(root, "val").check_files()
    )
    assert "is an RGB image" in problems[0] and "convert('L')" in problems[0]
    assert "holds 2 colours: map each colour to its class id" in problems[1]


def test_jpeg_masks_and_masks_that_only_hold_the_ignore_value_are_refused(tmp_path):
    root = _folder(tmp_path, n=3)
    Image.new("L", (40, 30)).save(root / "masks" / "im0.jpg")
    (root / "masks" / "im0.png").unlink()
    assert any("lossy compression" in p for p in _problems(root))
    binary = tmp_path / "binary"
    for i in range(3):
        _pair(binary, f"b{i}", values=(0, 255))
    (binary / "classes.txt").write_text("background\nobject\n")
    (problem,) = FolderDataset(binary, "train").check_files()
    assert "only the values 0 and 255, the ignore value" in problem and "class id 1" in problem


# ------------------------------------------------------------------ labelme
def _labelme(path, shapes, size=(60, 40), image="file", version="5.5.0"):
    """A labelme file as labelme 5 writes it; ``image``: "file", "embedded" or "missing"."""
    w, h = size
    picture = Image.new("RGB", (w, h), (10, 200, 90))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    if image == "file":
        picture.save(path.with_suffix(".png"))
    doc = {
        "version": version,
        "flags": {},
        "shapes": [
            {
                "label": label,
                "points": points,
                "group_id": None,
                "description": "",
                "shape_type": kind,
                "flags": {},
                "mask": None,
            }
            for label, kind, points in shapes
        ],  # fmt: skip
        "imagePath": path.with_suffix(".png").name,
        "imageData": base64.b64encode(buffer.getvalue()).decode() if image == "embedded" else None,
        "imageHeight": h,
        "imageWidth": w,
    }
    path.write_text(json.dumps(doc, indent=2))


def test_labelme_shapes_are_painted_in_order_so_the_later_shape_wins(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    shapes = [
        ("cat", "rectangle", [[30, 20], [10, 5]]),  # corners in any order
        ("dog", "circle", [[30, 20], [30, 28]]),  # centre and a point on the circle: r = 8
        ("cat", "polygon", [[45, 2], [58, 2], [58, 12]]),
    ]
    _labelme(root / "a.json", shapes)
    _labelme(root / "b.json", [("dog", None, [[1, 1], [5, 1], [5, 5]])])  # old files: null type
    (root / "train.txt").write_text("a\n")
    (root / "val.txt").write_text("b.json\n")
    ds = LabelmeDataset(root, "train")
    assert ds.class_names == ("background", "cat", "dog")  # background, then sorted labels
    image, label = ds.read(0)
    ids = {"cat": 1, "dog": 2}
    expected = rasterize([(lb, k, pts, None) for lb, k, pts in shapes], 40, 60, ids, 255)
    np.testing.assert_array_equal(label, expected)
    assert label[10, 15] == 1 and label[0, 0] == 0  # inside the rectangle only; outside all
    assert label[20, 30] == 2 and label[20, 24] == 2  # the circle, drawn later, covers it
    assert label[27, 30] == 2 and label[20, 40] == 0  # r = 8 both ways
    assert label[4, 56] == 1 and label[10, 47] == 0  # inside / outside the triangle
    assert image.shape == (40, 60, 3)
    assert LabelmeDataset(root, "val").read(0)[1][3, 4] == 2  # a polygon without shape_type


def test_labelme_uses_the_embedded_image_when_there_is_no_image_file(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    _labelme(root / "a.json", [("cat", "polygon", [[1, 1], [20, 1], [20, 20]])], image="embedded")
    _labelme(root / "b.json", [("cat", "polygon", [[1, 1], [20, 1], [20, 20]])])
    assert not (root / "a.png").exists()
    items = [LabelmeDataset(root, s).read(0) for s in ("train", "val")]
    for image, label in items:
        assert image.shape == (40, 60, 3) and (image[0, 0] == (10, 200, 90)).all()
        assert label[5, 15] == 1


def test_a_labelme_mask_shape_is_pasted_at_its_box_corner():
    bits = np.zeros((10, 10), np.uint8)
    bits[2:6, 3:5] = 1
    buffer = io.BytesIO()
    Image.fromarray(bits * 255).save(buffer, format="PNG")
    shape = ("cat", "mask", [[10.0, 5.0], [19.0, 14.0]], base64.b64encode(buffer.getvalue()))
    label = rasterize([shape], 30, 40, {"cat": 1}, 255)
    expected = np.zeros((30, 40), np.uint8)
    expected[7:11, 13:15] = 1
    np.testing.assert_array_equal(label, expected)


def test_labelme_problems_are_listed_at_once(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    _labelme(root / "a.json", [("cat", "polygon", [[1, 1], [20, 1]])])
    _labelme(root / "b.json", [("cat", "rectangle", [[1, 1], [2, 2]])], image="missing")
    (root / "c.json").write_text("{not json")
    with pytest.raises(DataProblems) as exc:
        LabelmeDataset(root)
    problems = exc.value.problems
    assert any("a.json shape 1 ('cat', polygon) has 2 point(s); a polygon needs at least 3" in p
               for p in problems)  # fmt: skip
    assert any("b.json: its image" in p and "does not exist and the file holds no imageData" in p
               for p in problems)  # fmt: skip
    assert any(p.startswith("cannot read labelme file") and "c.json" in p for p in problems)


def test_labelme_classes_txt_fixes_the_ids_and_refuses_unknown_labels(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    _labelme(root / "a.json", [("dog", "rectangle", [[0, 0], [9, 9]])])
    _labelme(root / "b.json", [("bird", "rectangle", [[0, 0], [9, 9]])])
    (root / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\n")  # labelme's own
    with pytest.raises(DataProblems, match="label 'bird', which is not in the class list"):
        LabelmeDataset(root)
    (root / "b.json").unlink()
    _labelme(root / "b.json", [("__ignore__", "rectangle", [[0, 0], [9, 9]])])
    ds = [LabelmeDataset(root, s) for s in ("train", "val")]
    assert ds[0].class_names == ("_background_", "dog", "cat")
    labels = {d.pairs[0][1].stem: d.read(0)[1] for d in ds}
    assert labels["a"][5, 5] == 1 and labels["b"][5, 5] == 255 and labels["a"][20, 20] == 0


# ------------------------------------------------------------------ sizes
def test_images_of_sizes_the_mini_fcn8s_refuses_are_padded_for_it(tmp_path):
    model = FCN8s(3, "mini")
    assert not model.supports(50) and not model.supports(90)
    root = tmp_path / "odd"
    for i, size in enumerate([(90, 50), (50, 90), (64, 64), (90, 50)]):
        _pair(root, f"im{i}", size=size)
    (root / "train.txt").write_text("im0\nim1\nim2\n")
    (root / "val.txt").write_text("im3\n")
    (root / "classes.txt").write_text(CLASSES)
    ds = FolderDataset(root)
    notes = fit_sizes(ds, model.supports, batch_size=1, what="the mini FCN-8s")
    assert "padded at the bottom and right" in notes[0]
    for image, label in iterate_batches(ds, 1):
        assert all(model.supports(s) for s in label.shape[1:])
        model.eval()(image)  # goes through
    image, label = ds[0]
    assert label.shape == (63, 95) and (label[50:] == 255).all() and (image[:, 50:] == 0).all()


def test_differing_sizes_in_batches_get_random_crops_of_a_side_the_network_takes(tmp_path):
    model = FCN8s(3, "mini")
    root = tmp_path / "data"
    for i, size in enumerate([(120, 80), (100, 90), (60, 60)]):
        _pair(root, f"im{i}", size=size)
    (root / "classes.txt").write_text(CLASSES)
    (root / "train.txt").write_text("im0\nim1\n")
    (root / "val.txt").write_text("im2\n")
    ds = FolderDataset(root)
    notes = fit_sizes(ds, model.supports, batch_size=2, what="the mini FCN-8s")
    assert not model.supports(80) and model.supports(78)
    assert ds.transform.crop_size == 78 and "random 78x78 crops" in notes[0]
    images, labels = next(iterate_batches(ds, 2))
    assert images.shape == (2, 3, 78, 78)
    asked = FolderDataset(root)
    assert fit_sizes(asked, model.supports, 2, crop_size=50) == [
        "--crop-size 50 raised to 63, the next side the network takes"
    ]


def test_a_backbone_that_takes_every_side_gets_whole_images_unpadded(tmp_path):
    root = _folder(tmp_path, n=4)
    _pair(root, "im1", size=(53, 41))
    ds = FolderDataset(root)
    assert fit_sizes(ds, lambda side: True, batch_size=1, what="the paper FCN-8s") == []
    assert {tuple(ds[i][1].shape) for i in range(len(ds))} == set(ds.image_sizes())


# ------------------------------------------------------------------ registry and examples
def test_the_registry_builds_every_on_disk_dataset_from_command_settings(tmp_path):
    root = _folder(tmp_path)
    kw = dataset_kwargs("folder", "train", {"seed": 3, "crop_size": 32, "ignore_index": 200}, True)
    ds = build_dataset("folder", "train", root, **kw)
    assert (ds.ignore_index, ds.transform.crop_size, ds.transform.flip, ds.seed) == (
        200,
        32,
        True,
        3,
    )
    assert dataset_kwargs("voc", "val", {"seed": 3, "crop_size": 32}) == {}
    assert dataset_kwargs("shapes", "val", {"seed": 3, "val_size": 7}) == {"seed": 3, "size": 7}
    assert DATASETS["folder"].config == "mini" and DATASETS["voc"].config == "paper"
    with pytest.raises(ValueError, match="pass --data-root pointing at your dataset folder"):
        build_dataset("folder", "train")


@pytest.mark.parametrize("layout", ["folder", "folder-split", "labelme"])
def test_every_example_layout_reads_back_without_a_problem(tmp_path, layout):
    root = write_example(tmp_path / layout, layout, n=10, seed=1)
    cls = LabelmeDataset if layout == "labelme" else FolderDataset
    splits = [cls(root, s) for s in ("train", "val")]
    assert sum(len(d) for d in splits) == 10 and all(d.check_files() == [] for d in splits)
    sizes = {hw for d in splits for hw in d.image_sizes()}
    assert len(sizes) > 1  # the examples come in several sizes and aspect ratios
    labels = np.concatenate([d.read(i)[1].ravel() for d in splits for i in range(len(d))])
    assert set(np.unique(labels)) > {0}
