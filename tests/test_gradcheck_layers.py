"""Float64 central-difference checks of the input and every parameter of every layer."""

import numpy as np
import pytest
from helpers import distinct_values, on

from minifcn.nn import (
    Conv2d,
    ConvTranspose2d,
    Crop,
    Dropout,
    Fuse,
    MaxPool2d,
    ReLU,
    Scale,
    SoftmaxCrossEntropy,
)
from minifcn.nn.gradcheck import gradcheck, numerical_gradient, rel_error

TOL = 1e-6

# (kernel, stride, padding, N, C_in, C_out, H, W): odd and non-square sizes, batch > 1, C > 1.
CONV_CASES = [
    (1, 1, 0, 2, 3, 4, 5, 7),
    (1, 2, 0, 2, 3, 2, 7, 6),
    (3, 1, 1, 2, 3, 4, 5, 7),
    (3, 2, 1, 3, 2, 3, 7, 6),
    (3, 3, 0, 2, 2, 3, 10, 8),
    (4, 2, 1, 2, 3, 2, 8, 9),
    (7, 1, 0, 2, 2, 3, 9, 7),
    (7, 3, 2, 2, 2, 2, 11, 9),
    (3, 1, 100, 2, 2, 3, 3, 2),
]


def test_rel_error_is_zero_for_equal_arrays_and_positive_otherwise():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, a + 1e-3) > 1e-5


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.5, -1.5, 2.0])
    num = numerical_gradient(lambda: (x**3).sum(), x)
    np.testing.assert_allclose(num, 3 * x**2, rtol=1e-8)


def test_gradcheck_catches_a_wrong_backward(rng):
    class Wrong(ReLU):
        def backward(self, dy):
            return dy  # forgets the mask

    x = distinct_values(np, (2, 3, 4, 4), rng)
    assert max(gradcheck(Wrong(), x).values()) > 0.1


@pytest.mark.parametrize("p,h,w", [(1, 4, 6), (0, 6, 4), (2, 2, 2)])
def test_conv2d_gradients_in_winograds_form(rng, monkeypatch, p, h, w):
    """The accelerated CPU path's Winograd form (lowered to 2 channels here, so that the
    check stays small): forward and backward against central differences."""
    from minifcn.accel import cpu, winograd

    monkeypatch.setattr(winograd, "WINOGRAD_CHANNELS", 2)
    layer = Conv2d(3, 2, 3, 1, p, rng=rng).astype(np.float64)
    layer.bias.data[...] = rng.standard_normal(2)
    x = distinct_values(np, (2, 3, h, w), rng)
    layer(x)
    assert isinstance(layer.cached().col, winograd.Winograd)
    assert cpu.conv2d.__module__ == "minifcn.accel.cpu"
    assert max(gradcheck(layer, x).values()) < TOL


@pytest.mark.parametrize("k,s,p,n,cin,cout,h,w", CONV_CASES)
def test_conv2d_gradients(xp, rng, k, s, p, n, cin, cout, h, w):
    layer = on(xp, Conv2d(cin, cout, k, s, p, rng=rng))
    layer.bias.data[...] = xp.asarray(rng.standard_normal(cout))
    x = xp.asarray(rng.standard_normal((n, cin, h, w)))
    errors = gradcheck(layer, x)
    assert set(errors) == {"input0", "weight", "bias"}
    assert max(errors.values()) < TOL, errors


TRANSPOSED_CASES = [
    (1, 1, 0, 2, 3, 2, 4, 5),
    (3, 1, 1, 2, 2, 3, 5, 4),
    (4, 2, 0, 2, 3, 3, 3, 4),
    (4, 2, 1, 2, 2, 3, 3, 5),
    (3, 3, 0, 2, 2, 2, 3, 2),
    (7, 3, 2, 2, 2, 2, 3, 3),
    (16, 8, 0, 2, 2, 2, 2, 3),
    (64, 32, 0, 2, 2, 2, 2, 2),
]


