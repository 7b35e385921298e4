"""minifcn.dispatch picks, per layer call, your functions, the accelerated or the plain ones."""

import numpy as np
import pytest

from minifcn import dispatch
from minifcn.accel import cpu
from minifcn.backend import plain_path
from minifcn.nn import Conv2d, Crop, MaxPool2d, conv
from minifcn.nn import crop as crop_module
from minifcn.nn import pool as pool_module


def _x(shape=(1, 2, 6, 6)):
    return np.random.default_rng(0).standard_normal(shape)


def test_layers_run_the_accelerated_path_by_default_and_the_plain_one_when_switched_off():
    x = _x().astype(np.float32)
    assert dispatch.ops_for(x, conv.PLAIN) is cpu
    with plain_path():
        assert dispatch.ops_for(x, conv.PLAIN) is conv.PLAIN


def test_use_replaces_a_whole_layer_and_only_inside_the_block():
    calls = []

    def crop2d(x, oy, ox, h, w):
        calls.append("forward")
        return crop_module.crop2d(x, oy, ox, h, w)

    def crop2d_backward(dy, x_shape, oy, ox):
        calls.append("backward")
        return crop_module.crop2d_backward(dy, x_shape, oy, ox)

    x, ref = _x(), np.zeros((1, 1, 3, 3))
    layer = Crop((1, 2))
    with dispatch.use(crop2d=crop2d, crop2d_backward=crop2d_backward):
        assert dispatch.in_use() == ("Crop",)
        y = layer.forward(x, ref)
        dx = layer.backward(np.ones_like(y))
    assert calls == ["forward", "backward"]
    np.testing.assert_array_equal(y, x[:, :, 1:4, 2:5])
    assert dx.sum() == 2 * 9
    layer.forward(x, ref)
    assert calls == ["forward", "backward"] and dispatch.in_use() == ()


def test_a_backward_runs_on_the_path_its_forward_ran_on():
    def max_pool2d(x, k, s, p, out_h, out_w):
        y, arg = pool_module.max_pool2d(x, k, s, p, out_h, out_w)
        return y, ("mine", arg)

    def max_pool2d_backward(dy, arg, x_shape, k, s, p):
        assert arg[0] == "mine"
        return pool_module.max_pool2d_backward(dy, arg[1], x_shape, k, s, p)

    layer, x = MaxPool2d(2, 2), _x()
    with dispatch.use(max_pool2d=max_pool2d, max_pool2d_backward=max_pool2d_backward):
        y = layer.forward(x)
    layer.backward(np.ones_like(y))  # outside the block: still the learner's backward


def test_use_refuses_half_a_layer_and_unknown_names():
    with pytest.raises(ValueError, match="Conv2d needs all of"), dispatch.use(conv2d=conv.conv2d):
        pass
    with pytest.raises(TypeError, match="unknown function name"), dispatch.use(conv3d=len):
        pass
    with pytest.raises(TypeError, match="must be functions"):
        with dispatch.use(crop2d=1, crop2d_backward=2):
            pass


def test_use_is_undone_when_the_block_raises():
    with pytest.raises(RuntimeError), dispatch.use(**vars(crop_module.PLAIN)):
        raise RuntimeError
    assert dispatch.in_use() == ()


def test_learner_conv_functions_drive_a_conv2d_to_the_same_result():
    layer = Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64)
    x = _x()
    ref = layer.forward(x)
    dref = layer.backward(np.ones_like(ref))
    with dispatch.use(**vars(conv.PLAIN)):
        assert dispatch.ops_for(x, conv.PLAIN) is not cpu
        np.testing.assert_allclose(layer.forward(x), ref, rtol=1e-12)
        np.testing.assert_allclose(layer.backward(np.ones_like(ref)), dref, rtol=1e-12)


def test_register_accelerated_refuses_an_unknown_device():
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        dispatch.register_accelerated("tpu", lambda: None)
