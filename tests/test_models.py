"""FCN-32s/16s/8s: geometry, shapes, whole-network gradients, weights in and out."""

import dataclasses

import numpy as np
import pytest

from minifcn.analysis.geometry import explain
from minifcn.backend import as_numpy
from minifcn.commands.explain import main as explain_main
from minifcn.models import FCN8s, FCN16s, FCN32s, build_model
from minifcn.models.checkpoint import load_model, save_checkpoint
from minifcn.models.config import MINI, PAPER
from minifcn.models.pretrained import load_vgg16_npz
from minifcn.models.spatial_map import convolutionalize, window_stride
from minifcn.nn import Conv2d, Crop, Flatten, Linear, MaxPool2d, ReLU, Sequential, bilinear_weight
from minifcn.nn.gradcheck import gradcheck
from minifcn.storage.npz import save_npz_atomic

# The paper's geometry (padding 100, fc6 7x7, five ceil-mode pools) at a width a test can afford.
NARROW_PAPER = dataclasses.replace(
    PAPER, name="narrow-paper", widths=(2, 3, 3, 4, 4), fc_channels=4
)
TINY = dataclasses.replace(
    MINI, name="tiny", widths=(2, 2, 3, 3, 3), fc_channels=4, input_scale=1.0, first_padding=32
)  # first padding 32: FCN-8s then accepts small test images (19-34 pixels)


