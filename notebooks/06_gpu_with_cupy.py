# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. The same model on a GPU with CuPy
#
# CuPy is a NumPy look-alike whose arrays live on an NVIDIA GPU: `cupy.matmul`, slicing,
# `cupy.exp` and so on run as GPU kernels. `minifcn` never writes `import numpy as np` inside a
# layer's arithmetic; each layer asks `minifcn.backend.get_array_module(x)` for the module its
# input belongs to (NumPy or CuPy) and computes with that. So one code path serves both, and
# moving a model to the GPU is `model.to("gpu")`: every parameter is copied to the device, and
# from then on inputs must be CuPy arrays (`minifcn.backend.to_device(x, "gpu")`).
#
# This notebook runs the mini FCN-8s and checks
#
# 1. **parity**: the GPU computes the same scores and gradients as the CPU, to within float32
#    rounding (live, where a GPU is present);
# 2. **speed**: forward and training-step times measured live on this machine, and the figures
#    measured on an NVIDIA H100 by `python -m minifcn.gpucheck`, saved in `notebooks/measured/`.
#
# Where there is no GPU (or CuPy is not installed) it says so and runs the CPU parts only; the
# saved H100 figures are shown either way, with the machine and command that produced them. The
# exercise at the end: a softmax that runs on either device.

# %%
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minifcn
from minifcn.backend import as_numpy, cupy_module, gpu_available, synchronize, to_device
from minifcn.commands.bench import timeit
from minifcn.course.graders import check_softmax_any_device, grade
from minifcn.data import ShapesDataset, iterate_batches
from minifcn.models import FCN8s, model_from_spec
from minifcn.nn import SoftmaxCrossEntropy
from minifcn.optim import Adam

plt.rcParams["figure.dpi"] = 80
GPU = gpu_available()
cp = cupy_module()
if GPU:
    props = cp.cuda.runtime.getDeviceProperties(0)
    print(f"GPU found: {props['name'].decode()} (CuPy {cp.__version__}). All cells run.")
else:
    why = "CuPy is not installed" if cp is None else "CuPy found no CUDA device"
    print(
        f"NO GPU on this machine ({why}). The GPU comparisons below are SKIPPED; the CPU parts "
        "run. Install CuPy on a machine with an NVIDIA GPU to run them (see the README)."
    )

# %% [markdown]
# ## A model and a batch
#
# The mini FCN-8s with 5 classes. Its score layers start at zero (as in the paper), which would
# make every output exactly zero and any comparison trivial, so we give them small random
# weights first. The batch is a few shapes images, mean-subtracted.

# %%
rng = np.random.default_rng(0)
model = FCN8s(5, "mini", rng=0)
for name, p in model.named_parameters():
    if name.startswith("score") and name.endswith("weight"):
        p.data[...] = rng.normal(0.0, 0.05, p.data.shape)
BATCH = 2 if QUICK else 8
data = ShapesDataset("val", size=BATCH, image_size=64)  # the saved H100 run used 64x64
images, labels = next(iterate_batches(data, BATCH))
model.eval()  # no dropout, so that every run computes the same function


def clone(m, dtype=np.float32):
    twin = model_from_spec(m.spec())
    twin.load_state_dict(m.state_dict())
    return twin.astype(dtype).eval()


def scaled_error(a, b):
    """Largest difference relative to the largest magnitude: max|a - b| / max|b|."""
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


print(images.shape, images.dtype, "->", model(images).shape)


# %% [markdown]
# ## What "the same" means: float32 rounding on the CPU
#
# A GPU adds numbers in a different order than the CPU (many threads, different matrix-multiply
# algorithms), and in float32 a different order gives slightly different results. So we cannot
# expect bit-identical outputs, only differences of the size float32 rounding makes anyway. To
# know that size, compare the float32 model on the CPU with a float64 copy of it: that
# difference is the yardstick for the GPU. Both the scores and the gradients of all parameters
# (for a fixed random upstream gradient) are compared.


# %%
def forward_backward(m, x, dscores):
    m.zero_grad()
    scores = m(x)
    m.backward(dscores)
    return scores, {n: p.grad for n, p in m.named_parameters()}


dscores = rng.standard_normal((BATCH, 5, 64, 64)).astype(np.float32)
scores32, grads32 = forward_backward(model, images, dscores)
model64 = clone(model, np.float64)
scores64, grads64 = forward_backward(model64, images.astype(np.float64), dscores.astype(np.float64))

