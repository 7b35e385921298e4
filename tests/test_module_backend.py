"""Module bookkeeping (parameters, modes, state dicts) and the NumPy/CuPy backend."""

import copy

import numpy as np
import pytest
from helpers import close, distinct_values

from minifcn.backend import as_numpy, get_array_module, gpu_available, to_device
from minifcn.nn import (
    Conv2d,
    ConvTranspose2d,
    Crop,
    Dropout,
    Fuse,
    MaxPool2d,
    Module,
    ReLU,
    SoftmaxCrossEntropy,
)


class Tiny(Module):
    def __init__(self):
        self.conv1 = Conv2d(3, 4, 3, padding=1, rng=0)
        self.drop = Dropout(0.5)
        self.up = ConvTranspose2d(4, 4, 4, 2, freeze=True)


def test_named_parameters_use_pytorch_style_dotted_names():
    names = [n for n, _ in Tiny().named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "up.weight"]
    assert Tiny().state_dict()["conv1.weight"].shape == (4, 3, 3, 3)


def test_train_and_eval_reach_every_submodule():
    net = Tiny().eval()
    assert not net.drop.training and not net.conv1.training
    assert net.train().drop.training


def test_state_dict_round_trip_and_clear_errors():
    a, b = Tiny(), Tiny()
    b.conv1.weight.data += 1
    b.load_state_dict(a.state_dict())
    close(b.conv1.weight.data, a.conv1.weight.data)
    state = a.state_dict()
    state["conv1.weight"] = np.zeros((4, 3, 5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape mismatch for 'conv1.weight'"):
        b.load_state_dict(state)
    state = a.state_dict()
    state.pop("up.weight")
    state["fc.weight"] = np.zeros(1)
    with pytest.raises(ValueError, match="missing keys: up.weight; unexpected keys: fc.weight"):
        b.load_state_dict(state)


def test_load_state_dict_names_missing_or_unexpected_keys_even_alone():
    net, state = Tiny(), Tiny().state_dict()
    del state["conv1.bias"], state["up.weight"]
    with pytest.raises(
        ValueError, match=r"^Tiny.load_state_dict: missing keys: conv1.bias, up.weight$"
    ):
        net.load_state_dict(state)
    state = Tiny().state_dict()
    state["fc.weight"], state["fc.bias"] = np.zeros(1), np.zeros(1)
    with pytest.raises(
        ValueError, match=r"^Tiny.load_state_dict: unexpected keys: fc.weight, fc.bias$"
    ):
        net.load_state_dict(state)
    state = Tiny().state_dict()
    state["up.weight"] = np.zeros((4, 4, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^Tiny.load_state_dict: shape mismatch for 'up.weight'"):
        net.load_state_dict(state)


def test_call_passes_keyword_arguments_and_eval_sets_a_false_flag():
    class Shift(Module):
        def forward(self, x, *, by=0.0):
            return x + by

    close(Shift()(np.zeros(2), by=1.5), [1.5, 1.5])
    assert Tiny().eval().conv1.training is False


def test_cached_before_forward_names_the_module():
    with pytest.raises(RuntimeError, match=r"^Module.backward called before forward$"):
        Module().cached()  # no _cache attribute at all
    with pytest.raises(RuntimeError, match=r"^Conv2d.backward called before forward$"):
        Conv2d(1, 1, 1).cached()


def test_repr_nests_children_with_their_names():
    assert repr(Module()) == "Module()"
    assert repr(Tiny()) == (
        "Tiny(\n"
        "  (conv1): Conv2d(3, 4, kernel_size=3, stride=1, padding=1, bias=True)\n"
        "  (drop): Dropout(p=0.5)\n"
        "  (up): ConvTranspose2d(4, 4, kernel_size=4, stride=2, padding=0, frozen)\n"
        ")"
    )

    class Outer(Module):
        def __init__(self):
            self.inner = Tiny()

    lines = repr(Outer()).splitlines()
    assert lines[:3] == [
        "Outer(",
        "  (inner): Tiny(",
        "    (conv1): Conv2d(3, 4, kernel_size=3, stride=1, padding=1, bias=True)",
    ]
    assert lines[-2:] == ["  )", ")"]


def test_astype_casts_values_and_gradients():
    net = Tiny().astype(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())


def test_get_array_module_picks_numpy_for_numpy_arrays():
    assert get_array_module(np.zeros(2), None) is np
    assert to_device(np.zeros(2), "cpu").shape == (2,)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        to_device(np.zeros(2), "tpu")


def test_asking_for_a_missing_gpu_gives_an_install_hint(no_cupy):
    assert not gpu_available()
    with pytest.raises(RuntimeError, match="cupy"):
        to_device(np.zeros(2), "gpu")
    with pytest.raises(RuntimeError, match="GPU requested"):
        Tiny().to("gpu")


# ------------------------------------------------------------------ CPU vs GPU parity
def _parity_cases(rng):
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    distinct = distinct_values(np, x.shape, rng).astype(np.float32)
    return {
        "conv3x3": (Conv2d(3, 4, 3, 1, 1, rng=0), (x,)),
        "conv1x1": (Conv2d(3, 5, 1, rng=0), (x,)),
        "conv7_pad100": (Conv2d(3, 2, 7, 2, 100, rng=0), (x[:, :, :4, :3],)),
        "upscore4_2": (ConvTranspose2d(3, 3, 4, 2), (x,)),
        "upscore64_32": (ConvTranspose2d(3, 2, 64, 32, init="kaiming", rng=0), (x[:, :, :2, :3],)),
        "maxpool": (MaxPool2d(2, 2, ceil_mode=True), (distinct,)),
        "relu": (ReLU(), (distinct,)),
        "dropout": (Dropout(0.5, rng=3), (x,)),
        "crop": (Crop((2, 1)), (x, np.zeros((1, 1, 5, 4), np.float32))),
        "fuse": (Fuse(), (x, x * 2)),
    }


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name",
    [
        "conv3x3",
        "conv1x1",
        "conv7_pad100",
        "upscore4_2",
        "upscore64_32",
        "maxpool",
        "relu",
        "dropout",
        "crop",
        "fuse",
    ],
)
def test_cpu_and_gpu_agree_on_forward_and_backward(name):
    cpu, inputs = _parity_cases(np.random.default_rng(0))[name]
    gpu = copy.deepcopy(cpu).to("gpu")
    y_cpu = cpu(*inputs)
    y_gpu = gpu(*[to_device(a, "gpu") for a in inputs])
    close(y_gpu, y_cpu, rtol=1e-4, atol=1e-4)
    dy = np.random.default_rng(1).standard_normal(y_cpu.shape).astype(np.float32)
    dx_cpu, dx_gpu = cpu.backward(dy), gpu.backward(to_device(dy, "gpu"))
    if not isinstance(dx_cpu, tuple):
        dx_cpu, dx_gpu = (dx_cpu,), (dx_gpu,)
    for a, b in zip(dx_cpu, dx_gpu):
        close(as_numpy(b), a, rtol=1e-4, atol=1e-4)
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        close(as_numpy(q.grad), p.grad, rtol=1e-3, atol=1e-3, err_msg=n)


@pytest.mark.gpu
def test_cpu_and_gpu_agree_on_the_loss():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    labels = rng.integers(0, 5, (2, 6, 7))
    labels[0, :2] = 255
    cpu, gpu = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert gpu(to_device(scores, "gpu"), to_device(labels, "gpu")) == pytest.approx(
        cpu(scores, labels), rel=1e-5
    )
    close(as_numpy(gpu.backward()), cpu.backward(), rtol=1e-4, atol=1e-6)
