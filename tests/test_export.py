"""ONNX and safetensors export, checked against independent runtimes (onnxruntime, PyTorch)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
st_numpy = pytest.importorskip("safetensors.numpy")

from minifcn.commands.export import main as export_main  # noqa: E402
from minifcn.export import (  # noqa: E402
    OPSET,
    ExportError,
    compare_onnx,
    load_safetensors,
    predict_onnx,
    to_onnx,
)
from minifcn.inference.engine import predict_scores  # noqa: E402
from minifcn.models import build_model  # noqa: E402
from minifcn.models.checkpoint import save_checkpoint  # noqa: E402
from minifcn.models.config import VGGConfig  # noqa: E402

EXPORT_DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"

# The paper's geometry (padding 100, 7x7 fc6, crop offsets 19 / 5, 27 / 5, 9, 31) on narrow
# layers, so that every model and size runs in milliseconds; one test uses the real thing.
PAPER_NARROW = VGGConfig(name="paper-narrow", widths=(4, 4, 8, 8, 8), fc_channels=16)
CONFIGS = {"mini": "mini", "paper-narrow": PAPER_NARROW}
# (model, config) -> input sizes (H, W), several per model, non-square among them.
SIZES = {
    ("fcn32s", "mini"): [(33, 33), (64, 64), (70, 97)],
    ("fcn16s", "mini"): [(33, 40), (64, 64), (100, 77)],
    ("fcn8s", "mini"): [(64, 64), (40, 100), (96, 96)],
    ("fcn32s", "paper-narrow"): [(1, 1), (32, 32), (45, 70)],
    ("fcn16s", "paper-narrow"): [(17, 17), (32, 48), (67, 50)],
    ("fcn8s", "paper-narrow"): [(5, 9), (32, 32), (64, 77)],
}
CASES = [(m, c, s) for (m, c), sizes in SIZES.items() for s in sizes]


def randomize(model, seed=0):
    """Every weight and bias random (the score layers start at zero and would hide a wrong
    crop; the bilinear kernels are symmetric and would hide a flipped one)."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        d = p.data
        if d.ndim == 4:
            fan_in = d.shape[1] * d.shape[2] * d.shape[3]
            if name.startswith("upscore"):  # IOHW; each output sees about I*k*k/s^2 inputs
                fan_in = d.shape[0] * 4
            d[...] = rng.standard_normal(d.shape) * np.sqrt(2.0 / fan_in)
        else:
            d[...] = rng.standard_normal(d.shape) * 0.1
    return model.eval()


_MODELS = {}


def model_for(name, config, **kw):
    key = (name, config, tuple(sorted(kw.items())))
    if key not in _MODELS:
        model = randomize(build_model(name, 5, CONFIGS.get(config, config), **kw))
        _MODELS[key] = (model, to_onnx(model).SerializeToString())
    return _MODELS[key]


def session(data):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------- ONNX equals minifcn
@pytest.mark.parametrize(
    "name,config,size", CASES, ids=[f"{m}-{c}-{h}x{w}" for m, c, (h, w) in CASES]
)
def test_onnxruntime_matches_minifcn(name, config, size):
    model, data = model_for(name, config)
    diff, tol = compare_onnx(model, data, size)
    assert diff <= tol, f"max |onnx - minifcn| = {diff:.3g} > {tol:.3g}"


def test_at_once_scales_are_mul_nodes():
    model, data = model_for("fcn8s", "mini", at_once=True)
    proto = onnx.load_from_string(data)
    factors = {
        init.name: float(onnx.numpy_helper.to_array(init))
        for init in proto.graph.initializer
        if init.name.endswith(".factor")
    }
    assert factors == pytest.approx(
        {"scale_data.factor": 1 / 64, "scale_pool4.factor": 0.01, "scale_pool3.factor": 1e-4}
    )
    diff, tol = compare_onnx(model, data, (64, 64))
    assert diff <= tol


def test_paper_fcn8s_vgg16_matches_minifcn():
    """The full VGG16 FCN-8s (134M parameters), once, on a small input."""
    model = build_model("fcn8s", 21, "paper")
    for name in ("score_fr", "score_pool4", "score_pool3"):  # the backbone is already random
        randomize(getattr(model, name), seed=1)
    model.eval()
    options = ort.SessionOptions()  # graph optimisations would take longer than the run
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = to_onnx(model, check=False).SerializeToString()  # the small models are checked
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    diff, tol = compare_onnx(model, sess, (24, 40))
    assert diff <= tol


