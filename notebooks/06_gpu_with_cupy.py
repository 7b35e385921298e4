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
# This notebook runs the mini FCN-8s on both and checks
#
# 1. **parity**: the GPU computes the same scores and gradients as the CPU, to within float32
#    rounding;
# 2. **speed**: forward and training-step times on each.
#
# Where there is no GPU (or CuPy is not installed) it says so and runs the CPU parts only.

# %%
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps

import matplotlib.pyplot as plt
import numpy as np

from minifcn.backend import as_numpy, cupy_module, gpu_available, synchronize, to_device
from minifcn.bench import timeit
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
data = ShapesDataset("val", size=BATCH)
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
# ## Speed
#
# Times are medians of a few runs after a warm-up run (`minifcn.bench.timeit`). On the GPU, work
# is queued and runs asynchronously, so the clock stops only after
# `minifcn.backend.synchronize` has waited for the queue to empty; otherwise we would time the
# queuing, not the computation. A training step is forward, loss, backward and an Adam update.
# The first GPU call also compiles CuPy's kernels, which the warm-up run absorbs.

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

fig, ax = plt.subplots(figsize=(6, 3))
kinds = ["forward", "train step"]
for k, device in enumerate(timings):
    ax.bar(np.arange(2) + 0.4 * k, [BATCH / timings[device][w] for w in kinds], 0.4, label=device)
ax.set_xticks(np.arange(2) + 0.2 * (len(timings) - 1), kinds)
ax.set_ylabel("images / s (64 x 64)")
ax.set_yscale("log")
ax.set_title(f"mini FCN-8s, batch of {BATCH}" + ("" if GPU else " (no GPU here: CPU only)"))
ax.legend()
plt.show()
if GPU:
    for w in kinds:
        print(f"GPU speed-up, {w}: x{timings['cpu'][w] / timings['gpu'][w]:.1f}")

# %% [markdown]
# A network this small (a few hundred thousand parameters on 64x64 images) keeps a GPU far from
# busy:
# each layer is a short kernel, and the time goes to launching kernels from Python. The
# speed-up grows with the batch, the image size and the width of the network; the paper-size
# VGG16 network on 500x500 images is where the GPU is indispensable
# (`python -m minifcn.bench --device gpu` times the layers at those sizes).
#
# ## Checked
#
# On every machine: the float32 CPU model agrees with its float64 copy to float32 precision and
# training on the CPU lowers the loss. With a GPU, in addition: the GPU's scores and gradients
# are as close to the float64 reference as the CPU's are (within a factor of 10), and the
# training losses on the two devices agree.

# %%
assert cpu_score_err < 1e-4 and cpu_grad_err < 1e-3, (cpu_score_err, cpu_grad_err)
assert cpu_losses[-1] < cpu_losses[0]
if GPU:
    assert gpu_score_err < 10 * cpu_score_err + 1e-6, (gpu_score_err, cpu_score_err)
    assert gpu_grad_err < 10 * cpu_grad_err + 1e-6, (gpu_grad_err, cpu_grad_err)
    assert np.allclose(gpu_losses, cpu_losses, rtol=1e-4), (gpu_losses, cpu_losses)
else:
    print("GPU checks skipped: no GPU.")
print("all checks passed")
