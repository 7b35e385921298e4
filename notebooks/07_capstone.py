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
# # 7. Capstone: your functions train FCN-8s
#
# In notebooks 1 to 4 you wrote a convolution, a max pool's backward pass, a transposed
# convolution and a crop as loops, to see every index. Loops over output pixels are far too
# slow to train with. Here you write the **vectorised** versions, the ones a network can
# train on, with exactly the contract of the plain functions in `minifcn/nn/`, and plug them
# into FCN-8s. Every `Conv2d`, `MaxPool2d`, `ConvTranspose2d` and `Crop` of the network then
# runs *your* code, forward and backward, and the network learns to segment the shapes images.
#
# The hook is `minifcn.dispatch.use(...)`: the same dispatch through which every layer picks
# between the plain functions and the accelerated path (`minifcn/accel`). Inside a
# `with use(conv2d=..., conv2d_input_grad=..., ...)` block, each layer whose functions are all
# given runs them instead of its own.
#
# What you write (each graded against the plain functions in float64, and checked to keep
# float32 as float32, since the network trains in float32):
#
# * `Conv2d`: `conv2d(x, weight, stride, padding) -> (y, col)`,
#   `conv2d_input_grad(dy, weight, h, w, stride, padding) -> dx`,
#   `conv2d_weight_grad(col, dy) -> dW`;
# * `MaxPool2d`: `max_pool2d(x, k, s, p, out_h, out_w) -> (y, arg)`,
#   `max_pool2d_backward(dy, arg, x_shape, k, s, p) -> dx`;
# * `ConvTranspose2d`: `conv_transpose2d(x, weight, stride, padding) -> (y, saved)`,
#   `conv_transpose2d_backward(saved, dy, weight, stride, padding, weight_grad) -> (dx, dW)`
#   (`dW` None when `weight_grad` is False);
# * `Crop`: `crop2d(x, oy, ox, h, w) -> window`, `crop2d_backward(dy, x_shape, oy, ox) -> dx`.
#
# While a grader runs your functions, the library's own convolutions, pools, crops and the
# naive loops of `minifcn.nn.reference` are switched off: calling them fails with "write it
# yourself". NumPy is yours to use. A reference solution is in `notebooks/solutions/nb07.py`.
#
# **The saved outputs of this notebook come from a run with that reference solution filled in**
# (`python notebooks/refresh.py 07` runs it so, and so does the test suite, in quick mode).
# With your own functions the figures are yours.

# %%
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps

import time
from collections import Counter
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

from minifcn import dispatch
from minifcn.course.draw import draw_score_maps
from minifcn.course.graders import (
    check_layer_conv2d,
    check_layer_conv_transpose2d,
    check_layer_crop2d,
    check_layer_max_pool2d,
    grade,
)
from minifcn.course.teaching import class_legend
from minifcn.data import ShapesDataset, colorize, iterate_batches
from minifcn.inference.engine import evaluate, predict_scores
from minifcn.models import MINI, FCN8s
from minifcn.nn import SoftmaxCrossEntropy
from minifcn.optim import Adam, PolyLR

plt.rcParams["figure.dpi"] = 80
print("the layers and the functions use() replaces:")
for layer, names in dispatch.GROUPS.items():
    print(f"  {layer:>20}: {', '.join(names)}")

# %% [markdown]
# ## Exercise 1: the convolution as im2col and one matrix product
#
# Write `conv2d`, `conv2d_input_grad` and `conv2d_weight_grad`. The plan (notebook 1 derived
# it): copy every patch into a column (`col`, shape `(N, K, P)` with `K = C*kh*kw` and
# `P = out_h*out_w`) with a loop over the `kh*kw` kernel offsets, each one strided slice of the
# padded input; then `y = W (O, K) @ col`. The backward: `dW = sum_n dy[n] @ col[n]^T`, and
# `dx` = col2im of `W^T dy`: the same loop over offsets, adding (`+=`) each offset's slice back
# onto the padded canvas, then cutting the padding off. `col` is whatever your backward needs
# (the layer keeps it between forward and backward); `conv2d_weight_grad` may return `(O, K)`
# or `(O, C, kh, kw)`. No loop over output pixels: with 96x96 images that would be thousands
# of Python steps per layer.


