"""Coordinate maps and crop offsets (models/geometry.py), from the layer rules by hand."""

from fractions import Fraction

import pytest

from minifcn.models import FCN32s
from minifcn.models.geometry import CoordMap, crop_offset, layer_map
from minifcn.nn import (
    Conv2d,
    ConvTranspose2d,
    Crop,
    Dropout,
    Flatten,
    Fuse,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Scale,
)


def test_conv_and_pool_map_an_output_pixel_to_the_centre_of_its_window():
    # x_in = s * x_out + (k - 1) / 2 - p
    assert layer_map(Conv2d(1, 1, 3, 1, 1)) == CoordMap(Fraction(1), Fraction(0))
    assert layer_map(Conv2d(1, 1, 3, 1, 100)) == CoordMap(Fraction(1), Fraction(-99))
    assert layer_map(Conv2d(1, 1, 7, 2, 0)) == CoordMap(Fraction(2), Fraction(3))
    assert layer_map(MaxPool2d(2, 2)) == CoordMap(Fraction(2), Fraction(1, 2))
    assert layer_map(MaxPool2d(3, 2, 1)) == CoordMap(Fraction(2), Fraction(0))


def test_transposed_conv_map_is_the_inverse_of_the_conv_map():
    up = layer_map(ConvTranspose2d(1, 1, 4, 2, 1))
    down = layer_map(Conv2d(1, 1, 4, 2, 1))
    assert up == CoordMap(Fraction(1, 2), Fraction(-1, 4))
    assert down.then(up) == CoordMap()
    assert layer_map(ConvTranspose2d(1, 1, 64, 32)) == CoordMap(Fraction(1, 32), Fraction(-63, 64))


def test_layers_that_do_not_move_pixels_have_the_identity_map():
    assert layer_map(ReLU()) == CoordMap(Fraction(1), Fraction(0))
    for layer in (Dropout(0.5), Scale(0.01), Fuse()):
        assert layer_map(layer) == CoordMap(), type(layer).__name__


def test_a_crop_shifts_by_its_offset_and_takes_its_input_onto_the_reference():
    assert layer_map(Crop(3)) == CoordMap(Fraction(1), Fraction(3))  # x_in = x_out + 3
    big, ref = CoordMap(Fraction(8), Fraction(-40)), CoordMap(Fraction(8), Fraction(0))
    assert big.then(layer_map(Crop(crop_offset(big, ref)))) == ref
    with pytest.raises(ValueError, match=r"offset \(1, 2\) differs between the axes"):
        layer_map(Crop((1, 2)))


def test_a_layer_without_a_coordinate_map_raises_instead_of_passing_for_the_identity():
    for layer in (Flatten(), Linear(2, 2), Module()):
        with pytest.raises(TypeError, match=f"{type(layer).__name__} has no coordinate map"):
            layer_map(layer)


def test_then_composes_maps_in_order():
    a = CoordMap(Fraction(2), Fraction(1))  # image = 2 x + 1
    b = CoordMap(Fraction(3), Fraction(5))  # a's coordinate = 3 y + 5
    # image = 2 (3 y + 5) + 1 = 6 y + 11
    assert a.then(b) == CoordMap(Fraction(6), Fraction(11))
    assert b.then(a) == CoordMap(Fraction(6), Fraction(8))  # 3 (2 y + 1) + 5


def test_coord_map_prints_as_an_equation():
    assert str(CoordMap(Fraction(2), Fraction(1, 2))) == "x_img = 2*x + 0.5"
    assert str(CoordMap(Fraction(1, 4), Fraction(-3))) == "x_img = 0.25*x - 3"
    assert str(CoordMap()) == "x_img = 1*x + 0"


def test_crop_offset_is_the_shift_difference_over_the_scale():
    big = CoordMap(Fraction(8), Fraction(-40))
    ref = CoordMap(Fraction(8), Fraction(0))
    assert crop_offset(big, ref) == 5
    assert crop_offset(ref, ref) == 0


def test_fcn32s_paper_offset_is_19():
    """conv1_1 pads by 100; 5 blocks of 3x3 convs and 2x2/2 pools; fc6 7x7; upscore 64/32."""
    m = CoordMap().then(layer_map(Conv2d(1, 1, 3, 1, 100)))
    m = m.then(layer_map(Conv2d(1, 1, 3, 1, 1)))
    for _ in range(5):
        m = m.then(layer_map(MaxPool2d(2, 2, ceil_mode=True)))
        m = m.then(layer_map(Conv2d(1, 1, 3, 1, 1)))
    m = m.then(layer_map(Conv2d(1, 1, 7)))  # fc6
    up = m.then(layer_map(ConvTranspose2d(1, 1, 64, 32)))
    assert up.scale == 1
    assert crop_offset(up, CoordMap()) == 19


@pytest.mark.parametrize(
    "big,ref,message",
    [
        (CoordMap(Fraction(2)), CoordMap(Fraction(1)), "different strides"),
        (CoordMap(Fraction(2), Fraction(0)), CoordMap(Fraction(2), Fraction(1)), "whole pixels"),
        (CoordMap(Fraction(1), Fraction(3)), CoordMap(Fraction(1), Fraction(0)), "starts 3 pixels"),
    ],
)
def test_crop_offset_refuses_maps_that_cannot_be_aligned(big, ref, message):
    with pytest.raises(ValueError, match=message) as err:
        crop_offset(big, ref, name="score_pool4c")
    assert str(err.value).startswith("score_pool4c: ")


def test_a_network_with_a_layer_of_unknown_geometry_is_refused_when_built():
    class FlatHead(FCN32s):
        def head(self, rng):
            return [("score_fr", self._score(self.config.fc_channels, rng), "drop7"),
                    ("flat", Flatten(), "score_fr")]  # fmt: skip

    with pytest.raises(TypeError, match="Flatten has no coordinate map"):
        FlatHead(3, "mini")


def test_the_geometry_table_refuses_a_layer_it_has_no_receptive_field_rule_for():
    from minifcn.analysis.geometry import geometry_table

    class Upsample(Module):  # resamples (scale 1/2) without a kernel: no rule for its field
        def coord_map(self):
            return CoordMap(Fraction(1, 2), Fraction(0))

    model = FCN32s(3, "mini")
    assert len(geometry_table(model)) == len(model.graph())
    model.relu1_1 = Upsample()
    with pytest.raises(TypeError, match=r"no receptive-field rule for relu1_1 \(Upsample\)"):
        geometry_table(model)
