"""The GPU path: kernels, the plain-path switch, device runs end to end, syncs, start-up errors.

On a machine without a GPU these run on the strict CuPy stand-in
(``tests/support/fake_cupy.py``); on a GPU machine, on real CuPy.
"""

import copy

import numpy as np
import pytest
from conftest import REAL_GPU, requires_real_gpu
from helpers import close
from support import fake_cupy, nvrtc

from minifcn import backend
from minifcn.accel.cuda_kernels import kernel_source, kernel_variants
from minifcn.backend import PROBE_KERNEL, as_numpy, cupy_module, to_device
from minifcn.commands.evaluate import main as evaluate_main
from minifcn.commands.predict import main as predict_main
from minifcn.commands.train import train
from minifcn.inference.engine import batch_to_device
from minifcn.models import FCN8s, FCN16s, FCN32s
from minifcn.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from minifcn.nn import Conv2d, ConvTranspose2d, MaxPool2d, ReLU, SoftmaxCrossEntropy
from minifcn.optim import SGD, Adam

pytestmark = pytest.mark.gpu  # all of it runs with `pytest -m gpu` (minifcn.commands.gpucheck)
cp = cupy_module()
TINY = ["--train-size", "8", "--val-size", "4", "--batch-size", "4", "--no-progress", "--grid", "2"]
VARIANTS = list(kernel_variants())


def variant_id(v):
    name, dtype, label = v
    return f"{name.removeprefix('minifcn_')}-{dtype}" + (f"-{label}" if label else "")


# ------------------------------------------------------------------ the stand-in itself
# These prove the test double catches the mistakes it exists for.
standin_only = pytest.mark.skipif(REAL_GPU, reason="checks the stand-in, not CuPy")


@standin_only
def test_standin_arrays_refuse_implicit_conversion_to_numpy():
    d = fake_cupy.module.zeros(3, dtype=np.float32)
    assert not isinstance(d, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    host = np.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError, match="Implicit conversion"):
        host[:] = d  # a NumPy buffer receiving a device array


@standin_only
def test_standin_refuses_host_arrays_as_operands_and_fill_values():
    xp = fake_cupy.module
    d, h = xp.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)
    for mix in (lambda: d + h, lambda: h * d, lambda: np.add(d, h), lambda: xp.maximum(d, h)):
        with pytest.raises(TypeError, match="Unsupported type"):
            mix()
    with pytest.raises(TypeError, match="Unsupported type"):
        xp.where(h > 0, d, d)
    with pytest.raises(ValueError, match="non-scalar"):
        d[...] = h  # CuPy fills a basic slice only from a scalar or a device array
    d[np.array([0, 2])] = np.float32(5)  # a host index is copied over, as CuPy does
    assert d.get().tolist() == [5, 1, 5]
    assert d.dtype == np.float32 and (d * 2).dtype == np.float32


@standin_only
def test_standin_counts_syncs_with_their_call_site(standin):
    d = standin.module.arange(4, dtype=np.float32)
    total = d.sum()  # stays on the device: no sync
    assert standin.stats.count("sync") == 0
    assert float(total) == 6.0
    (event,) = standin.stats.syncs
    assert event.what == "float()" and event.site.startswith("test_device.py:")
    assert int(d[1]) == 1 and bool(d[2] > 1) and d.get()[3] == 3
    assert [e.what for e in standin.stats.syncs] == ["float()", "int()", "bool()", ".get()"]


@standin_only
def test_standin_empty_is_garbage_like_device_memory():
    assert np.isnan(fake_cupy.module.empty(4, dtype=np.float32).get()).all()


@standin_only
def test_standin_kernel_arguments_must_have_the_exact_c_types():
    xp = fake_cupy.module
    kernel = xp.RawKernel(PROBE_KERNEL, "minifcn_probe")
    x = xp.zeros(4, dtype=np.float32)
    with pytest.raises(TypeError, match="NumPy scalar"):
        kernel((1,), (4,), (x, 4))  # a Python int: 64 bits on a real GPU, for an `int`
    with pytest.raises(TypeError, match="int64 scalar for a i32"):
        kernel((1,), (4,), (x, np.int64(4)))
    with pytest.raises(TypeError, match="float64 for a f32 pointer"):
        kernel((1,), (4,), (xp.zeros(4), np.int32(4)))
    kernel((1,), (4,), (x, np.int32(4)))
    assert x.get().tolist() == [1, 1, 1, 1]