def test_graph_uses_standard_ops_opset_and_dynamic_sizes():
    model, data = model_for("fcn8s", "mini")
    proto = onnx.load_from_string(data)
    assert proto.opset_import[0].version == OPSET == 17
    ops = {n.op_type for n in proto.graph.node}
    assert ops == {"Conv", "Relu", "MaxPool", "ConvTranspose", "Slice", "Add", "Mul", "Shape"} | {
        "Concat",
        "Reshape",
    }
    pools = [n for n in proto.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 5
    assert all(onnx.helper.get_attribute_value(a) == 1 for n in pools for a in n.attribute
               if a.name == "ceil_mode")  # fmt: skip
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    starts = {
        i.name: onnx.numpy_helper.to_array(i).tolist()
        for i in proto.graph.initializer
        if i.name.endswith(".starts")
    }
    assert starts == {"score_pool4c.starts": [1, 1], "score_pool3c.starts": [1, 1],
                      "score.starts": [21, 21]}  # fmt: skip
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["minifcn.spec"])["model"] == "fcn8s"
    assert meta["minifcn.supported_sides"].startswith("31-46, 63-78, ")
    # the initializers carry the state_dict's names
    names = {i.name for i in proto.graph.initializer}
    assert set(model.state_dict()) <= names


def test_fixed_input_size():
    model, _ = model_for("fcn16s", "mini")
    proto = to_onnx(model, input_size=(40, 56))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 40, 56]
    diff, tol = compare_onnx(model, proto, (40, 56))
    assert diff <= tol
    fcn8s, _ = model_for("fcn8s", "mini")
    with pytest.raises(ValueError, match="cannot segment an image side of 50"):
        to_onnx(fcn8s, input_size=(50, 64))


# ------------------------------------------------------------------------- can it fail?
@pytest.mark.parametrize("crop", ["score_pool4c", "score_pool3c", "score"])
def test_a_wrong_crop_offset_is_detected(crop):
    """Shift one crop's baked offset by a pixel: onnxruntime's scores no longer match."""
    model, data = model_for("fcn8s", "paper-narrow")
    proto = onnx.load_from_string(data)
    for init in proto.graph.initializer:
        if init.name in (f"{crop}.starts", f"{crop}.offset"):
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 1,
                                                       init.name))  # fmt: skip
    diff, tol = compare_onnx(model, proto.SerializeToString(), (32, 32))
    assert diff > 100 * tol


def test_a_crop_layer_that_disagrees_with_the_geometry_is_refused():
    model = randomize(build_model("fcn16s", 5, "mini"))
    model.score_pool4c.offset = (2, 2)
    with pytest.raises(ExportError, match="score_pool4c.*differs from the offset 1"):
        to_onnx(model)


def test_unsupported_sizes_fail_in_onnxruntime_and_are_padded_by_predict_onnx():
    model, data = model_for("fcn8s", "mini")
    sess = session(data)
    x = np.random.default_rng(3).standard_normal((2, 3, 50, 90)).astype(np.float32) * 60
    with pytest.raises(Exception, match="(?i)reshape|shape"):  # the crops' size check
        sess.run(None, {"data": x})
    ours = predict_scores(model, x)  # minifcn pads 50x90 to 63x95, as predict_onnx does
    theirs = predict_onnx(sess, x)
    assert theirs.shape == ours.shape == (2, 5, 50, 90)
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()


def test_non_finite_weights_are_refused():
    model = randomize(build_model("fcn32s", 5, "mini"))
    model.fc7.weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(ExportError, match=r"fc7.weight has non-finite values \(1 NaN"):
        to_onnx(model)


# -------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip_without_torch(tmp_path):
    model = randomize(build_model("fcn8s", 5, "mini"))
    save_checkpoint(tmp_path / "best.npz", model, {"class_names": list("abcde")})
    out = export_main(["--checkpoint", str(tmp_path / "best.npz"), "--format", "safetensors"])
    assert out == tmp_path / "best.safetensors"
    state = st_numpy.load_file(str(out))  # the plain safetensors NumPy API
    ours = model.state_dict()
    assert list(state) == sorted(ours) and all(np.array_equal(state[k], ours[k]) for k in ours)
    assert state["upscore8.weight"].shape == (5, 5, 16, 16)  # IOHW
    assert state["conv1_1.weight"].shape == (8, 3, 3, 3)  # OIHW
    _, meta = load_safetensors(out)
    assert meta["format"] == "pt" and json.loads(meta["minifcn.class_names"]) == list("abcde")
    other = build_model("fcn8s", 5, "mini", rng=7)
    other.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(other.eval()(x), model(x))


