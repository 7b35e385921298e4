"""The PyTorch twin (export/torch_fcn.py): built from graph(), same function, reference names."""

import dataclasses

import numpy as np
import pytest

from minifcn.export.common import ExportError
from minifcn.models import build_model
from minifcn.models.config import MINI, PAPER
from minifcn.nn import Flatten

torch = pytest.importorskip("torch")

from minifcn.export.torch_fcn import build_torch_fcn, torch_fcn, torch_layer  # noqa: E402

# Both configurations' geometry (mini: padding 26, 3x3 fc6, input scale 1/64; paper: padding
# 100, 7x7 fc6) on layers narrow enough for float64 on a CPU.
CONFIGS = {
    "mini": dataclasses.replace(MINI, widths=(2, 3, 3, 4, 4), fc_channels=5),
    "paper": dataclasses.replace(PAPER, widths=(2, 3, 3, 4, 4), fc_channels=5),
}
SIDES = {"mini": (64, 70), "paper": (17, 30)}
MODELS = ["fcn32s", "fcn16s", "fcn8s"]


def random_model(name, config, seed=0):
    """Every parameter random: zero score layers and symmetric bilinear kernels would hide a
    wrong crop or a flipped kernel. FCN-8s at once, so that its Scale layers are not 1."""
    kw = {"at_once": True} if name == "fcn8s" else {}
    model = build_model(name, 4, CONFIGS[config], rng=seed, **kw).astype(np.float64)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape) * 0.3
    return model.eval()


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", MODELS)
def test_torch_twin_computes_the_same_function_and_gradients_in_float64(name, config):
    model = random_model(name, config)
    net = torch_fcn(model).eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, *SIDES[config])) * 30
    ours = model(x)
    tx = torch.tensor(x, requires_grad=True)
    theirs = net(tx)
    np.testing.assert_allclose(theirs.detach().numpy(), ours, rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(ours.shape)
    model.zero_grad()
    dx = model.backward(dy)
    theirs.backward(torch.tensor(dy))
    np.testing.assert_allclose(tx.grad.numpy(), dx, rtol=1e-9, atol=1e-9)
    grads = {k: v.grad for k, v in net.named_parameters()}
    for k, p in model.named_parameters():
        np.testing.assert_allclose(grads[k].numpy(), p.grad, rtol=1e-9, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("name", MODELS)
def test_torch_twin_of_a_float32_model_matches_it(name):
    model = build_model(name, 4, CONFIGS["mini"], rng=0).eval()
    for p in model.parameters():
        p.data[...] = np.random.default_rng(0).standard_normal(p.data.shape) * 0.3
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    y = torch_fcn(model, "cpu").eval()(torch.tensor(x)).detach().numpy()
    ours = model(x)
    assert y.dtype == np.float32
    assert np.abs(y - ours).max() <= 1e-5 * np.abs(ours).max()


# The reference FCN's parameter names (shelhamer/fcn.berkeleyvision.org voc-fcn*/net.py; the
# same in its PyTorch port): 13 VGG16 convs, fc6, fc7, then each head's layers.
BACKBONE = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
REFERENCE_PARAMS = {
    "fcn32s": {*BACKBONE, "fc6", "fc7", "score_fr"},
    "fcn16s": {*BACKBONE, "fc6", "fc7", "score_fr", "score_pool4"},
    "fcn8s": {*BACKBONE, "fc6", "fc7", "score_fr", "score_pool4", "score_pool3"},
}
REFERENCE_UPSAMPLING = {  # deconvolutions: weight only (bias_term: false)
    "fcn32s": {"upscore"},
    "fcn16s": {"upscore2", "upscore16"},
    "fcn8s": {"upscore2", "upscore_pool4", "upscore8"},
}


@pytest.mark.parametrize("name", MODELS)
def test_torch_twin_state_dict_has_the_reference_names_and_ours(name):
    model = build_model(name, 21, CONFIGS["paper"])
    expected = {f"{layer}.{p}" for layer in REFERENCE_PARAMS[name] for p in ("weight", "bias")}
    expected |= {f"{layer}.weight" for layer in REFERENCE_UPSAMPLING[name]}
    state = torch_fcn(model).state_dict()
    assert set(state) == expected
    assert list(state) == list(model.state_dict())  # the same order as well
    for k, v in model.state_dict().items():
        assert tuple(state[k].shape) == v.shape, k


def test_torch_twin_freezes_what_minifcn_freezes():
    model = build_model("fcn16s", 3, CONFIGS["mini"], freeze_upsampling=True)
    frozen = {k for k, p in torch_fcn(model).named_parameters() if not p.requires_grad}
    assert frozen == {"upscore2.weight", "upscore16.weight"}


def test_build_torch_fcn_refuses_offsets_the_geometry_does_not_give():
    model = build_model("fcn32s", 3, CONFIGS["paper"])
    assert build_torch_fcn(model.spec(), {"score": 19}) is not None
    with pytest.raises(ExportError, match=r"crop offsets \{'score': 18\} differ"):
        build_torch_fcn(model.spec(), {"score": 18})


def test_a_layer_type_without_a_counterpart_is_refused():
    with pytest.raises(ExportError, match="no PyTorch counterpart for minifcn layer type Flatten"):
        torch_layer(Flatten())