@standin_only
def test_standin_runs_the_kernel_source_itself_not_a_copy():
    xp = fake_cupy.module
    x = xp.arange(3, dtype=np.float32)
    planted = PROBE_KERNEL.replace("2.0f * x[i]", "3.0f * x[i]")  # a wrong kernel
    xp.RawKernel(planted, "minifcn_probe")((1,), (8,), (x, np.int32(3)))
    assert x.get().tolist() == [1, 4, 7]
    with pytest.raises(fake_cupy.CompileError, match="host C"):
        xp.RawKernel(PROBE_KERNEL.replace(";", "", 1), "minifcn_probe").compile()


# ------------------------------------------------------------------ kernels compile (NVRTC)
def _nvrtc_or_skip():
    if nvrtc.load() is None:
        if not REAL_GPU and __import__("os").environ.get("CI"):
            pytest.fail("NVRTC is missing on CI: the dev extra installs nvidia-cuda-nvrtc-cu12")
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_kernel_variant_compiles_with_nvrtc(variant):
    _nvrtc_or_skip()
    ptx = nvrtc.compile_to_ptx(kernel_source(*variant))
    assert f".entry {variant[0]}(" in ptx


def test_the_start_up_probe_kernel_compiles_with_nvrtc():
    _nvrtc_or_skip()
    assert ".entry minifcn_probe(" in nvrtc.compile_to_ptx(PROBE_KERNEL)


def test_nvrtc_check_fails_on_a_planted_syntax_error():
    _nvrtc_or_skip()
    broken = kernel_source(*VARIANTS[0]).replace("rest /= out_w;", "rest /= out_w", 1)
    with pytest.raises(nvrtc.NVRTCError, match="error"):
        nvrtc.compile_to_ptx(broken)