# (model, config) -> the crop offsets of docs/architecture.md: an independent statement
# of the geometry.
DOC_OFFSETS = {
    ("fcn32s", "mini"): {"score": 9},
    ("fcn16s", "mini"): {"score_pool4c": 1, "score": 17},
    ("fcn8s", "mini"): {"score_pool4c": 1, "score_pool3c": 1, "score": 21},
    ("fcn32s", "paper-narrow"): {"score": 19},
    ("fcn16s", "paper-narrow"): {"score_pool4c": 5, "score": 27},
    ("fcn8s", "paper-narrow"): {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
}


@pytest.mark.parametrize("name,config", list(DOC_OFFSETS))
def test_pytorch_fcn_loads_the_safetensors_file(tmp_path, name, config):
    torch = pytest.importorskip("torch")
    from minifcn.export.torch_fcn import build_torch_fcn, load_torch_fcn

    model = randomize(build_model(name, 5, CONFIGS[config], at_once=True) if name == "fcn8s"
                      else build_model(name, 5, CONFIGS[config]))  # fmt: skip
    assert model.crop_offsets == DOC_OFFSETS[(name, config)]
    save_checkpoint(tmp_path / "m.npz", model)
    path = export_main(["--checkpoint", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.st"),
                        "--format", "safetensors"])  # fmt: skip
    net = load_torch_fcn(path)
    plain = build_torch_fcn(model.spec(), DOC_OFFSETS[(name, config)])
    plain.load_state_dict(
        {k: torch.from_numpy(v) for k, v in st_numpy.load_file(str(path)).items()}
    )
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32) * 60
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
        plain_out = plain.eval()(torch.from_numpy(x)).numpy()
    ours = model(x)
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()
    np.testing.assert_array_equal(theirs, plain_out)


# -------------------------------------------------------------------------- the command
@pytest.fixture
def checkpoint(tmp_path):
    model = randomize(build_model("fcn8s", 5, "mini"))
    return save_checkpoint(tmp_path / "best.npz", model, {"class_names": list("abcde")})


def test_command_writes_and_checks_onnx(checkpoint, tmp_path, capsys):
    out = export_main(["--checkpoint", str(checkpoint), "--format", "onnx", "-o",
                       str(tmp_path / "m.onnx")])  # fmt: skip
    text = capsys.readouterr().out
    m = re.search(r"max \|onnx - minifcn\| = (\S+) \(tolerance (\S+)\)", text)
    assert m and 0 < float(m[1]) <= float(m[2]), text
    assert out.is_file() and not list(tmp_path.glob("*.tmp"))


def bad(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        export_main(argv)
    msg = str(exc.value.code)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


def test_command_refuses_bad_input(checkpoint, tmp_path, capsys, monkeypatch):
    ck = str(checkpoint)
    assert "unknown format 'tflite'" in bad(["--checkpoint", ck, "--format", "tflite"], capsys)
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep me")
    msg = bad(["--checkpoint", ck, "-o", str(existing)], capsys)
    assert "exists; pass --force" in msg and existing.read_bytes() == b"keep me"
    assert "not found" in bad(["--checkpoint", str(tmp_path / "no.npz")], capsys)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    assert "corrupt.npz" in bad(["--checkpoint", str(corrupt)], capsys)
    model = randomize(build_model("fcn16s", 5, "mini"))
    state = model.state_dict()
    state["score_fr.bias"][2] = np.inf  # written by hand: save_checkpoint refuses it
    nan_ck = tmp_path / "nan.npz"
    np.savez(nan_ck, **state, __meta__=np.array(json.dumps({"spec": model.spec()})))
    msg = bad(["--checkpoint", str(nan_ck), "--format", "safetensors"], capsys)
    assert "score_fr.bias" in msg and re.search("non-finite|NaN or infinite", msg), msg
    assert "50" in bad(["--checkpoint", ck, "--input-size", "50x64"], capsys)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    msg = bad(["--checkpoint", ck, "-o", str(tmp_path / "x.onnx")], capsys)
    assert "onnx package is not installed; pip install 'minifcn[export]'" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best.npz", "old.onnx", "corrupt.npz", "nan.npz"]
    )


def test_command_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minifcn.export", "--checkpoint", str(tmp_path / "no.npz")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no.npz" in lines[0], lines


# --------------------------------------------------------- the export page's snippet
def export_doc_snippet() -> str:
    """The Python block of docs/export.md that runs the exported model on an image."""
    blocks = re.findall(r"```python\n(.*?)```", EXPORT_DOC.read_text(), re.S)
    return next(b for b in blocks if "segment_image_onnx" in b)


def test_export_doc_snippet_gives_the_mask_of_minifcn_predict(checkpoint, tmp_path, monkeypatch):
    from minifcn.commands.predict import main as predict_main

    rng = np.random.default_rng(5)
    monkeypatch.chdir(tmp_path)
    export_main(["--checkpoint", str(checkpoint), "--format", "onnx", "-o", "model.onnx"])
    for h, w in [(64, 64), (70, 53)]:  # 70x53 is padded to 81x64 by both
        image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save("image.png")
        for old in tmp_path.glob("mask*.png"):
            old.unlink()
        predict_main(["--checkpoint", str(checkpoint), "image.png", "-o", "mask.png"])
        scope = {}
        exec(export_doc_snippet(), scope)  # noqa: S102 - the page's code, as a reader runs it
        mask = scope["mask"]
        assert mask.shape == (h, w)
        assert len(np.unique(mask)) > 1  # a real test: several classes in the mask
        # the mask file holds the class ids (a palette PNG), so they compare directly
        np.testing.assert_array_equal(mask, np.asarray(Image.open("mask.png")))