cpu_score_err = scaled_error(scores32, scores64)
cpu_grad_err = max(scaled_error(grads32[n], grads64[n]) for n in grads64)
print(
    f"CPU float32 vs float64: scores {cpu_score_err:.1e}, worst parameter gradient "
    f"{cpu_grad_err:.1e}"
)


# %% [markdown]
# ## Parity on the GPU
#
# The same weights moved to the GPU with `.to("gpu")`, the same batch copied there with
# `to_device`; results come back with `as_numpy`. The GPU float32 results are compared with the
# float64 CPU reference and should be as close to it as the CPU float32 results are (within a
# small factor). We also compare a few training steps (Adam, dropout on) on both devices from the
# same starting point: the dropout masks come from each layer's NumPy generator on both devices,
# so the two runs see identical masks and their losses should agree.


# %%
def train_losses(m, device, steps=3):
    m = m.train().to(device)
    opt = Adam(m.parameters(), lr=1e-3)
    loss_fn = SoftmaxCrossEntropy()
    x, y = to_device(images, device), to_device(labels, device)
    losses = []
    for _ in range(steps):
        loss = loss_fn(m(x), y)
        m.zero_grad()
        m.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
    return losses


cpu_losses = train_losses(clone(model), "cpu")
print("CPU training losses:", np.round(cpu_losses, 6))
if GPU:
    model_gpu = clone(model).to("gpu")
    scores_gpu, grads_gpu = forward_backward(
        model_gpu, to_device(images, "gpu"), to_device(dscores, "gpu")
    )
    gpu_score_err = scaled_error(scores_gpu, scores64)
    gpu_grad_err = max(scaled_error(grads_gpu[n], grads64[n]) for n in grads64)
    gpu_vs_cpu = scaled_error(scores_gpu, scores32)
    gpu_losses = train_losses(clone(model), "gpu")
    print(
        f"GPU float32 vs CPU float64: scores {gpu_score_err:.1e}, worst gradient "
        f"{gpu_grad_err:.1e}   (CPU float32: {cpu_score_err:.1e}, {cpu_grad_err:.1e})"
    )
    print(f"GPU vs CPU, both float32: scores {gpu_vs_cpu:.1e}")
    print("GPU training losses:", np.round(gpu_losses, 6))
else:
    print("No GPU: parity check skipped.")


# %% [markdown]
# ## Speed, measured live
#
# Times are medians of a few runs after a warm-up run (`bench.timeit`). On the GPU, work
# is queued and runs asynchronously, so the clock stops only after
# `minifcn.backend.synchronize` has waited for the queue to empty; otherwise we would time the
# queuing, not the computation. A training step is forward, loss, backward and an Adam update.
# The first GPU call also compiles CuPy's kernels, which the warm-up run absorbs. Whatever runs
# here is timed on this machine, on the devices it has, at the moment of the run: the saved
# outputs were made on a two-core machine shared with other jobs. CPU train-step times
# elsewhere (the README, `docs/performance.md`) are other runs, of `python -m minifcn.bench`,
# on other machines or loads; they measure the same kind of step and differ for that reason.


# %%
def step_fn(m, device):
    m = m.train().to(device)
    opt = Adam(m.parameters(), lr=1e-4)
    loss_fn = SoftmaxCrossEntropy()
    x, y = to_device(images, device), to_device(labels, device)

    def step():
        loss_fn(m(x), y)
        m.zero_grad()
        m.backward(loss_fn.backward())
        opt.step()

    return step


repeat = 1 if QUICK else 5
timings = {}
for device in ["cpu", "gpu"] if GPU else ["cpu"]:
    sync = (lambda: synchronize(cp)) if device == "gpu" else None
    m = clone(model).to(device)
    x = to_device(images, device)
    timings[device] = {
        "forward": timeit(lambda m=m, x=x: m(x), repeat, sync),
        "train step": timeit(step_fn(clone(model), device), repeat, sync),
    }
    for what, seconds in timings[device].items():
        print(f"{device}: {what:>10} {1e3 * seconds:8.1f} ms  ({BATCH / seconds:7.1f} images/s)")