# %%
def conv2d(x, weight, stride, padding):
    """x (N, C, H, W), weight (O, C, kh, kw) -> (y (N, O, out_h, out_w), col)."""
    # YOUR CODE HERE
    raise NotImplementedError


def conv2d_input_grad(dy, weight, h, w, stride, padding):
    """dy (N, O, out_h, out_w), weight (O, C, kh, kw) -> dx (N, C, h, w)."""
    # YOUR CODE HERE
    raise NotImplementedError


def conv2d_weight_grad(col, dy):
    """col (what your conv2d returned), dy (N, O, out_h, out_w) -> dW (O, K) or (O, C, kh, kw)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
passed = {"conv": grade(check_layer_conv2d, conv2d, conv2d_input_grad, conv2d_weight_grad)}

# %% [markdown]
# ## Exercise 2: max pooling, forward and backward
#
# `max_pool2d(x, k, s, p, out_h, out_w) -> (y, arg)`: the layer has already worked out the
# output size (ceil mode: the last window may hang over the bottom or right edge; the part
# outside the input counts as minus infinity). Loop over the `k*k` offsets, keeping the
# running maximum and *which offset* won (`arg`, for the backward; on ties keep the first
# offset in row-major order). `max_pool2d_backward(dy, arg, x_shape, k, s, p) -> dx` sends
# each output's gradient to the input that won its window.


# %%
def max_pool2d(x, k, s, p, out_h, out_w):
    """x (N, C, H, W) -> (y (N, C, out_h, out_w), arg: what your backward needs)."""
    # YOUR CODE HERE
    raise NotImplementedError


def max_pool2d_backward(dy, arg, x_shape, k, s, p):
    """dy (N, C, out_h, out_w) -> dx (N, C, H, W)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
passed["pool"] = grade(check_layer_max_pool2d, max_pool2d, max_pool2d_backward)

# %% [markdown]
# ## Exercise 3: the transposed convolution, from your convolution
#
# Notebook 3 showed that a transposed convolution is a convolution's input gradient, and its
# input gradient is a convolution's forward pass. So these two are a few lines each, calling
# *your* functions from exercise 1: with weight `(I, O, k, k)`, read it as a convolution from
# `O` channels to `I`. The output side is `(H - 1) * stride - 2 * padding + k`. `saved` is
# what the backward needs (the input `x`, for the weight gradient). With
# `weight_grad=False` (a frozen upsampling) return `(dx, None)`.


# %%
def conv_transpose2d(x, weight, stride, padding):
    """x (N, I, H, W), weight (I, O, k, k) -> (y (N, O, out_h, out_w), saved)."""
    # YOUR CODE HERE
    raise NotImplementedError


def conv_transpose2d_backward(saved, dy, weight, stride, padding, weight_grad):
    """saved, dy (N, O, out_h, out_w) -> (dx (N, I, H, W), dW (I, O, k, k) or None)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
passed["conv_transpose"] = grade(
    check_layer_conv_transpose2d, conv_transpose2d, conv_transpose2d_backward
)

# %% [markdown]
# ## Exercise 4: the crop
#
# `crop2d(x, oy, ox, h, w)` returns the `h x w` window whose top-left corner is row `oy`,
# column `ox` (FCN's crops align a larger score map with a smaller one, notebook 4);
# `crop2d_backward(dy, x_shape, oy, ox)` puts the gradient back into that window of a zero
# array of the input's shape.


# %%
def crop2d(x, oy, ox, h, w):
    """x (N, C, H, W) -> (N, C, h, w), the window at (oy, ox)."""
    # YOUR CODE HERE
    raise NotImplementedError


def crop2d_backward(dy, x_shape, oy, ox):
    """dy (N, C, h, w) -> dx of shape x_shape."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
