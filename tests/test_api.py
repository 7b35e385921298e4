"""The public Python API as a user calls it: ``minifcn.load``, ``segment``, ``minifcn.datasets``."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minifcn
from minifcn.api import tile_for_budget
from minifcn.data.sizes import next_side
from minifcn.data.transforms import normalize
from minifcn.inference.engine import predict_labels, tile_size_for
from minifcn.models import FCN8s
from minifcn.models.checkpoint import save_checkpoint

NAMES = ["background", "cat", "dog"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A mini FCN-8s with random weights (so its predictions vary), saved as a run would."""
    model = FCN8s(3, "mini", rng=0)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.data.shape)
    path = tmp_path_factory.mktemp("ckpt") / "best.npz"
    save_checkpoint(path, model, {"class_names": NAMES, "dataset": "folder"})
    return path


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_import_minifcn_is_cheap_and_the_api_loads_on_first_use():
    code = (
        "import sys, minifcn; print('minifcn.api' in sys.modules, 'minifcn.models' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert callable(minifcn.load) and minifcn.datasets.folder is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        minifcn.nothing  # noqa: B018


def test_segment_takes_any_size_and_equals_the_padded_prediction(checkpoint):
    model = minifcn.load(checkpoint, device="cpu")
    assert model.class_names == tuple(NAMES) and model.num_classes == 3
    image = _image(50, 87)
    assert not model.model.supports(50)  # the mini FCN-8s cannot take 50 pixels as they are
    mask = model.segment(image)
    assert mask.shape == (50, 87) and mask.dtype == np.int32 and len(np.unique(mask)) > 1
    h, w = next_side(model.model.supports, 50), next_side(model.model.supports, 87)
    padded = np.zeros((1, 3, h, w), np.float32)
    padded[:, :, :50, :87] = normalize(image)
    np.testing.assert_array_equal(mask, predict_labels(model.model.eval(), padded)[0, :50, :87])


def test_segment_accepts_paths_pil_images_grey_and_rgba_arrays(checkpoint, tmp_path):
    model = minifcn.load(checkpoint)
    image = _image(40, 40, seed=1)
    Image.fromarray(image).save(tmp_path / "x.png")
    expected = model.segment(image)
    for same in (tmp_path / "x.png", str(tmp_path / "x.png"), Image.fromarray(image),
                 np.dstack([image, np.full((40, 40), 7, np.uint8)])):  # fmt: skip
        np.testing.assert_array_equal(model.segment(same), expected)
    grey = image[..., 0]
    np.testing.assert_array_equal(model.segment(grey), model.segment(np.dstack([grey] * 3)))
    with pytest.raises(ValueError, match=r"expected uint8 pixels.*\* 255"):
        model.segment(image / 255.0)


def test_large_images_are_segmented_in_tiles_with_the_same_result(checkpoint):
    image = _image(150, 170, seed=2)
    model = minifcn.load(checkpoint)
    np.testing.assert_array_equal(model.segment(image, tile=64), model.segment(image))
    tile, note = tile_for_budget(model.model, 2000, 3000, max_memory=0.5)
    assert tile == tile_size_for(model.model, 2**29) > 0
    assert (
        note.startswith("3000x2000 image: one pass would need about") and f"{tile}x{tile}" in note
    )
    assert tile_for_budget(model.model, 150, 170, max_memory=2) == (None, None)
    with pytest.raises(ValueError, match="raise --max-memory"):
        minifcn.load(checkpoint, max_memory=1e-6).segment(image)


def test_overlay_and_evaluate_name_the_classes(checkpoint, tmp_path):
    from minifcn.data.example import write_example

    root = write_example(tmp_path / "data", "folder", n=6)
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for mask in (root / "masks").iterdir():  # three classes: 3 and 4 become 2
        ids = np.asarray(Image.open(mask))
        Image.fromarray(np.minimum(ids, 2).astype(np.uint8)).save(mask)
    model = minifcn.load(checkpoint)
    val = minifcn.datasets.folder(root, split="val")
    scores = model.evaluate(val)
    assert list(scores["per_class_iu"]) == NAMES
    assert 0 <= scores["mean_iu"] <= 1 and "cat" in scores["table"]
    image = val.raw_image(0)
    picture = model.overlay(image)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 5"):
        model.evaluate(minifcn.datasets.shapes("val", size=2))


def test_load_refuses_a_missing_file_and_a_file_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        minifcn.load(tmp_path / "none.npz")
    np.savez(tmp_path / "junk.npz", a=np.zeros(2))
    with pytest.raises(ValueError):
        minifcn.load(tmp_path / "junk.npz")