# %% [markdown]
# ## Speed, measured on an H100
#
# `notebooks/measured/gpucheck_h100.json` holds the figures of one run of
#
# ```bash
# PYTHONPATH=. python -m minifcn.gpucheck --json gpucheck_h100.json
# ```
#
# on a machine with one NVIDIA H100 80GB GPU and 16 CPU cores, with PyTorch installed for the
# comparison (`gpucheck_h100.txt` beside it is that run's full log). Among other things,
# gpucheck runs `python -m minifcn.bench --device gpu --compare torch`: every layer at the shapes
# FCN uses, forward and backward, in minifcn on CuPy and in PyTorch (cuDNN) on the same GPU, then
# a whole training step of the mini FCN-8s (batch 8, 64x64) and a forward+loss+backward of the
# paper's VGG16 FCN-8s on one 500x500 image. The next cell reads the file and prints those
# figures; nothing in it is measured here.
#
# **Which code these figures are of.** The file does not record it. It was written by one run
# on an earlier version of this project (`git log -- notebooks/measured/gpucheck_h100.json`
# gives the date); the layer code, the accelerated CPU path and the dispatch have changed
# since, and no GPU was available to rerun it on the current code. Read its numbers as that
# earlier version's, on that machine. To refresh them, run the command above on a GPU machine
# and commit the new file next to this one.

# %%
# next to this notebook; from elsewhere (the tests run it in a temporary folder), in the checkout
candidates = [Path("measured"), Path(minifcn.__file__).resolve().parents[1] / "notebooks/measured"]
folder = next(p for p in candidates if (p / "gpucheck_h100.json").is_file())
measured = json.loads((folder / "gpucheck_h100.json").read_text())
bench = measured["bench"]
print(
    f"device: {measured['device']['name']}, CuPy {measured['device']['cupy']}; host: "
    f"{bench['machine']['cpu']}, {bench['machine']['cores']} cores"
)
print(f"{'layer':<18} {'input shape':<14} {'minifcn ms':>10} {'torch ms':>9} {'ratio':>6}")
layer_rows = []
for row in bench["layers"]:
    ours = row["fwd_ms"] + row["bwd_ms"]
    theirs = row["torch_fwd_ms"] + row["torch_bwd_ms"]
    layer_rows.append((row["layer"], ours, theirs))
    shape = "x".join(map(str, row["shape"]))
    print(f"{row['layer']:<18} {shape:<14} {ours:10.2f} {theirs:9.2f} {ours / theirs:6.2f}")
step, paper_step = bench["train_step"], bench["paper_step"]
print(
    f"mini FCN-8s train step (batch {step['batch']}, {step['size']}px): "
    f"minifcn {1e3 * step['step_s']:.1f} ms, PyTorch {1e3 * step['torch_step_s']:.1f} ms, "
    f"ratio {step['torch_ratio']:.2f}"
)
print(
    f"paper FCN-8s, 1x3x{paper_step['size']}x{paper_step['size']} forward+loss+backward: "
    f"minifcn {1e3 * paper_step['step_s']:.1f} ms, PyTorch {1e3 * paper_step['torch_step_s']:.1f}"
    f" ms, ratio {paper_step['torch_ratio']:.2f}"
)

# %% [markdown]
# The same figures as bars, on linear axes: each layer's forward+backward time, and the two whole
# steps. (The ratio column is minifcn's time divided by PyTorch's; above 1, PyTorch is faster.)

# %%
fig, (ax_layers, ax_steps) = plt.subplots(
    1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1]}
)
names = [r[0] for r in layer_rows]
pos = np.arange(len(names))
ax_layers.bar(pos - 0.2, [r[1] for r in layer_rows], 0.4, label="minifcn (CuPy)")
ax_layers.bar(pos + 0.2, [r[2] for r in layer_rows], 0.4, label="PyTorch (cuDNN)")
ax_layers.set_xticks(pos, names, rotation=45, ha="right", fontsize=8)
ax_layers.set_ylabel("forward + backward (ms)")
ax_layers.set_title("layers at FCN's shapes, batch 8, H100 (measured, saved)")
ax_layers.legend()
step_names = ["mini FCN-8s\ntrain step", "paper FCN-8s\n500x500 step"]
ax_steps.bar(
    np.arange(2) - 0.2,
    [1e3 * step["step_s"], 1e3 * paper_step["step_s"]],
    0.4,
    label="minifcn (CuPy)",
)
ax_steps.bar(
    np.arange(2) + 0.2,
    [1e3 * step["torch_step_s"], 1e3 * paper_step["torch_step_s"]],
    0.4,
    label="PyTorch (cuDNN)",
)
ax_steps.set_xticks(np.arange(2), step_names, fontsize=8)
ax_steps.set_ylabel("ms")
ax_steps.set_title("whole steps, H100")
plt.tight_layout()
plt.show()