passed["crop"] = grade(check_layer_crop2d, crop2d, crop2d_backward)
all_passed = all(passed.values())
print("all four graded exercises pass:", all_passed)

# %% [markdown]
# ## Plugging them in
#
# `mine` names every function of the four layers. Inside `with dispatch.use(**mine):` the
# network runs them; outside it, the library's. To see that it really is your code, each
# function is wrapped in a counter, and one forward and backward pass of FCN-8s in float64 is
# compared with the same pass on the library's functions: the scores and every parameter's
# gradient must agree to float64 precision.

# %%
calls = Counter()


def counted(name, fn):
    def run(*args):
        calls[name] += 1
        return fn(*args)

    return run


names = [
    n
    for layer in ("Conv2d", "MaxPool2d", "ConvTranspose2d", "Crop")
    for n in dispatch.GROUPS[layer]
]
mine = {name: counted(name, globals()[name]) for name in names}


def one_pass(model, x, labels):
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn(model(x), labels)
    model.zero_grad()
    model.backward(loss_fn.backward())
    return loss, {n: p.grad.copy() for n, p in model.named_parameters() if p.requires_grad}


probe_set = ShapesDataset("val", size=2)
x64 = np.stack([probe_set[i][0] for i in range(2)]).astype(np.float64)
labels = np.stack([probe_set[i][1] for i in range(2)])
probe = FCN8s(probe_set.num_classes, "mini", rng=0).astype(np.float64).eval()
probe_rng = np.random.default_rng(0)
for name, p in probe.named_parameters():  # the score layers start at zero: give them weights
    if name.startswith("score") and name.endswith("weight"):
        p.data[...] = probe_rng.standard_normal(p.data.shape) * 0.05
if all_passed:
    loss_lib, grads_lib = one_pass(probe, x64, labels)
    with dispatch.use(**mine):
        print("layers running your functions:", dispatch.in_use())
        loss_mine, grads_mine = one_pass(probe, x64, labels)
    worst = max(
        float(np.abs(grads_mine[n] - grads_lib[n]).max() / (np.abs(grads_lib[n]).max() + 1e-30))
        for n in grads_lib
    )
    print(f"loss: library {loss_lib:.12f}, yours {loss_mine:.12f}")
    print(f"largest relative difference over {len(grads_lib)} parameter gradients: {worst:.1e}")
    print("calls to your functions in one forward + backward:", dict(calls))
else:
    print("write the four exercises above first; this cell then compares them with the library")

# %% [markdown]
# ## Training FCN-8s on your functions
#
# The loop below is the whole of training (`minifcn/training/loop.py` has the same steps plus
# checkpoints and logging): a batch, the forward pass, the loss, the backward pass, an Adam
# step, with the learning rate decaying as `(1 - step / steps)^0.9`. The network is FCN-8s on
# a narrower copy of the mini backbone (half the channels in blocks 3 to 5 and fc6/fc7: the
# layers are the same, only thinner, so it trains in minutes on a CPU with plain NumPy), on
# 64x64 shapes images. Everything inside `with dispatch.use(**mine)` runs your functions.
# The figures below come from this cell's own output.