@pytest.mark.parametrize(
    "cls,expected",
    [
        (FCN32s, {"score": 19}),
        (FCN16s, {"score_pool4c": 5, "score": 27}),
        (FCN8s, {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
    ],
)
def test_paper_crop_offsets_follow_from_coordinate_maps(cls, expected):
    assert cls(21, NARROW_PAPER).crop_offsets == expected


def test_crop_offsets_change_with_the_geometry():
    # Not hard-coded: a different first padding moves every offset that depends on it.
    assert FCN32s(5, MINI).crop_offsets == {"score": 9}
    assert FCN8s(5, MINI).crop_offsets == {"score_pool4c": 1, "score_pool3c": 1, "score": 21}
    wider = dataclasses.replace(MINI, first_padding=32)
    assert FCN32s(5, wider).crop_offsets == {"score": 15}
    assert FCN8s(5, wider).crop_offsets == {"score_pool4c": 1, "score_pool3c": 1, "score": 27}


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_paper_geometry_accepts_every_input_size(cls):
    model = cls(3, NARROW_PAPER)
    assert model.supported_sizes(600) == list(range(1, 601))
    for h, w in [(1, 1), (7, 13), (32, 33), (61, 50)]:
        x = np.random.default_rng(h).standard_normal((2, 3, h, w)).astype(np.float32)
        assert model.eval()(x).shape == (2, 3, h, w)


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_mini_output_matches_input_size_on_supported_sizes(cls):
    model = cls(5, TINY).eval()
    for side in (64, 96):
        assert side in model.supported_sizes(128)
        x = np.zeros((1, 3, side, side), dtype=np.float32)
        assert model(x).shape == (1, 5, side, side)


def test_mini_rejects_unsupported_sizes_with_a_clear_error():
    model = FCN8s(5, MINI)
    assert 50 not in model.supported_sizes(128) and 96 in model.supported_sizes(128)
    with pytest.raises(ValueError, match=r"cannot segment an image side of 50 pixels.*63-78"):
        model(np.zeros((1, 3, 50, 96), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        model(np.zeros((1, 4, 64, 64), dtype=np.float32))


def _randomise_heads(model, rng):
    # Score layers start at zero (as in the reference); give them values so that
    # gradients reach every layer in the check.
    for name, p in model.named_parameters():
        if name.startswith("score") or name.startswith("upscore"):
            p.data[...] = rng.standard_normal(p.data.shape) * 0.5


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_whole_network_gradients(cls):
    rng = np.random.default_rng(0)
    model = cls(3, TINY, rng=1).astype(np.float64)
    _randomise_heads(model, rng)
    # Non-zero biases: with zero biases the padded border of conv1_1 sits exactly
    # on ReLU's kink, where a central difference is not a derivative.
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.data[...] = rng.uniform(0.05, 0.2, p.data.shape)
    x = rng.standard_normal((2, 3, 20, 19))
    state = model.rng_state()

    def same_dropout_masks():
        model.set_rng_state(state)

    errors = gradcheck(model, x, max_checks=6, before_forward=same_dropout_masks, seed=3)
    # The check means something only if gradient reaches every layer.
    dead = [n for n, p in model.named_parameters() if p.requires_grad and not np.any(p.grad)]
    assert not dead
    checked = {name.split(".")[0] for name in errors}
    trainable = {name.split(".")[0] for name, p in model.named_parameters()}
    assert checked == trainable | {"input0"}
    assert max(errors.values()) < 1e-5, {k: v for k, v in errors.items() if v > 1e-5}


@pytest.mark.parametrize("freeze", [False, True])
def test_backward_without_the_image_gradient_gives_the_same_parameter_gradients(freeze):
    rng = np.random.default_rng(0)
    model = FCN8s(3, TINY, freeze_upsampling=freeze, rng=1).astype(np.float64)
    _randomise_heads(model, rng)
    model.eval()
    x = rng.standard_normal((2, 3, 20, 19))
    dy = rng.standard_normal(model(x).shape)
    dx = model.backward(dy)
    full = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x)
    first = model.conv1_1  # reads the image (TINY has no input scaling)
    assert model.graph()[0][1:] == ("conv1_1", "data")
    backward, asked = first.backward, []
    first.backward = lambda g, **kw: asked.append(kw) or backward(g, **kw)
    assert model.backward(dy, input_grad=False) is None
    assert dx.shape == x.shape and asked == [{"input_grad": False}]
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, full[name], err_msg=name)


def test_state_dict_uses_reference_names_and_pytorch_layouts():
    state = FCN8s(21, PAPER).state_dict()
    assert state["conv1_1.weight"].shape == (64, 3, 3, 3)
    assert state["fc6.weight"].shape == (4096, 512, 7, 7)
    assert state["fc7.weight"].shape == (4096, 4096, 1, 1)
    assert state["score_fr.weight"].shape == (21, 4096, 1, 1)
    assert state["score_pool4.weight"].shape == (21, 512, 1, 1)
    assert state["score_pool3.weight"].shape == (21, 256, 1, 1)
    assert state["upscore2.weight"].shape == (21, 21, 4, 4)
    assert state["upscore_pool4.weight"].shape == (21, 21, 4, 4)
    assert state["upscore8.weight"].shape == (21, 21, 16, 16)
    head = [k for k in state if not k.startswith(("conv", "fc"))]
    assert head == [
        "score_fr.weight", "score_fr.bias", "upscore2.weight", "score_pool4.weight",
        "score_pool4.bias", "upscore_pool4.weight", "score_pool3.weight", "score_pool3.bias",
        "upscore8.weight",
    ]  # fmt: skip
    assert np.all(state["score_pool4.weight"] == 0) and np.all(state["score_pool3.weight"] == 0)


def test_load_state_dict_names_the_wrong_key_or_shape():
    model = FCN16s(5, TINY)
    state = model.state_dict()
    state["upscore16.weight"] = np.zeros((5, 5, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape mismatch for 'upscore16.weight'"):
        model.load_state_dict(state)
    state = FCN8s(5, TINY).state_dict()
    with pytest.raises(ValueError, match="unexpected keys: .*score_pool3.weight"):
        model.load_state_dict(state)


def test_upsampling_is_bilinear_learnable_by_default_and_freezable():
    model = FCN32s(4, TINY)
    assert model.upscore.weight.requires_grad
    np.testing.assert_array_equal(model.upscore.weight.data, bilinear_weight(4, 4, 64))
    frozen = FCN8s(4, TINY, freeze_upsampling=True)
    assert not any(getattr(frozen, n).weight.requires_grad for n in ("upscore2", "upscore8"))


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = FCN8s(5, TINY, rng=3).eval()
    _randomise_heads(model, np.random.default_rng(1))
    path = save_checkpoint(tmp_path / "m.npz", model, meta={"epoch": 2})
    loaded, meta = load_model(path)
    assert meta["epoch"] == 2 and isinstance(loaded, FCN8s)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval()(x), model(x))
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    with pytest.raises(ValueError, match="holds a fcn8s checkpoint, but fcn32s was asked for"):
        load_model(path, expect="fcn32s")


def test_staged_constructors_copy_the_shared_weights():
    rng = np.random.default_rng(0)
    m32 = FCN32s(5, TINY, rng=1)
    _randomise_heads(m32, rng)
    m16 = FCN16s.from_fcn32s(m32)
    np.testing.assert_array_equal(m16.conv3_2.weight.data, m32.conv3_2.weight.data)
    np.testing.assert_array_equal(m16.fc7.weight.data, m32.fc7.weight.data)
    np.testing.assert_array_equal(m16.score_fr.weight.data, m32.score_fr.weight.data)
    assert np.all(m16.score_pool4.weight.data == 0)
    _randomise_heads(m16, rng)
    m8 = FCN8s.from_fcn16s(m16)
    for name in ("conv5_3", "fc6", "score_fr", "score_pool4"):
        np.testing.assert_array_equal(getattr(m8, name).weight.data, getattr(m16, name).weight.data)
    np.testing.assert_array_equal(m8.upscore2.weight.data, m16.upscore2.weight.data)
    assert np.all(m8.score_pool3.weight.data == 0)


def test_fcn16s_from_fcn32s_starts_from_the_same_coarse_prediction():
    # With score_pool4 = 0 the skip adds nothing: the output is FCN-32s's scores,
    # upsampled 2x then 16x instead of 32x in one step, hence the same argmax almost
    # everywhere.
    m32 = FCN32s(3, TINY, rng=1).eval()
    m32.score_fr.weight.data[...] = np.random.default_rng(0).standard_normal((3, 4, 1, 1))
    m16 = FCN16s.from_fcn32s(m32).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    agree = (m32(x).argmax(1) == m16(x).argmax(1)).mean()
    assert agree > 0.9


def test_at_once_fcn8s_scales_the_skips():
    model = FCN8s(5, TINY, at_once=True)
    assert model.scale_pool4.factor == 0.01 and model.scale_pool3.factor == 0.0001
    assert FCN8s(5, TINY).scale_pool4.factor == 1.0
    assert model.spec()["at_once"] is True


def test_fully_connected_classifier_becomes_a_sliding_heatmap():
    rng = np.random.default_rng(0)
    classifier = Sequential(
        Conv2d(3, 6, 3, rng=rng), ReLU(), MaxPool2d(2),
        Conv2d(6, 8, 3, rng=rng), ReLU(), MaxPool2d(2),
        Flatten(), Linear(8 * 3 * 3, 16, rng=rng), ReLU(), Linear(16, 4, rng=rng),
    ).astype(np.float64)  # fmt: skip
    for layer in classifier:
        if getattr(layer, "bias", None) is not None:
            layer.bias.data[...] = rng.standard_normal(layer.bias.data.shape)
    window, stride = 18, window_stride(classifier)
    heatmap_net = convolutionalize(classifier, window)
    image = rng.standard_normal((2, 3, window + 4 * stride, window + 6 * stride))
    heat = heatmap_net(image)
    assert heat.shape == (2, 4, 5, 7)
    for i in range(heat.shape[2]):
        for j in range(heat.shape[3]):
            crop = image[:, :, i * stride : i * stride + window, j * stride : j * stride + window]
            np.testing.assert_allclose(heat[:, :, i, j], classifier(crop), rtol=1e-10, atol=1e-12)


def _fake_vgg16_npz(path, widths, fc, k, rng):
    arrays, in_ch = {}, 3
    for b, (w, n) in enumerate(zip(widths, (2, 2, 3, 3, 3)), 1):
        for i in range(1, n + 1):
            arrays[f"conv{b}_{i}_W"] = rng.standard_normal((3, 3, in_ch, w)).astype(np.float32)
            arrays[f"conv{b}_{i}_b"] = rng.standard_normal(w).astype(np.float32)
            in_ch = w
    arrays["fc6_W"] = rng.standard_normal((k * k * in_ch, fc)).astype(np.float32)
    arrays["fc6_b"] = rng.standard_normal(fc).astype(np.float32)
    arrays["fc7_W"] = rng.standard_normal((fc, fc)).astype(np.float32)
    arrays["fc7_b"] = rng.standard_normal(fc).astype(np.float32)
    arrays["fc8_W"] = rng.standard_normal((fc, 10)).astype(np.float32)
    save_npz_atomic(path, arrays)
    return arrays


def test_vgg16_npz_weights_are_convolutionalised_on_load(tmp_path):
    rng = np.random.default_rng(0)
    model = FCN32s(5, TINY)
    arrays = _fake_vgg16_npz(tmp_path / "vgg16.npz", TINY.widths, TINY.fc_channels, 3, rng)
    load_vgg16_npz(model, tmp_path / "vgg16.npz")
    np.testing.assert_array_equal(
        model.conv2_1.weight.data, arrays["conv2_1_W"].transpose(3, 2, 0, 1)
    )
    # fc6 as a conv on a 3x3 pool5 map computes the dense layer on the (h, w, c)-flattened map.
    pool5 = rng.standard_normal((1, TINY.widths[-1], 3, 3)).astype(np.float32)
    dense = pool5[0].transpose(1, 2, 0).reshape(1, -1) @ arrays["fc6_W"] + arrays["fc6_b"]
    np.testing.assert_allclose(model.fc6(pool5)[:, :, 0, 0], dense, rtol=1e-4, atol=1e-4)
    h = rng.standard_normal((1, TINY.fc_channels, 1, 1)).astype(np.float32)
    dense7 = h[:, :, 0, 0] @ arrays["fc7_W"] + arrays["fc7_b"]
    np.testing.assert_allclose(model.fc7(h)[:, :, 0, 0], dense7, rtol=1e-4, atol=1e-4)


def test_vgg16_npz_with_wrong_shapes_is_refused(tmp_path):
    _fake_vgg16_npz(tmp_path / "v.npz", (4, 4, 4, 4, 4), 8, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"conv1_1.weight has shape \(4, 3, 3, 3\)"):
        load_vgg16_npz(FCN32s(5, TINY), tmp_path / "v.npz")


def test_explain_prints_layers_and_offsets(capsys):
    text = explain(FCN8s(21, NARROW_PAPER))
    assert "score_pool4c" in text and "= 31" in text and "padding 100" in text
    explain_main(["--model", "fcn32s", "--config", "mini", "--size", "96"])
    out = capsys.readouterr().out
    assert "crop_offsets = {'score': 9}" in out
    # The new numbers are explained: the offset follows the padding, and 96 pixels
    # leave FCN-32s a 3x3 grid of score cells.
    assert "the final offset is padding - 17" in out
    assert "reads score_fr: 3 score cells per side, stride 32" in out


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_model_cpu_and_gpu_agree(name):
    import copy

    cpu = build_model(name, 4, TINY, rng=0)
    _randomise_heads(cpu, np.random.default_rng(0))
    gpu = copy.deepcopy(cpu).to("gpu")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    from minifcn.backend import to_device

    y_cpu, y_gpu = cpu(x), gpu(to_device(x, "gpu"))
    np.testing.assert_allclose(as_numpy(y_gpu), y_cpu, rtol=1e-3, atol=1e-3)
    dy = np.random.default_rng(2).standard_normal(y_cpu.shape).astype(np.float32)
    np.testing.assert_allclose(
        as_numpy(gpu.backward(to_device(dy, "gpu"))), cpu.backward(dy), rtol=1e-3, atol=1e-3
    )
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(as_numpy(q.grad), p.grad, rtol=2e-3, atol=2e-3, err_msg=n)


# ------------------------------------------------- one description of the network
@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
@pytest.mark.parametrize("config,side", [(TINY, 64), (NARROW_PAPER, 37)])
def test_forward_runs_exactly_the_graph_and_its_sizes(cls, config, side):
    # Record what each layer actually receives and returns in forward; it must be
    # the blobs graph() names, in graph() order, with the sizes the geometry predicts.
    # The one exception: the final crop of the last upsampling is run by the
    # upsampling itself, which computes only the crop's window.
    model = cls(3, config).eval()
    calls = []
    for _, layer, *_ in model.graph():
        module = getattr(model, layer)

        def spy(*inputs, _module=module, _layer=layer, _forward=module.forward, **kw):
            out = _forward(*inputs, **kw)
            calls.append((_layer, inputs, kw, out))
            return out

        module.forward = spy
    x = np.zeros((1, 3, side, side), dtype=np.float32)
    y = model(x)
    steps = model.graph()
    *_, (last, crop, upscore, ref) = steps
    assert isinstance(getattr(model, crop), Crop) and steps[-2][0] == upscore
    assert [c[0] for c in calls] == [layer for _, layer, *_ in steps[:-1]]
    made = {"data": x}
    sizes = model.blob_sizes(side)
    for (out, _, src, *ref), (_, inputs, kw, result) in zip(steps[:-2], calls):
        assert all(a is made[b] for a, b in zip(inputs, (src, *ref))), out
        assert len(inputs) == 1 + len(ref) and kw == {}, out
        assert result.shape[2:] == (sizes[out], sizes[out]), out
        made[out] = result
    (_, _, src), (_, inputs, kw, result) = steps[-2], calls[-1]
    assert len(inputs) == 1 and inputs[0] is made[src]
    assert kw == {"window": (*getattr(model, crop).offset, side, side)}
    assert y is result and y.shape == (1, 3, side, side) == (1, 3, sizes[last], sizes[last])


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_the_upsampling_computed_for_the_crop_window_alone_equals_the_whole_one_cut(cls):
    """forward computes only the part of the last upsampling that the final crop keeps;
    scores, the image's gradient and every parameter's gradient equal those of the
    graph run layer by layer, the whole upsampled map made and then cut."""
    rng = np.random.default_rng(0)
    model = cls(3, TINY, rng=1).astype(np.float64).eval()
    _randomise_heads(model, rng)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.data[...] = rng.uniform(0.05, 0.2, p.data.shape)
    x = rng.standard_normal((2, 3, 34, 19))
    scores = model(x)
    *_, (upscore, *_), (last, *_) = model.graph()
    assert getattr(model, upscore).cached().window is not None  # computed for the window alone
    dscores = rng.standard_normal(scores.shape)
    dx = model.backward(dscores)
    fused = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    blobs = {"data": x}
    for out, layer, src, *ref in model.graph():  # every layer, one by one
        blobs[out] = getattr(model, layer)(blobs[src], *(blobs[r] for r in ref))
    grads = {out: dscores}
    for out, layer, src, *ref in reversed(model.graph()):
        d = getattr(model, layer).backward(grads.pop(out))
        for blob, db in zip((src, *ref), d if isinstance(d, tuple) else (d,)):
            grads[blob] = grads[blob] + db if blob in grads else db
    assert blobs[upscore].shape[2:] != scores.shape[2:]  # the whole map is larger than the crop
    np.testing.assert_allclose(scores, blobs[last], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, grads["data"], rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():
        assert np.any(p.grad), name
        np.testing.assert_allclose(fused[name], p.grad, rtol=1e-12, atol=1e-12, err_msg=name)


def test_crops_are_built_with_their_computed_offsets():
    for model in (FCN8s(5, MINI), FCN16s(5, NARROW_PAPER)):
        crops = {layer: getattr(model, layer).offset for _, layer, *_ in model.graph()
                 if isinstance(getattr(model, layer), Crop)}  # fmt: skip
        assert crops == {k: (v, v) for k, v in model.crop_offsets.items()}


def test_a_head_that_cannot_align_is_refused_when_built():
    # A 1x1 fc6 keeps pool5's size: upscore2 then starts one pool4
    # pixel before pool4's own scores, and no crop of score_pool4 can cover it.
    cfg = dataclasses.replace(TINY, fc6_kernel=1)
    assert FCN32s(3, cfg).crop_offsets == {"score": 47}  # 15 + padding 32, no fc6 shift
    with pytest.raises(ValueError, match="score_pool4c: the map to crop starts 1 pixels after"):
        FCN16s(3, cfg)


def test_backward_rejects_a_gradient_of_the_wrong_shape():
    model = FCN8s(3, TINY)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.zeros((1, 3, 64, 64), dtype=np.float32))
    model(np.zeros((2, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(1, 3, 64, 64\).*\(2, 3, 64, 64\)"):
        model.backward(np.zeros((1, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3, 64\).*\(2, 3, 64, 64\)"):
        model.backward(np.zeros((2, 3, 64), dtype=np.float32))


def test_forward_rejects_non_arrays_and_empty_batches():
    model = FCN32s(3, TINY)
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array.*got list"):
        model([[[[0.0] * 64] * 64] * 3])
    with pytest.raises(ValueError, match=r"empty batch \(N = 0\)"):
        model(np.zeros((0, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"empty batch \(N = 0\)"):
        FCN8s(5, "mini")(np.zeros((0, 3, 64, 64), np.float32))
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array"):
        FCN8s(5, "mini")([[0.0]])


def test_supports_agrees_with_blob_sizes():
    model = FCN8s(5, MINI)
    for side in range(1, 140):
        ok = model.supports(side)
        if ok:
            model.blob_sizes(side)
        else:
            with pytest.raises(ValueError, match="cannot segment"):
                model.blob_sizes(side)


def test_backward_with_a_frozen_backbone_still_trains_the_upsampling():
    # Only the upsampling and score_pool* are trainable: upscore2 reads score_fr, which
    # then depends on nothing trainable, yet upscore2's own gradient must still be made.
    rng = np.random.default_rng(0)
    model = FCN8s(3, TINY, rng=1).astype(np.float64)
    _randomise_heads(model, rng)
    model.eval()
    x = rng.standard_normal((2, 3, 20, 19))
    dy = rng.standard_normal(model(x).shape)
    model.backward(dy)
    full = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    trained = ("upscore", "score_pool")
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(trained)
    model(x)
    assert model.backward(dy, input_grad=False) is None
    for name, p in model.named_parameters():
        if name.startswith(trained):
            np.testing.assert_array_equal(p.grad, full[name], err_msg=name)


def test_backward_errors_name_the_model_and_reject_a_gradient_without_a_shape():
    model = FCN8s(3, TINY, rng=1)
    with pytest.raises(RuntimeError, match=r"^FCN8s\.backward called before forward"):
        model.backward(np.zeros((1, 3, 20, 19)))
    model(np.zeros((1, 3, 20, 19), dtype=np.float32))
    with pytest.raises(ValueError, match=r"^FCN8s\.backward: the gradient has shape \(\)"):
        model.backward([0.0])


def test_every_layer_type_of_the_networks_is_known_to_each_consumer_of_graph():
    # A new layer type needs its coordinate map (on the layer), its ONNX form, its PyTorch
    # counterpart and its memory rule; the three tables list the same types.
    from minifcn.export.onnx_graph import ONNX_LAYERS
    from minifcn.export.torch_fcn import TORCH_LAYERS
    from minifcn.inference.engine import BLOB_CHANNELS

    used = set()
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        for config in ("mini", NARROW_PAPER):
            model = build_model(name, 3, config)
            used |= {type(getattr(model, layer)) for _, layer, *_ in model.graph()}
    assert set(ONNX_LAYERS) == set(TORCH_LAYERS) == set(BLOB_CHANNELS) == used
