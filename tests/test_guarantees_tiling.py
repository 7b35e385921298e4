"""Tiled prediction equals whole-image prediction, tested where it can fail.

A freshly built FCN scores every pixel 0 (its score layers start at zero, as in the
paper), so any tiling "agrees" with it. These tests give every weight a random value,
so that each score depends on its whole receptive field, and compare scores, not only
labels, in float64 where a difference cannot hide below rounding: images several tiles
wide and high (corner, edge and middle tiles), tile sides that are not multiples of the
network stride, all three models on both backbones (the paper's geometry, conv1_1
padding 100 and a 7x7 fc6, at narrow widths), and the evaluate and predict commands.

These tests fail when tiles start off the network stride's grid (tile side and origin not
rounded to it), when the context margin is halved, and when the margin is taken from the
coarsest blob's receptive field instead of the reach of the upsampled scores (each bug
planted in ``engine.py`` and seen to fail)."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from minifcn.commands.evaluate import main as evaluate_main
from minifcn.commands.predict import main as predict_main
from minifcn.inference.engine import (
    network_stride,
    predict_scores,
    receptive_margin,
    segment_tiled,
)
from minifcn.models import build_model
from minifcn.models.checkpoint import save_checkpoint
from minifcn.models.config import MINI, PAPER

# The paper's geometry (padding 100, 7x7 fc6) at widths a CPU runs in a moment.
NARROW_PAPER = dataclasses.replace(PAPER, widths=(4, 4, 8, 8, 8), fc_channels=8)
BACKBONES = {"mini": MINI, "paper": NARROW_PAPER}
MODELS = ("fcn32s", "fcn16s", "fcn8s")


def random_model(name, config, classes=5, seed=0, dtype=np.float64):
    """``name`` on ``config`` with every parameter drawn at random (He scale)."""
    model = build_model(name, classes, config, rng=seed)
    model.astype(dtype)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        shape = p.data.shape
        scale = 0.1 if len(shape) == 1 else np.sqrt(2.0 / np.prod(shape[1:]))
        p.data[...] = rng.normal(0, scale, shape)
    return model.eval()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("name", MODELS)
def test_tiled_scores_equal_the_whole_image_scores(name, backbone):
    model = random_model(name, BACKBONES[backbone])
    tile = 2 * network_stride(model) + 6  # not a multiple of the stride
    # 3 x 5 tiles of 64, wide enough that some tiles start beyond the context margin
    x = np.random.default_rng(1).normal(0, 60, (1, 3, 150, 300))
    whole = predict_scores(model, x)
    assert np.ptp(whole) > 1e-3  # not the all-zero scores of a fresh model
    tiled = segment_tiled(model, x, tile=tile, predict=predict_scores)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-9 * np.abs(whole).max())


def test_tiles_smaller_than_the_margin_and_images_not_a_tile_multiple():
    model = random_model("fcn8s", MINI, seed=3)
    assert receptive_margin(model) > 2 * network_stride(model)
    x = np.random.default_rng(2).normal(0, 60, (1, 3, 161, 97))  # odd sides, thin strips
    whole = predict_scores(model, x)
    for tile in (95, 500):  # rounded down to 64; one tile larger than the image
        tiled = segment_tiled(model, x, tile=tile, predict=predict_scores)
        np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-9 * np.abs(whole).max())


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory):
    """A float32 checkpoint of each model with random weights (as a trained one has)."""
    folder = tmp_path_factory.mktemp("random")
    paths = {}
    for name in MODELS:
        model = random_model(name, MINI, seed=5, dtype=np.float32)
        paths[name] = save_checkpoint(folder / f"{name}.npz", model, {"dataset": "shapes"})
    return paths


@pytest.mark.parametrize("name", MODELS)
def test_evaluate_in_forced_tiles_scores_what_the_whole_images_score(
    random_checkpoints, tmp_path, name
):
    ckpt = str(random_checkpoints[name])
    common = ["--checkpoint", ckpt, "--size", "4", "--batch-size", "2"]
    whole = evaluate_main([*common, "--json", str(tmp_path / "whole.json")])
    assert 0 < whole["pixel_accuracy"] < 1
    tiled = evaluate_main([*common, "--tile", "40", "--json", str(tmp_path / "tiled.json")])
    assert json.loads((tmp_path / "tiled.json").read_text()) == json.loads(
        (tmp_path / "whole.json").read_text()
    )
    assert tiled == whole


@pytest.mark.parametrize("name", MODELS)
def test_predict_in_forced_tiles_draws_the_whole_image_mask(random_checkpoints, tmp_path, name):
    image = tmp_path / "big.png"
    pixels = np.random.default_rng(4).integers(0, 255, (200, 260, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    ckpt = str(random_checkpoints[name])
    masks = {}
    for label, extra in (("whole", []), ("t70", ["--tile", "70"])):
        out = tmp_path / f"{label}.png"
        predict_main([str(image), "--checkpoint", ckpt, "-o", str(out), *extra])
        masks[label] = np.asarray(Image.open(out).convert("RGB"))
    assert len(np.unique(masks["whole"].reshape(-1, 3), axis=0)) > 1  # several classes drawn
    np.testing.assert_array_equal(masks["t70"], masks["whole"])