# ------------------------------------------------------------------ kernels run, per dtype
@pytest.mark.gpu
@pytest.mark.parametrize("score_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
def test_loss_kernels_match_numpy_for_every_label_and_score_type(rng, score_dtype, label_dtype):
    scores = (rng.standard_normal((2, 5, 6, 7)) * 10).astype(score_dtype)
    labels = rng.integers(0, 5, (2, 6, 7)).astype(label_dtype)
    labels[0, :2] = 255
    cpu, gpu = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    tol = 1e-5 if score_dtype == np.float32 else 1e-12
    assert gpu(cp.asarray(scores), cp.asarray(labels)) == pytest.approx(
        cpu(scores, labels), rel=tol
    )
    grad = gpu.backward(2.0)
    assert grad.dtype == score_dtype
    close(grad, cpu.backward(2.0), rtol=tol, atol=tol * 1e-2)


@pytest.mark.gpu
def test_out_of_range_labels_on_the_device_are_reported_not_read(rng):
    scores = cp.asarray(rng.standard_normal((1, 3, 4, 4)).astype(np.float32))
    labels = np.zeros((1, 4, 4), dtype=np.int32)
    labels[0, 2, 1] = 7
    with pytest.raises(ValueError, match="label value 7 is out of range for 3 classes"):
        SoftmaxCrossEntropy()(scores, cp.asarray(labels))


LAYERS = {
    "conv3x3": (lambda: Conv2d(3, 4, 3, 1, 1, rng=0), (2, 3, 9, 8)),
    "conv7x7s2p3": (lambda: Conv2d(2, 3, 7, 2, 3, rng=0), (1, 2, 11, 10)),
    "conv1x1": (lambda: Conv2d(4, 2, 1, rng=0), (2, 4, 5, 5)),
    "convT4/2": (lambda: ConvTranspose2d(3, 3, 4, 2, bias=False), (2, 3, 5, 4)),
    "convT16/8": (lambda: ConvTranspose2d(2, 2, 16, 8, bias=False), (1, 2, 3, 3)),
    "maxpool": (lambda: MaxPool2d(2, 2, ceil_mode=True), (2, 3, 7, 6)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", LAYERS)
def test_cuda_kernels_and_the_plain_path_agree_on_the_device(name, rng, monkeypatch):
    make, shape = LAYERS[name]
    x = rng.standard_normal(shape)
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        layer = make().astype(np.float64).to("gpu")
        y = layer(cp.asarray(x))
        dy = cp.asarray(np.random.default_rng(5).standard_normal(y.shape))
        dx = layer.backward(dy)
        results.append([y, dx] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_loss_on_both_device_paths_matches_numpy(switch, rng, monkeypatch):
    monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
    scores = rng.standard_normal((2, 4, 5, 3))
    labels = rng.integers(0, 4, (2, 5, 3)).astype(np.uint8)
    labels[1, 0] = 255
    cpu, gpu = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert gpu(cp.asarray(scores), cp.asarray(labels)) == pytest.approx(cpu(scores, labels))
    close(gpu.backward(0.5), cpu.backward(0.5), rtol=1e-12, atol=1e-14)


@pytest.mark.gpu
def test_whole_fcn8s_agrees_with_and_without_kernels(monkeypatch):
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    outs = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        model = FCN8s(5, "mini", rng=0).to("gpu")
        model.eval()
        y = model(cp.asarray(x))
        outs.append((y, model.backward(cp.ones_like(y))))
    close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ optimisers, checkpoints
@pytest.mark.gpu
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: Adam(ps, lr=1e-2, weight_decay=1e-3),
        lambda ps: SGD(ps, lr=1e-2, momentum=0.9, weight_decay=5e-4),
        lambda ps: SGD(ps, lr=1e-2),
    ],
    ids=["adam", "sgd-momentum", "sgd-plain"],
)
def test_every_optimiser_steps_on_device_arrays_as_on_numpy(make):
    cpu_model = Conv2d(2, 3, 3, 1, 1, rng=0)
    gpu_model = copy.deepcopy(cpu_model).to("gpu")
    cpu_opt, gpu_opt = make(list(cpu_model.parameters())), make(list(gpu_model.parameters()))
    grads = np.random.default_rng(1)
    for _ in range(3):
        for p, q in zip(cpu_model.parameters(), gpu_model.parameters()):
            g = grads.standard_normal(p.shape).astype(np.float32)
            p.grad[...] = g
            q.grad[...] = cp.asarray(g)
        cpu_opt.step()
        gpu_opt.step()
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters()):
        assert backend.device_of(q.data) == "gpu"
        close(q.data, p.data, rtol=1e-6, atol=1e-6)
    # Optimiser state saved on the device restores onto a CPU model, and back.
    state = gpu_opt.state_dict()
    restored = make(list(copy.deepcopy(cpu_model).parameters()))
    restored.load_state_dict(state)
    for s in restored.state.values():
        for v in s.values():
            assert not hasattr(v, "shape") or isinstance(v, np.ndarray)


@pytest.mark.gpu
def test_a_device_model_saves_and_loads_exactly(tmp_path):
    model = FCN16s(3, "mini", rng=4).to("gpu")
    for p in model.parameters():
        p.data += cp.asarray(np.float32(0.25))
    save_checkpoint(tmp_path / "m.npz", model)
    back, _ = load_model(tmp_path / "m.npz")
    assert back.device == "cpu"
    for (name, p), (_, q) in zip(model.named_parameters(), back.named_parameters()):
        np.testing.assert_array_equal(as_numpy(p.data), q.data, err_msg=name)
    on_gpu = FCN16s(3, "mini", rng=0).to("gpu")
    on_gpu.load_state_dict(dict(back.state_dict()))
    assert on_gpu.device == "gpu"
    close(on_gpu.score_pool4.weight.data, model.score_pool4.weight.data, rtol=0, atol=0)


@pytest.mark.gpu
def test_staged_constructors_work_on_a_device_model():
    fcn32 = FCN32s(3, "mini", rng=1).to("gpu")
    fcn32.fc6.weight.data += cp.asarray(np.float32(1.0))
    fcn16 = FCN16s.from_fcn32s(fcn32)
    assert fcn16.device == "gpu"
    close(fcn16.fc6.weight.data, fcn32.fc6.weight.data, rtol=0, atol=0)
    fcn8 = FCN8s.from_fcn16s(fcn16)
    assert fcn8.device == "gpu"
    close(fcn8.fc6.weight.data, fcn32.fc6.weight.data, rtol=0, atol=0)
    y = fcn8(cp.asarray(np.zeros((1, 3, 64, 64), dtype=np.float32)))
    assert y.shape == (1, 3, 64, 64)


# ------------------------------------------------------------------ the commands on the device
def _train(out, *extra):
    return train(["--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """One FCN-32s epoch on the device (constant lr, so it can be extended exactly), and
    the syncs the stand-in saw during it."""
    out = tmp_path_factory.mktemp("gpu") / "run"
    if not REAL_GPU:
        fake_cupy.stats.reset()
    _train(out, "--epochs", "1", "--model", "fcn32s", "--device", "gpu", "--schedule", "constant")
    syncs = [] if REAL_GPU else list(fake_cupy.stats.syncs)
    return out, syncs


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu") / "run"
    _train(out, "--epochs", "1", "--model", "fcn32s", "--schedule", "constant")
    return out


@pytest.mark.gpu
def test_a_device_run_resumed_on_the_device_matches_an_uninterrupted_one(gpu_run, tmp_path):
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(gpu_run[0], resumed)
    _train(resumed, "--epochs", "2", "--device", "gpu", "--resume")
    full = tmp_path / "full"
    _train(full, "--epochs", "2", "--model", "fcn32s", "--device", "gpu", "--schedule", "constant")
    a, b = load_checkpoint(resumed / "last.npz")[0], load_checkpoint(full / "last.npz")[0]
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.gpu
def test_a_cpu_run_resumes_on_the_device(cpu_run, tmp_path):
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(cpu_run, resumed)
    _train(resumed, "--epochs", "2", "--device", "gpu", "--resume")
    assert load_checkpoint(resumed / "last.npz")[1]["state"]["epoch"] == 2


@pytest.mark.gpu
def test_staged_init_from_on_the_device(gpu_run, tmp_path):
    _train(
        tmp_path / "s16", "--epochs", "1", "--model", "fcn16s", "--device", "gpu",
        "--init-from", str(gpu_run[0] / "best.npz"),
    )  # fmt: skip
    staged = load_checkpoint(tmp_path / "s16" / "last.npz")[0]
    assert staged["score_pool4.weight"].shape[0] == 5


@pytest.mark.gpu
def test_evaluate_and_predict_on_the_device_match_the_cpu(cpu_run, tmp_path):
    from PIL import Image

    ckpt = str(cpu_run / "last.npz")
    on_cpu = evaluate_main(["--checkpoint", ckpt, "--size", "4"])
    on_gpu = evaluate_main(["--checkpoint", ckpt, "--size", "4", "--device", "gpu"])
    for key in ("pixel_accuracy", "mean_iu", "fw_iu"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], abs=1e-6), key
    image = tmp_path / "img.png"
    pixels = (np.random.default_rng(0).random((70, 50, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    predict_main([str(image), "--checkpoint", ckpt, "-o", str(tmp_path / "c.png")])
    predict_main(
        [str(image), "--checkpoint", ckpt, "-o", str(tmp_path / "g.png"), "--device", "gpu"]
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "c.png")), np.asarray(Image.open(tmp_path / "g.png"))
    )


# ------------------------------------------------------------------ launches per step
@standin_only
def test_standin_counts_operations_but_not_views(standin):
    xp = standin.module
    a = xp.ones((4, 6), dtype=np.float32)  # a fill
    b = a.reshape(6, 4).T[1:]  # views: nothing launched
    a += 1  # elementwise
    c = xp.ascontiguousarray(b)  # a copy, b being a transposed view
    xp.ascontiguousarray(c)  # already contiguous: nothing
    (c @ a.T).sum()  # a product (a.T is a view), then a reduction
    xp.RawKernel(PROBE_KERNEL, "minifcn_probe")((1,), (4,), (c, np.int32(c.size)))
    c[0] = a[0]  # a copy into a slice
    assert standin.stats.launches_by_category() == {
        "elementwise": 1, "reduction": 1, "gemm": 1, "copy": 2, "fill": 1, "kernel": 1,
    }  # fmt: skip
    assert standin.stats.launches[0].site.startswith("test_device.py:")


def _default_training_step(standin, optimizer: str):
    """Launches and syncs of one step of ``python -m minifcn.train`` (mini FCN-8s on
    shapes, 96x96, its optimiser defaults) on the device, the second step (state in place)."""
    from types import SimpleNamespace

    from minifcn.commands.train import parse_args
    from minifcn.data.shapes import CLASS_NAMES
    from minifcn.training.setup import make_optimizer

    args = vars(parse_args([]))
    assert (args["model"], args["dataset"], args["batch_size"]) == ("fcn8s", "shapes", 2)
    classes = len(CLASS_NAMES)
    model = FCN8s(classes, "mini", rng=0).to("gpu")  # the backbone shapes trains by default
    model.train()
    opt, schedule = make_optimizer(SimpleNamespace(**{**args, "optimizer": optimizer}), model, 9)
    loss_fn = SoftmaxCrossEntropy()
    images = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, classes, (2, 96, 96))
    for iteration in range(2):
        standin.stats.reset()
        opt.lr = schedule(iteration)
        x, y = batch_to_device(images, labels, classes, 255, "gpu")
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return standin.stats


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_default_training_step_issues_at_most_250_device_operations(standin, optimizer):
    stats = _default_training_step(standin, optimizer)
    launches = len(stats.launches)
    where = "\n".join(f"  {n:4d} {site}" for site, n in list(stats.launches_by_site().items())[:12])
    assert launches <= 250, f"{launches} launches in one {optimizer} step; most at:\n{where}"
    assert len(stats.syncs) <= 1, stats.describe()
    stepping = [e.what for e in stats.launches if e.within("_fused_step")]
    assert stepping == ["copy h2d asarray", f"kernel minifcn_{optimizer}"]  # table, kernel
    zeroing = [e for e in stats.launches if e.within("zero_grad")]
    assert len(zeroing) == 1


# ------------------------------------------------------------------ fused kernels = plain path
@pytest.mark.gpu
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: Adam(ps, lr=1e-2, weight_decay=1e-3),
        lambda ps: SGD(ps, lr=1e-2, momentum=0.9, weight_decay=5e-4),
        lambda ps: SGD(ps, lr=1e-2),
    ],
    ids=["adam", "sgd-momentum", "sgd-plain"],
)
def test_the_fused_optimiser_step_matches_the_per_parameter_loop(make, monkeypatch):
    """Same network, gradients and frozen parameter on the device, stepped by the fused
    kernel and by the loop (MINIFCN_CUDA_KERNELS=0); the lr changes every step, and
    state_dict / load_state_dict in the middle repacks."""
    runs = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        model = FCN32s(3, "mini", rng=2).to("gpu")
        model.conv1_2.bias.requires_grad = False
        params = list(model.parameters())
        opt = make(params)
        grads = np.random.default_rng(3)
        for t in range(4):
            opt.lr = 1e-2 / (t + 1)
            opt.zero_grad()
            for p in params:
                p.grad += cp.asarray(grads.standard_normal(p.shape).astype(np.float32))
            opt.step()
            if t == 1:
                state = opt.state_dict()
                opt = make(params)
                opt.load_state_dict(state)
        assert (opt.packing() is not None) == (switch == "1")
        runs.append([as_numpy(p.data) for p in params])
    exact = not REAL_GPU  # a GPU may contract a * b + c into one rounding (FMA)
    for fused, loop in zip(*runs):
        if exact:
            np.testing.assert_array_equal(fused, loop)
        else:
            close(fused, loop, rtol=1e-6, atol=1e-7)
    frozen = [i for i, p in enumerate(params) if not p.requires_grad]
    fresh = [as_numpy(p.data) for p in FCN32s(3, "mini", rng=2).parameters()]
    for i in frozen:
        np.testing.assert_array_equal(runs[0][i], fresh[i])


@pytest.mark.gpu
def test_packed_parameters_follow_a_model_moved_after_the_optimiser_was_made():
    model = Conv2d(2, 3, 3, 1, 1, rng=0).to("gpu")
    opt = Adam(list(model.parameters()), lr=1e-2)
    opt.zero_grad()
    opt.step()
    packing = opt.packing()
    assert all(p.data is v for p, v in zip(model.parameters(), packing.data_views))
    model.to("cpu").to("gpu")  # new arrays: the optimiser must notice and pack them
    model.weight.grad += cp.asarray(np.float32(1.0))
    before = as_numpy(model.weight.data)
    opt.step()
    assert opt.packing() is not packing
    assert (as_numpy(model.weight.data) < before).all()


@pytest.mark.gpu
@pytest.mark.parametrize("frozen", ["none", "weight", "bias"])
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (7, 2, 3), (1, 1, 0)])
def test_the_fused_conv_bias_paths_match_the_plain_path(rng, monkeypatch, frozen, k, s, p):
    x = rng.standard_normal((2, 3, 9, 8))
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        layer = Conv2d(3, 4, k, s, p, rng=0).astype(np.float64).to("gpu")
        layer.bias.data += cp.asarray(np.linspace(-1, 1, 4))
        if frozen != "none":
            getattr(layer, frozen).requires_grad = False
        for q in layer.parameters():
            q.grad += cp.asarray(np.float64(0.5))  # backward adds into what is there
        y = layer(cp.asarray(x))
        dx = layer.backward(cp.asarray(np.random.default_rng(5).standard_normal(y.shape)))
        results.append([y, dx, layer.weight.grad, layer.bias.grad])
    for a, b in zip(*results):
        close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_the_relu_kernels_match_the_plain_path(rng, monkeypatch):
    x = rng.standard_normal((2, 3, 5, 7))
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        layer = ReLU()
        y = layer(cp.asarray(x)[:, :, 1:])  # a view, as a crop gives
        dx = layer.backward(cp.asarray(np.random.default_rng(5).standard_normal(y.shape)))
        results.append([as_numpy(y), as_numpy(dx)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_the_dropout_kernel_matches_the_plain_path(rng, monkeypatch):
    from minifcn.nn import Dropout

    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        layer = Dropout(0.3, rng=4)  # the same mask from the same seed on both paths
        y = layer(cp.asarray(x))
        dx = layer.backward(cp.asarray(np.random.default_rng(5).standard_normal(y.shape)
                                       .astype(np.float32)))  # fmt: skip
        results.append([as_numpy(y), as_numpy(dx)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert (results[0][0] == 0).mean() == pytest.approx(0.3, abs=0.15)


@pytest.mark.gpu
@pytest.mark.parametrize("k,s,p,ceil", [(2, 2, 0, True), (3, 2, 1, True), (3, 1, 1, False)])
def test_the_max_pool_kernels_match_the_plain_path(rng, monkeypatch, k, s, p, ceil):
    """Overlapping windows send several gradients to one pixel: the gather adds them."""
    x = rng.permutation(np.arange(2 * 3 * 7 * 9) * 0.5 - 40).reshape(2, 3, 7, 9)  # no ties
    x[0, 0, :2, :2] = 1.0  # but here a tie: the first offset in row-major order wins
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MINIFCN_CUDA_KERNELS", switch)
        layer = MaxPool2d(k, s, p, ceil_mode=ceil)
        y = layer(cp.asarray(x))
        dx = layer.backward(cp.asarray(np.random.default_rng(5).standard_normal(y.shape)))
        results.append([as_numpy(y), as_numpy(dx)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-15)


# ------------------------------------------------------------------ the sync budget
def test_a_training_step_waits_for_the_device_at_most_once(standin):
    model = FCN8s(5, "mini", rng=0).to("gpu")
    model.train()
    opt, loss_fn = Adam(list(model.parameters()), lr=1e-3), SoftmaxCrossEntropy()
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 5, (2, 64, 64))
    for _ in range(2):  # the second step runs with the optimiser's state in place
        standin.stats.reset()
        x, y = batch_to_device(images, labels, 5, 255, "gpu")
        loss = loss_fn(model(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        assert np.isfinite(loss)
        syncs = standin.stats.syncs
        assert len(syncs) <= 1, "blocking syncs in one step:\n" + standin.stats.describe()
    assert syncs[0].site.startswith("loss.py:") and syncs[0].within("forward")
    # What went over: the images, the labels (1 byte a pixel) and the dropout masks.
    label_copies = [e for e in standin.stats.transfers if e.nbytes == labels.size]
    assert label_copies, "labels should travel as uint8"


@standin_only
def test_the_training_command_syncs_once_per_step(gpu_run):
    _, syncs = gpu_run
    steps = 2  # 8 images, batches of 4
    in_steps = [e for e in syncs if e.within("train_epoch")]
    assert 1 <= len(in_steps) <= steps, "syncs in the training loop:\n" + "\n".join(
        f"  {e.what} {e.site}" for e in in_steps
    )


def test_labels_are_checked_on_the_host_before_any_copy(standin):
    labels = np.zeros((1, 4, 4), dtype=np.int64)
    labels[0, 3, 3] = 9
    with pytest.raises(ValueError, match="label value 9 is out of range for 5 classes"):
        batch_to_device(np.zeros((1, 3, 4, 4), np.float32), labels, 5, 255, "gpu")
    assert standin.stats.transfers == []
    _, y = batch_to_device(np.zeros((1, 3, 4, 4), np.float32), labels % 5, 5, 255, "gpu")
    assert y.dtype == np.uint8
    _, y = batch_to_device(np.zeros((1, 3, 4, 4), np.float32), labels % 5, 300, -1, "gpu")
    assert y.dtype == np.int32


# ------------------------------------------------------------------ start-up errors
def _gpu_command_error(tmp_path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path / "run", "--epochs", "1", "--device", "gpu")
    assert exit_info.value.code not in (0, None)
    assert not (tmp_path / "run").exists(), "nothing may be created when the GPU is unusable"
    message = str(exit_info.value.code)
    assert "\n" not in message.strip()
    return message


def test_gpu_without_cupy_names_what_to_install(tmp_path, capsys, no_cupy):
    message = _gpu_command_error(tmp_path, capsys)
    assert "CuPy is not installed" in message and "cupy-cuda12x[ctk]" in message


@standin_only
def test_gpu_without_a_device_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fake_cupy._runtime, "device_count", 0)
    assert "no CUDA device" in _gpu_command_error(tmp_path, capsys)


@standin_only
def test_gpu_without_nvrtc_stops_at_start_up_with_one_message(tmp_path, capsys, monkeypatch):
    class MissingNVRTC(fake_cupy.RawKernel):
        def __call__(self, *args, **kwargs):
            raise RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: cannot open")

    monkeypatch.setattr(fake_cupy.module, "RawKernel", MissingNVRTC)
    backend._toolchain_problem.cache_clear()
    try:
        message = _gpu_command_error(tmp_path, capsys)
    finally:
        backend._toolchain_problem.cache_clear()
    assert "cannot compile and run a kernel" in message and "libnvrtc" in message
    assert "cupy-cuda13x[ctk]" in message


@requires_real_gpu
def test_the_real_gpu_passes_the_start_up_probe():
    backend.require_gpu()
    assert backend.device_of(to_device(np.zeros(2), "gpu")) == "gpu"


def test_gpucheck_summary_labels_each_precision_and_reports_launches(standin):
    from minifcn.commands import bench, gpucheck

    result = bench.main(["--device", "gpu", "--quick", "--repeat", "1", "--no-plain"])
    report = {"device": {"name": "stand-in", "cupy": "x", "cuda_runtime": 0}, "bench": result}
    text = gpucheck.summary_text({**report, "seconds": 1.0})
    off = next(ln for ln in text.splitlines() if ln.startswith("TF32 off mini train step"))
    on = next(ln for ln in text.splitlines() if ln.startswith("TF32 on  mini train step"))
    for line in (off, on):
        assert "launches" in line
    assert text.count("layer ratios") == 0  # no PyTorch here: no ratios to show


def test_gpucheck_without_cupy_stops_with_one_line(no_cupy, capsys):
    from minifcn.commands import gpucheck

    with pytest.raises(SystemExit, match="error: --device gpu: GPU requested but CuPy is not"):
        gpucheck.main(["--skip-tests"])


def test_bench_on_a_missing_gpu_stops_with_one_line(no_cupy):
    from minifcn.commands import bench

    with pytest.raises(SystemExit, match="error: --device gpu: GPU requested but CuPy is not"):
        bench.main(["--device", "gpu", "--quick"])


def test_gpucheck_training_passes_only_when_the_gpu_loss_matches_the_cpu_loss():
    from minifcn.commands import gpucheck

    assert gpucheck.losses_agree(0.512, 0.50)
    assert not gpucheck.losses_agree(0.56, 0.50)  # finished without error, learned otherwise
    assert not gpucheck.losses_agree(float("nan"), 0.5)
    assert not gpucheck.losses_agree(0.5, float("inf"))
    row = dict(
        gpu_epoch1_loss=0.93, cpu_epoch1_loss=0.67, epoch1_s=1.0, resumed_epoch2_s=1.0,
        evaluate_mean_iu=0.156, classes_found=1, num_classes=5, ok=False,
    )  # fmt: skip
    line = gpucheck.training_line(row)
    assert line.split()[1] == "FAIL" and "GPU 0.9300 vs CPU 0.6700" in line
    assert "IU > 0 for 1 of 5 classes" in line
    assert gpucheck.training_line({**row, "ok": True}).split()[1] == "PASS"