# %%
SIDE = 64
TRAIN, VAL, EPOCHS, BATCH = (8, 4, 1, 4) if QUICK else (2000, 100, 2, 4)
CAPSTONE = replace(MINI, name="capstone", widths=(8, 16, 16, 32, 32), fc_channels=64)
train_set = ShapesDataset("train", size=TRAIN, image_size=SIDE)
val_set = ShapesDataset("val", size=VAL, image_size=SIDE)
net = FCN8s(train_set.num_classes, CAPSTONE, rng=0)
loss_fn = SoftmaxCrossEntropy(ignore_index=train_set.ignore_index)
opt = Adam(net.parameters(), lr=3e-3)
steps = EPOCHS * -(-TRAIN // BATCH)
schedule = PolyLR(3e-3, max_iter=steps)
history, step, calls = [], 0, Counter()
start = time.perf_counter()
if all_passed:
    mine = {name: counted(name, globals()[name]) for name in names}
    with dispatch.use(**mine):
        for epoch in range(EPOCHS):
            train_set.set_epoch(epoch)
            net.train()
            order = np.random.default_rng([0, epoch])
            for images, labels_b in iterate_batches(train_set, BATCH, shuffle=True, rng=order):
                opt.lr = schedule(step)
                loss = loss_fn(net(images), labels_b)
                net.zero_grad()
                net.backward(loss_fn.backward(), input_grad=False)
                opt.step()
                history.append(loss)
                step += 1
            result = evaluate(net, val_set, batch_size=8)
            print(
                f"epoch {epoch + 1}/{EPOCHS}: last loss {loss:.3f}, validation mean IU "
                f"{result['mean_iu']:.3f}, {time.perf_counter() - start:.0f} s so far"
            )
seconds = time.perf_counter() - start
mean_iu = result["mean_iu"] if all_passed else float("nan")
print(f"{step} steps of batch {BATCH} in {seconds:.0f} s (a shared machine; yours will differ)")
print("calls to your functions while training:", dict(calls))

# %% [markdown]
# The loss curve (each point one batch), and four validation images through the trained
# network. The sentence under the figure is written from the run's own numbers.

# %%
if all_passed:
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.8))
    axes[0].plot(history, lw=0.8)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].set_title("FCN-8s on your functions", fontsize=9)
    images = np.stack([val_set[i][0] for i in range(2)])
    with dispatch.use(**mine):
        pred = predict_scores(net.eval(), images).argmax(axis=1)
    for k in range(2):
        axes[1 + 2 * k].imshow(val_set.raw_image(k))
        axes[1 + 2 * k].set_title("image", fontsize=9)
        axes[2 + 2 * k].imshow(colorize(pred[k]), interpolation="nearest")
        axes[2 + 2 * k].set_title("prediction", fontsize=9)
    for ax in axes[1:]:
        ax.axis("off")
    class_legend(fig)
    plt.show()
    print(
        f"After {EPOCHS} epochs of {TRAIN} images on your functions, FCN-8s reaches a validation "
        f"mean IU of {mean_iu:.3f} on {VAL} images (predicting only background gives about 0.16)."
    )

# %% [markdown]
# ## What each stage of your network holds
#
# The same network on one validation image, stage by stage: the coarse `score_fr` (stride
# 32), the 2x upsampled `upscore2`, the pool4 scores cropped to it (`score_pool4c`), their sum
# `fuse_pool4`, and so on to the final 8x upsampling. Each map is drawn where its pixels lie
# on the image (the grey frame), by its coordinate map; the top row is the arg-max class, the
# bottom row one class's score.

# %%
if all_passed:
    with dispatch.use(**mine):
        fig, _ = draw_score_maps(net.eval(), val_set.raw_image(0), val_set[0][0][None])
    plt.show()

# %% [markdown]
# ## Checked
#
# * the four graded exercises pass (here: with the reference solution filled in);
# * inside `use(...)` the network ran your functions (the call counts), and one float64
#   forward and backward pass on them equals the library's;
# * (full run) FCN-8s trained on them reaches the mean IU printed above, well above the 0.16
#   of predicting only background.

# %%
assert all_passed, (
    "write the four exercises first (a reference solution: notebooks/solutions/nb07.py)"
)
assert abs(loss_mine - loss_lib) < 1e-10 * max(1.0, abs(loss_lib)) and worst < 1e-9, worst
assert calls["conv2d"] > 0 and calls["crop2d_backward"] > 0 and calls["max_pool2d"] > 0
assert all(np.isfinite(history))
if not QUICK:
    assert mean_iu > 0.3, mean_iu  # about twice the 0.16 of predicting only background
print("all checks passed")