@pytest.mark.parametrize("k,s,p,n,cin,cout,h,w", TRANSPOSED_CASES)
def test_conv_transpose2d_gradients(xp, rng, k, s, p, n, cin, cout, h, w):
    layer = on(xp, ConvTranspose2d(cin, cout, k, s, p, bias=True, init="kaiming", rng=rng))
    layer.bias.data[...] = xp.asarray(rng.standard_normal(cout))
    x = xp.asarray(rng.standard_normal((n, cin, h, w)))
    errors = gradcheck(layer, x, max_checks=300 if k >= 16 else None)
    assert set(errors) == {"input0", "weight", "bias"}
    assert max(errors.values()) < TOL, errors


def test_frozen_conv_transpose_gets_no_weight_gradient(xp, rng):
    layer = on(xp, ConvTranspose2d(2, 2, 4, 2, freeze=True))
    x = xp.asarray(rng.standard_normal((1, 2, 3, 3)))
    y = layer(x)
    dx = layer.backward(xp.ones_like(y))
    assert dx.shape == x.shape
    assert float(abs(layer.weight.grad).sum()) == 0.0
    assert set(gradcheck(layer, x)) == {"input0"}


# (kernel, stride, padding, ceil_mode, H, W)
POOL_CASES = [
    (2, 2, 0, True, 7, 6),
    (2, 2, 0, False, 7, 5),
    (2, 2, 1, True, 5, 6),
    (3, 2, 1, False, 7, 8),
    (3, 3, 0, True, 8, 7),
    (3, 1, 1, True, 5, 4),
    (4, 3, 2, True, 9, 10),
]


@pytest.mark.parametrize("k,s,p,ceil,h,w", POOL_CASES)
def test_max_pool_gradients(xp, rng, k, s, p, ceil, h, w):
    x = distinct_values(xp, (2, 3, h, w), rng)
    errors = gradcheck(MaxPool2d(k, s, p, ceil_mode=ceil), x)
    assert errors["input0"] < TOL, errors


def test_relu_gradient(xp, rng):
    x = distinct_values(xp, (2, 3, 5, 4), rng)
    assert gradcheck(ReLU(), x)["input0"] < TOL


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5])
def test_dropout_gradient_with_a_fixed_mask(xp, rng, p):
    layer = Dropout(p)
    x = xp.asarray(rng.standard_normal((2, 4, 3, 5)))

    def same_mask():
        layer.rng = np.random.default_rng(7)

    assert gradcheck(layer, x, before_forward=same_mask)["input0"] < TOL


@pytest.mark.parametrize("offset", [(0, 0), (2, 1), (3, 5)])
def test_crop_gradient(xp, rng, offset):
    x = xp.asarray(rng.standard_normal((2, 3, 9, 10)))
    ref = xp.zeros((2, 1, 5, 4))
    layer = Crop(offset)
    assert layer(x, ref).shape == (2, 3, 5, 4)
    assert gradcheck(layer, x, ref)["input0"] < TOL


def test_fuse_gradient_reaches_both_inputs(xp, rng):
    a = xp.asarray(rng.standard_normal((2, 3, 4, 5)))
    b = xp.asarray(rng.standard_normal((2, 3, 4, 5)))
    errors = gradcheck(Fuse(), a, b)
    assert set(errors) == {"input0", "input1"}
    assert max(errors.values()) < TOL


def test_scale_gradient(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 4, 5)))
    assert gradcheck(Scale(0.01), x)["input0"] < TOL


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_gradient_with_ignored_pixels(xp, rng, reduction):
    scores = xp.asarray(rng.standard_normal((2, 4, 3, 5)))
    labels = rng.integers(0, 4, (2, 3, 5))
    labels[0, 1, :3] = 255
    labels = xp.asarray(labels)
    errors = gradcheck(SoftmaxCrossEntropy(reduction=reduction), scores, labels, h=1e-6)
    assert errors["input0"] < TOL