# %% [markdown]
# What these saved figures say, and only that: on the H100, minifcn's layers take between the
# smallest and the largest ratio printed below times PyTorch's time, and both whole steps, the
# mini FCN-8s training step and the paper-size FCN-8s step, take about three times PyTorch's
# (the ratios printed above). The last line puts the live CPU train step from above next to the
# saved H100 one for the same batch of 64x64 images (in quick mode the live batch is smaller, as
# printed). The two were measured on different machines in different runs, so the line says how
# far apart they are, not what a GPU would do on this machine.

# %%
ratios = {name: ours / theirs for name, ours, theirs in layer_rows}
slowest, fastest = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
print(
    f"layer ratios to PyTorch: {ratios[fastest]:.2f} ({fastest}) .. {ratios[slowest]:.2f} "
    f"({slowest})"
)
print(
    f"train step, batch {BATCH}, {images.shape[-1]}px images: this machine's CPU "
    f"{1e3 * timings['cpu']['train step']:.1f} ms (measured above); saved H100 run, batch "
    f"{step['batch']}, {step['size']}px: {1e3 * step['step_s']:.1f} ms"
)

# %% [markdown]
# The same run also trained the mini FCN-8s on the GPU for two short epochs, the second resumed
# from a checkpoint, and evaluated the result. Its "training PASS" means that this pipeline
# ran on the GPU, resumed exactly and gave finite, matching numbers; it does not mean the
# network learned. At that size (a handful of images, two epochs) it had not: its mean IU is at
# the level of predicting background everywhere, printed next.

# %%
run = measured["training"]
print(
    f"saved H100 training check: epoch 1 {run['epoch1_s']:.1f} s, resumed epoch 2 "
    f"{run['resumed_epoch2_s']:.1f} s, best mean IU {run['best_mean_iu']:.3f}, evaluate again "
    f"{run['evaluate_mean_iu']:.3f}"
)
# All background: background's IU is the fraction of background pixels, every other class's 0.
shapes_val = ShapesDataset("val", size=100)
background_only = float((shapes_val.labels == 0).mean()) / shapes_val.num_classes
print(
    f"(labelling every pixel background scores a mean IU of {background_only:.3f} on 100 "
    "shapes validation images)"
)

# %% [markdown]
# ## Exercise: one softmax for both devices
#
# A layer in `minifcn` never names NumPy in its arithmetic: it asks
# `minifcn.backend.get_array_module(x)` for the module its input lives in and computes with that,
# so the same code runs on NumPy and CuPy arrays. Write `softmax_any_device(scores)` that way:
# scores `(N, C, H, W)` -> probabilities over axis 1, on the scores' own device, numerically
# stable (subtract each pixel's maximum before `exp`, as `SoftmaxCrossEntropy` does). The check
# compares with a float64 softmax, feeds scores of size 1e4, checks that a NumPy input gives a
# NumPy output and, where a GPU is present, that a CuPy input gives a CuPy output. Solution:
# `notebooks/solutions/nb06.py`.


# %%
def softmax_any_device(scores):
    """scores (N, C, H, W) on NumPy or CuPy -> softmax over axis 1, on the same device."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise = grade(check_softmax_any_device, softmax_any_device)

# %% [markdown]
# ## Checked
#
# On every machine: the float32 CPU model agrees with its float64 copy to float32 precision,
# training on the CPU lowers the loss, and the saved H100 file holds the figures printed above
# (a layer table with a PyTorch time for every layer, and the two steps). With a GPU, in
# addition: the GPU's scores and gradients are as close to the float64 reference as the CPU's
# are (within a factor of 10), and the training losses on the two devices agree.

# %%
assert cpu_score_err < 1e-4 and cpu_grad_err < 1e-3, (cpu_score_err, cpu_grad_err)
assert cpu_losses[-1] < cpu_losses[0]
assert measured["device"]["name"].startswith("NVIDIA H100")
assert len(layer_rows) == len(bench["layers"]) > 0 and all(r[2] > 0 for r in layer_rows)
assert step["step_s"] > 0 and paper_step["torch_step_s"] > 0
assert run["best_mean_iu"] == run["evaluate_mean_iu"]
assert abs(run["best_mean_iu"] - background_only) < 0.02  # the collapse level, as the text says
if GPU:
    assert gpu_score_err < 10 * cpu_score_err + 1e-6, (gpu_score_err, cpu_score_err)
    assert gpu_grad_err < 10 * cpu_grad_err + 1e-6, (gpu_grad_err, cpu_grad_err)
    assert np.allclose(gpu_losses, cpu_losses, rtol=1e-4), (gpu_losses, cpu_losses)
else:
    print("GPU checks skipped: no GPU.")
print("all checks passed")
