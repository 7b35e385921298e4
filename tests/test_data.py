"""Datasets, augmentation, batching and colours, on tiny trees written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minifcn.data import (
    ADE20K,
    CLASS_NAMES,
    VGG_MEAN_RGB,
    SegmentationTransform,
    ShapesDataset,
    VOCSegmentation,
    build_dataset,
    colorize,
    denormalize,
    iterate_batches,
    make_palette,
    make_shapes,
    normalize,
    num_batches,
    overlay,
)
from minifcn.data import files as files_module
from minifcn.data.transforms import random_crop

# ----------------------------------------------------------------- fixture trees


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_palette_png(path: Path, label: np.ndarray) -> None:
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(make_palette().ravel().tolist())
    im.save(path)


def make_voc_tree(base: Path, labels: dict[str, np.ndarray], splits: dict[str, list[str]]) -> Path:
    """Write VOCdevkit/VOC2012 under ``base`` with one JPEG + palette PNG per id."""
    root = base / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for k, (image_id, label) in enumerate(labels.items()):
        h, w = label.shape
        Image.fromarray(_rgb(h, w, k)).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        _save_palette_png(root / "SegmentationClass" / f"{image_id}.png", label)
    for split, ids in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def make_ade_tree(base: Path, labels: dict[str, np.ndarray], split_dir="training") -> Path:
    """Write ADEChallengeData2016 under ``base`` with one JPEG + greyscale PNG per stem."""
    root = base / "ADEChallengeData2016"
    for sub in ("images", "annotations"):
        (root / sub / "training").mkdir(parents=True)
        (root / sub / "validation").mkdir(parents=True)
    for k, (stem, label) in enumerate(labels.items()):
        h, w = label.shape
        Image.fromarray(_rgb(h, w, k)).save(root / "images" / split_dir / f"{stem}.jpg")
        Image.fromarray(label.astype(np.uint8), mode="L").save(
            root / "annotations" / split_dir / f"{stem}.png"
        )
    return root


@pytest.fixture
def voc_root(tmp_path):
    a = np.zeros((20, 30), dtype=np.uint8)
    a[5:10, 5:15] = 15  # person
    a[10, :] = 255  # void outline
    b = np.full((24, 16), 7, dtype=np.uint8)  # car
    c = np.zeros((20, 30), dtype=np.uint8)
    return make_voc_tree(
        tmp_path,
        {"2007_000001": a, "2007_000002": b, "2007_000003": c},
        {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"], "empty": []},
    )


# --------------------------------------------------------------------------- VOC


def test_voc_reads_image_and_palette_label(voc_root):
    ds = VOCSegmentation(voc_root, "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.class_names[0] == "background" and ds.class_names[15] == "person"
    image, label = ds[0]
    assert image.dtype == np.float32 and image.shape == (3, 20, 30)
    assert label.dtype == np.int64 and label.shape == (20, 30)
    assert set(np.unique(label)) == {0, 15, 255}
    np.testing.assert_allclose(denormalize(image), ds.raw_image(0), atol=1)


def test_voc_accepts_folder_holding_vocdevkit(voc_root):
    parent = voc_root.parent.parent
    assert len(VOCSegmentation(parent, "val")) == 1


def test_voc_construction_opens_no_image(voc_root, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("an image was opened while building the dataset")

    monkeypatch.setattr(files_module.Image, "open", forbidden)
    ds = VOCSegmentation(voc_root, "train")
    assert len(ds) == 2
    with pytest.raises(AssertionError):
        ds[0]


def test_voc_label_out_of_range_names_file_and_value(voc_root):
    bad = np.zeros((20, 30), dtype=np.uint8)
    bad[0, 0] = 21
    _save_palette_png(voc_root / "SegmentationClass" / "2007_000003.png", bad)
    ds = VOCSegmentation(voc_root, "val")
    with pytest.raises(ValueError, match=r"2007_000003\.png.*value 21"):
        ds[0]


def test_voc_missing_root_and_split_errors(voc_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        VOCSegmentation(voc_root, "test")
    with pytest.raises(ValueError, match=r"empty\.txt"):
        VOCSegmentation(voc_root, "empty")


def test_voc_missing_image_named_at_construction(voc_root):
    (voc_root / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000002\.jpg"):
        VOCSegmentation(voc_root, "train")


def test_corrupt_jpeg_error_names_file(voc_root):
    path = voc_root / "JPEGImages" / "2007_000003.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    ds = VOCSegmentation(voc_root, "val")
    with pytest.raises(ValueError, match=r"2007_000003\.jpg"):
        ds[0]
    path.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"2007_000003\.jpg"):
        ds[0]


def test_rgb_label_png_is_refused(voc_root):
    path = voc_root / "SegmentationClass" / "2007_000003.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"2007_000003\.png.*mode"):
        VOCSegmentation(voc_root, "val")[0]


def test_voc_crop_pads_with_ignore_label_and_zero(voc_root):
    ds = VOCSegmentation(voc_root, "train", crop_size=40)
    image, label = ds[1]  # a 24 x 16 image, padded to 40 x 40
    assert image.shape == (3, 40, 40) and label.shape == (40, 40)
    assert np.all(label[24:, :] == 255) and np.all(label[:, 16:] == 255)
    assert np.all(label[:24, :16] == 7)
    assert np.all(image[:, 24:, :] == 0) and np.all(image[:, :, 16:] == 0)


def test_voc_augmentation_is_deterministic_per_seed_epoch_and_index(voc_root):
    kw = dict(crop_size=12, scale_range=(0.5, 1.5), flip=True, seed=3)
    a = VOCSegmentation(voc_root, "train", **kw)
    b = VOCSegmentation(voc_root, "train", **kw)
    for x, y in zip(b[1], a[1], strict=True):  # access order does not matter
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    crops = {a[0][0].tobytes()}
    for epoch in range(1, 6):
        a.set_epoch(epoch)
        crops.add(a[0][0].tobytes())
    assert len(crops) > 1


# ------------------------------------------------------------------------ ADE20K


def test_ade_maps_other_to_ignore_and_shifts_ids(tmp_path):
    label = np.array([[0, 1, 2], [150, 0, 1]], dtype=np.uint8)
    root = make_ade_tree(tmp_path, {"ADE_train_00000001": label})
    ds = ADE20K(tmp_path, "train")  # the folder holding ADEChallengeData2016
    assert ds.root == root and len(ds) == 1 and ds.num_classes == 150
    _, mapped = ds[0]
    np.testing.assert_array_equal(mapped, [[255, 0, 1], [149, 255, 0]])
    assert ds.class_names[0] == "wall" and len(set(ds.class_names)) == 150


def test_ade_value_above_150_names_file(tmp_path):
    label = np.array([[0, 151]], dtype=np.uint8)
    root = make_ade_tree(tmp_path, {"ADE_val_00000001": label}, split_dir="validation")
    with pytest.raises(ValueError, match=r"ADE_val_00000001\.png.*151"):
        ADE20K(root, "val")[0]


def test_ade_errors_for_missing_root_empty_split_missing_annotation(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ADE20K(tmp_path / "nope", "train")
    root = make_ade_tree(tmp_path, {"ADE_train_00000001": np.zeros((4, 4), np.uint8)})
    with pytest.raises(ValueError, match="validation"):
        ADE20K(root, "val")
    with pytest.raises(ValueError, match="split"):
        ADE20K(root, "test")
    (root / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ADE_train_00000001\.png"):
        ADE20K(root, "train")


# -------------------------------------------------------------------- transforms


def test_flip_mirrors_image_and_label_together():
    image = _rgb(4, 6, 0)
    label = np.arange(24, dtype=np.uint8).reshape(4, 6) % 21
    t = SegmentationTransform(flip=True)
    outcomes = set()
    for seed in range(12):
        out, lab = t(image, label, np.random.default_rng(seed))
        flipped = bool(np.array_equal(lab, label[:, ::-1]))
        assert flipped or np.array_equal(lab, label)
        expected = image[:, ::-1] if flipped else image
        np.testing.assert_array_equal(denormalize(out), expected)
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_scale_resizes_label_with_nearest_neighbour():
    image = _rgb(10, 10, 1)
    label = np.zeros((10, 10), dtype=np.uint8)
    label[:, 5:] = 20
    label[0, 0] = 255
    t = SegmentationTransform(scale_range=(2.0, 2.0))
    out, lab = t(image, label, np.random.default_rng(0))
    assert out.shape == (3, 20, 20) and lab.shape == (20, 20)
    assert set(np.unique(lab)) <= {0, 20, 255}  # no blended ids


def test_random_crop_of_large_image_stays_inside():
    image = normalize(_rgb(30, 40, 2))
    label = np.ones((30, 40), dtype=np.int64)
    out, lab = random_crop(image, label, (8, 9), np.random.default_rng(0))
    assert out.shape == (3, 8, 9) and np.all(lab == 1)


def test_normalize_subtracts_vgg_mean_and_stays_float32():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = normalize(image)
    assert out.dtype == np.float32 and out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0], 100 - np.array(VGG_MEAN_RGB), rtol=1e-6)


def test_random_transform_without_generator_is_refused():
    with pytest.raises(ValueError, match="Generator"):
        SegmentationTransform(flip=True)(_rgb(2, 2, 0), np.zeros((2, 2), np.uint8))


# ------------------------------------------------------------------------ shapes


def test_shapes_same_seed_same_arrays_and_splits_differ():
    a = ShapesDataset("train", size=12, seed=5)
    b = ShapesDataset("train", size=12, seed=5)
    v = ShapesDataset("val", size=12, seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, v.images)
    assert not np.array_equal(a.images, ShapesDataset("train", size=12, seed=6).images)


def test_shapes_items_and_attributes():
    ds = ShapesDataset("val", size=4)
    image, label = ds[0]
    assert image.dtype == np.float32 and image.shape == (3, 96, 96)
    assert label.dtype == np.int64 and label.shape == (96, 96)
    assert ds.raw_image(0).dtype == np.uint8 and ds.raw_image(0).shape == (96, 96, 3)
    assert ds.class_names == CLASS_NAMES and ds.num_classes == len(CLASS_NAMES) >= 5
    assert ds.mean.dtype == np.float32 and ds.mean.shape == (3,)
    np.testing.assert_array_equal(denormalize(image), ds.raw_image(0))


def test_shapes_set_has_every_class_and_objects_in_every_image():
    images, labels = make_shapes(40, 48, seed=1)
    assert images.shape == (40, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (40, 48, 48)
    assert set(np.unique(labels)) == set(range(len(CLASS_NAMES)))
    assert np.all((labels > 0).reshape(40, -1).any(axis=1))


def test_shapes_objects_contrast_with_background():
    ds = ShapesDataset("train", size=20)
    for image, label in zip(ds.images, ds.labels, strict=True):
        fg = image[label > 0].astype(float).mean(axis=0)
        bg = image[label == 0].astype(float).mean(axis=0)
        assert np.linalg.norm(fg - bg) > 20


def test_shapes_rejects_unknown_split():
    with pytest.raises(ValueError, match="test"):
        ShapesDataset("test", size=2)


# -------------------------------------------------------------- loader, registry


def test_iterate_batches_stacks_and_shuffles_reproducibly():
    ds = ShapesDataset("val", size=10)
    batches = list(iterate_batches(ds, 4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2] == [4] * 2 + [2]
    assert num_batches(ds, 4) == 3 and num_batches(ds, 4, drop_last=True) == 2
    assert len(list(iterate_batches(ds, 4, drop_last=True))) == 2
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (4, 3, 96, 96)
    assert labels.dtype == np.int64 and labels.shape == (4, 96, 96)
    s1 = [lab for _, lab in iterate_batches(ds, 5, True, np.random.default_rng(0))]
    s2 = [lab for _, lab in iterate_batches(ds, 5, True, np.random.default_rng(0))]
    np.testing.assert_array_equal(np.concatenate(s1), np.concatenate(s2))
    np.testing.assert_array_equal(
        np.sort(np.concatenate(s1).reshape(10, -1), axis=0),
        np.sort(ds.labels.reshape(10, -1).astype(np.int64), axis=0),
    )


def test_batch_of_different_sizes_says_what_to_do(voc_root):
    ds = VOCSegmentation(voc_root, "train")
    with pytest.raises(ValueError, match="crop_size"):
        next(iterate_batches(ds, 2))
    assert len(list(iterate_batches(ds, 1))) == 2


def test_build_dataset(voc_root):
    assert len(build_dataset("shapes", "val", size=3)) == 3
    assert len(build_dataset("voc", "train", data_root=voc_root)) == 2
    with pytest.raises(ValueError, match="--data-root"):
        build_dataset("voc", "train")
    with pytest.raises(ValueError, match="--data-root"):
        build_dataset("ade20k", "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("coco", "train")


# ----------------------------------------------------------------------- palette


def test_colorize_uses_voc_colours_and_white_for_ignore():
    label = np.array([[0, 1, 2], [3, 255, 20]])
    rgb = colorize(label)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert rgb[1, 0].tolist() == [128, 128, 0] and rgb[1, 1].tolist() == [255, 255, 255]
    assert rgb[1, 2].tolist() == [0, 64, 128]  # tvmonitor


def test_overlay_blends_image_and_colours():
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    label = np.zeros((2, 2), dtype=np.int64)
    out = overlay(image, label, alpha=0.5)
    assert out.dtype == np.uint8 and np.all(out == 100)
    np.testing.assert_array_equal(overlay(image, label, alpha=0.0), image)
    with pytest.raises(ValueError):
        overlay(image, np.zeros((3, 3), dtype=np.int64))


def test_a_cut_short_image_is_found_from_its_header_and_end(tmp_path):
    from minifcn.data.files import DataError, image_header

    path = tmp_path / "noise.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    assert image_header(path) == (64, 64)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="noise.jpg is truncated"):
        image_header(path)
