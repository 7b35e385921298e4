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
# # 2. From a classifier to a spatial map
#
# The first idea of the FCN paper: a classification network's **fully connected layers are
# convolutions** whose kernel covers their whole input. Rewrite them that way and the network
# accepts images of any size; on an image larger than the one it was trained on it returns a
# grid of predictions, a *heatmap*, one cell per window, computed in one pass that shares all
# the work between overlapping windows.
#
# In this notebook we
#
# 1. build a small window classifier (convolutions, then `Flatten` and two `Linear` layers) that
#    tells which shape lies at the centre of a 26x26 window of a shapes image;
# 2. derive the backward passes of the layers notebook 1 did not cover (`Linear`, `MaxPool2d`,
#    `SoftmaxCrossEntropy`) and check each against a numerical gradient;
# 3. train the classifier, watching its accuracy on training *and* validation windows;
# 4. convert it into a convolutional network (exercise 2: you write the conversion of a fully
#    connected layer, in both flatten orders, VGG16's included), run it on a whole 64x64 image
#    and plot the heatmap;
# 5. check that every heatmap cell equals the original classifier applied to its window.
#
# Exercise 1 (first, before the library's pooling is used) is the backward pass of a max pool
# in ceil mode. While a grader runs your function, the library's own implementation of what it
# grades is switched off. Questions in bold ask you to explain something; model answers are in
# `notebooks/solutions/answers.md`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from minifcn.course.graders import check_fc_as_conv, check_maxpool_backward, distinct_values, grade
from minifcn.course.teaching import best_time, class_legend, softmax
from minifcn.data import CLASS_NAMES, ShapesDataset, colorize
from minifcn.nn import Conv2d, Flatten, Linear, ReLU, Sequential, SoftmaxCrossEntropy
from minifcn.nn.gradcheck import gradcheck
from minifcn.optim import Adam

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps
plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the backward pass of a max pool in ceil mode
#
# Write `maxpool_backward(dy, x, kernel_size, stride)`: given the input `x` `(N, C, H, W)` of a
# max pool with no padding **in ceil mode**, and the upstream gradient `dy` `(N, C, out_h,
# out_w)` with `out_h = ceil((H - k) / s) + 1`, return `dx` like `x`. Window `(r, c)` starts at
# row `r*s`, column `c*s`, and the last ones are cut short by the edge. Send each output's
# gradient to the position of its window's maximum (the first one in row-major order if there is
# a tie) and add with `+=`: with a stride smaller than the kernel, windows overlap and one input
# can win twice. The check compares with `MaxPool2d(k, s, ceil_mode=True).backward` on inputs
# without ties, for 2x2/2 and overlapping 3x3/2 windows; while it runs your function the
# library's pooling (plain, accelerated and naive) is switched off. Solution:
# `notebooks/solutions/nb02.py`. The section after the next derives the same rule.


# %%
def maxpool_backward(dy, x, kernel_size, stride):
    """dy (N, C, out_h, out_w), the input x (N, C, H, W) -> dx (N, C, H, W)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise = grade(check_maxpool_backward, maxpool_backward)

# %%
from minifcn.nn import MaxPool2d  # noqa: E402  (the library's pooling, from here on)

# %% [markdown]
# ## The classifier
#
# Two 3x3 convolutions (no padding), each followed by ReLU and a 2x2 max pool, turn a 26x26
# window into a 32-channel 5x5 feature map; `Flatten` makes that a vector of 800 numbers, and two
# fully connected layers map it to 5 class scores (background, disk, rectangle, triangle,
# cross).
#
# Why no padding? A padded convolution sees zeros at the border of the window. Once the network
# slides over a big image, the same position sees real neighbouring pixels instead, and the two
# would differ. Without padding, what the network computes for a window depends only on the
# window's own pixels.

# %%
WINDOW = 26
classifier = Sequential(
    Conv2d(3, 16, 3, rng=0),
    ReLU(),
    MaxPool2d(2),
    Conv2d(16, 32, 3, rng=1),
    ReLU(),
    MaxPool2d(2),
    Flatten(),
    Linear(32 * 5 * 5, 64, rng=2),
    ReLU(),
    Linear(64, len(CLASS_NAMES), rng=3),
)
print(classifier)

# %% [markdown]
# ## The other layers' backward passes, derived and checked
#
# Notebook 1 derived the convolution's backward pass. This classifier also has a fully connected
# layer, max pooling and the loss. Each backward pass below is derived in two lines and then
# compared with central differences (`minifcn.nn.gradcheck.gradcheck`, float64), as notebook 1 did
# for `Conv2d`.
#
# **Linear.** $y = x W^\top + b$ with x `(N, in)`, W `(out, in)`. Each $y_{no}$ is
# $\sum_i x_{ni} W_{oi} + b_o$, so with the upstream gradient $dy$:
# $dx = dy\, W$, $\;dW = dy^\top x$ (summed over the batch by the product), $\;db = \sum_n dy$.

# %%
linear = Linear(6, 4, rng=0).astype(np.float64)
linear_errors = gradcheck(linear, rng.standard_normal((3, 6)))
print("Linear:", {k: f"{v:.1e}" for k, v in linear_errors.items()})

# %% [markdown]
# **Max pool.** Each output is the largest input of its window. Nudge any other input of the
# window a little and the output does not change; nudge the winner and the output moves with
# it. So the gradient of each output goes to its window's winner, and every other input gets 0.
# Below, a 4x4 input pooled 2x2 with stride 2, and an upstream gradient `dy = [[1, 2], [3, 4]]`:
# each of the four numbers lands where its window's maximum was.
#
# FCN pools in **ceil mode**: when the windows do not fit a whole number of times, one more
# window is added that hangs over the bottom/right edge and covers only the pixels that exist.
# A 5x5 input then gives a 3x3 output (floor mode would give 2x2 and ignore the last row and
# column).

# %%
pool = MaxPool2d(2, 2, ceil_mode=True).astype(np.float64)
x4 = np.array([[1, 5, 0, 2], [3, 2, 7, 1], [0, 0, 1, 1], [9, 4, 2, 8]], float)[None, None]
print("input\n", x4[0, 0], "\nmax pool\n", pool(x4)[0, 0])
print("dx for dy = [[1, 2], [3, 4]]\n", pool.backward(np.array([[[[1.0, 2], [3, 4]]]]))[0, 0])
x5 = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
print(
    "5x5 input, ceil mode ->", pool(x5).shape[2:], "| floor mode ->", MaxPool2d(2, 2)(x5).shape[2:]
)
print("ceil-mode output:\n", pool(x5)[0, 0])

# %% [markdown]
# The gradient check uses inputs with distinct, well-separated values (shuffled `0, 0.1, 0.2,
# ...`): where two inputs tie for the maximum the max is not differentiable, and a nudge of
# $10^{-5}$ must not change which input wins. The 7x7 input makes the last windows hang over.
# (The relative error is a little larger than for the other layers, about `1e-7`: the checked
# sum adds up outputs as large as the largest input, printed below, whose rounding shows in
# the entries where `dy` is small.)

# %%
pool_input = distinct_values((2, 3, 7, 7), rng)
pool_errors = gradcheck(MaxPool2d(2, 2, ceil_mode=True), pool_input)
largest_pooled = float(MaxPool2d(2, 2, ceil_mode=True)(pool_input).max())
print("MaxPool2d(2, 2, ceil_mode=True):", {k: f"{v:.1e}" for k, v in pool_errors.items()})
print(f"largest pooled output: {largest_pooled:.1f}")

# %% [markdown]
# **Softmax cross-entropy.** At every counted pixel with scores $s_1..s_C$ and label $t$, the
# loss is $-\log p_t$ with $p_c = e^{s_c} / \sum_k e^{s_k}$, averaged over the $M$ counted pixels
# (label 255, "void", is not counted). Since $-\log p_t = -s_t + \log \sum_k e^{s_k}$,
#
# $$\frac{\partial L}{\partial s_c} = \frac{1}{M}\left(p_c - [c = t]\right):$$
#
# the predicted probabilities minus the one-hot label, zero on void pixels. One pixel worked out
# by hand, then `gradcheck` on a batch with some void pixels:

# %%
loss_fn = SoftmaxCrossEntropy()
one_pixel = np.array([2.0, 1.0, -1.0, 0.5, 0.0]).reshape(1, 5, 1, 1)
label = np.array([[[1]]])
p = softmax(one_pixel[0, :, 0, 0], axis=0)
print(
    "p =",
    np.round(p, 4),
    " loss =",
    round(loss_fn(one_pixel, label), 6),
    " -log p[1] =",
    round(float(-np.log(p[1])), 6),
)
print("by hand  p - onehot =", np.round(p - np.eye(5)[1], 4))
print("backward            =", np.round(loss_fn.backward()[0, :, 0, 0], 4))

scores = rng.standard_normal((2, 5, 3, 4))
labels = rng.integers(0, 5, (2, 3, 4))
labels[0, 0, :2] = 255  # void pixels: no loss, no gradient
loss_errors = gradcheck(SoftmaxCrossEntropy(), scores, labels)
print("SoftmaxCrossEntropy:", {k: f"{v:.1e}" for k, v in loss_errors.items()})

# %% [markdown]
# ## Training data: windows and the class at their centre
#
# A training example is a 26x26 window cut from a shapes image; its label is the class of the
# pixel at row and column 13 of the window. We use 64x64 shapes images rather than the
# dataset's default 96x96: object sizes scale with the image side (`minifcn/data/shapes.py`), so
# at 64 pixels a 26-pixel window sees a good part of an object. Background covers most of each
# image, so half of the windows are centred on an object pixel, chosen on purpose. Images are
# mean-subtracted (as the dataset returns them) and divided by 64 so the inputs have roughly
# unit scale.
#
# A fixed, small set of windows lets a network this size memorise them. So every training step
# cuts **fresh** windows from 1,000 training images at random places, and turns each by a random
# multiple of 90 degrees and flips it half of the time (a shape's class does not change). Two
# fixed sets of 2,000 windows, one from the training images and one from 200 validation images
# the classifier never trains on, measure its accuracy.


# %%
def stack_images(dataset):
    return (np.stack([dataset[i][0] for i in range(len(dataset))]) / 64.0).astype(np.float32)


def sample_windows(images, labels, count, rng, augment=False):
    half = WINDOW // 2
    xs, ys = [], []
    for k in range(count):
        i = rng.integers(len(images))
        if k % 2 == 0:  # centred on an object pixel
            rows, cols = np.nonzero(labels[i][half : -half + 1, half : -half + 1])
            j = rng.integers(len(rows))
            r, c = rows[j], cols[j]
        else:  # anywhere
            r, c = rng.integers(0, SIDE - WINDOW + 1, 2)
        window = images[i, :, r : r + WINDOW, c : c + WINDOW]
        if augment:
            window = np.rot90(window, rng.integers(4), axes=(1, 2))
            window = window[:, :, ::-1] if rng.integers(2) else window
        xs.append(window)
        ys.append(labels[i, r + half, c + half])
    return np.ascontiguousarray(np.stack(xs)), np.array(ys, dtype=np.int64)


SIDE = 64  # image side for this notebook (the dataset's default is 96)
train_set = ShapesDataset("train", size=60 if QUICK else 1000, image_size=SIDE)
val_set = ShapesDataset("val", size=20 if QUICK else 200, image_size=SIDE)
train_images, val_images = stack_images(train_set), stack_images(val_set)
n_eval = 300 if QUICK else 2000
x_train_eval, y_train_eval = sample_windows(train_images, train_set.labels, n_eval, rng)
x_val, y_val = sample_windows(val_images, val_set.labels, n_eval, rng)
chance = np.bincount(y_val, minlength=5).max() / len(y_val)
print(
    "validation windows per class:",
    np.bincount(y_val, minlength=5),
    f"-> always answering the most common class scores {chance:.1%}",
)

# %% [markdown]
# Training uses the package's layers and optimiser: the loss `SoftmaxCrossEntropy` expects score
# maps `(N, C, H, W)`, so the classifier's `(N, 5)` scores are viewed as `(N, 5, 1, 1)`. Each step
# is forward, loss, backward (every layer adds into its parameters' `.grad`), Adam update. Every
# few hundred steps we measure the accuracy on both fixed sets.


# %%
def accuracy(x, y):
    return float((classifier(x).argmax(axis=1) == y).mean())


optimizer = Adam(classifier.parameters(), lr=2e-3)
steps, batch = (150, 32) if QUICK else (4000, 64)
losses, curve = [], []
for step in range(1, steps + 1):
    x, y = sample_windows(train_images, train_set.labels, batch, rng, augment=True)
    scores = classifier(x)
    losses.append(loss_fn(scores[:, :, None, None], y[:, None, None]))
    classifier.zero_grad()
    classifier.backward(loss_fn.backward().reshape(batch, -1))
    optimizer.step()
    if step % (50 if QUICK else 500) == 0:
        curve.append((step, accuracy(x_train_eval, y_train_eval), accuracy(x_val, y_val)))

train_accuracy, val_accuracy = curve[-1][1:]
print(
    f"after {steps} steps: training windows {train_accuracy:.1%}, validation windows "
    f"{val_accuracy:.1%} (most common class: {chance:.1%})"
)
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3))
ax_loss.plot(losses, lw=0.5)
ax_loss.set_xlabel("step")
ax_loss.set_ylabel("cross-entropy")
ax_loss.set_title("training loss (fresh windows every step)")
steps_at, train_acc, val_acc = zip(*curve)
ax_acc.plot(steps_at, train_acc, "o-", label="training windows")
ax_acc.plot(steps_at, val_acc, "s-", label="validation windows")
ax_acc.axhline(chance, color="gray", ls=":", label="most common class")
ax_acc.set_xlabel("step")
ax_acc.set_ylabel("accuracy")
ax_acc.set_ylim(0, 1)
ax_acc.legend()
plt.show()

# %% [markdown]
# The two accuracy curves lie close together: the classifier does as well on windows from images
# it never saw as on windows from its own training images, so what it learned carries over, and
# the heatmap below shows what it does on new images rather than what it memorised.

# %% [markdown]
# ## Exercise 2: a fully connected layer as a convolution
#
# The classifier's first `Linear` reads the 5x5 feature map unrolled into a vector. Write
# `fc_as_conv(weight, bias, in_channels, k, order)`: given that layer's weight `(F, k*k*C)`
# (minifcn's `(out, in)` layout) and bias `(F,)`, return the weight `(F, C, k, k)` and bias of
# the `k x k` convolution that computes the same `F` numbers on a `k x k` map and, on a larger
# map, slides. `order` says how the map was unrolled:
#
# * `"chw"`: minifcn's `Flatten`, channel-major: entry `c*k*k + i*k + j` is channel `c`, row
#   `i`, column `j`;
# * `"hwc"`: how VGG16's `fc6` sees pool5 in the widely shared ImageNet weights (converted from
#   Caffe/Keras, `minifcn/models/pretrained.py` reads them): entry `(i*k + j)*C + c`. (That file
#   stores `fc6_W` as `(k*k*C, F)`, i.e. transposed: pass `fc6_W.T`.)
#
# The check slides the fully connected classifier over every `k x k` window of random maps
# (stride 1) and compares that heatmap with your convolution's, for both orders, to 1e-10.
# While it runs your function, the library's `convolutionalize` and VGG16 loader are switched
# off.


# %%
def fc_as_conv(weight, bias, in_channels, k, order):
    """weight (F, k*k*C), bias (F,) -> (conv_weight (F, C, k, k), conv_bias (F,))."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise_2 = grade(check_fc_as_conv, fc_as_conv)

# %% [markdown]
# **Question 1.** Suppose you convert VGG16's `fc6` with a plain reshape to `(F, C, 7, 7)`,
# the `"chw"` rule, although the file stores it in `"hwc"` order. On a 224x224 image (pool5 is
# exactly 7x7, a single window), is the output still right? What goes wrong on a larger image?
#
# *Your answer:*
#
# ## Convolutionalising
#
# `convolutionalize(classifier, window=26)` returns a `Sequential` with the same convolutions
# and pools, no `Flatten`, and
#
# * the first `Linear` (800 -> 64) turned into a **5x5 convolution** with 32 input and 64 output
#   channels: the kernel covers exactly the 5x5 feature map that `Flatten` used to unroll.
#   `Flatten` orders the vector as `c*25 + y*5 + x`, so the weight `(64, 800)` reshaped to
#   `(64, 32, 5, 5)` puts each number where that convolution needs it;
# * the second `Linear` (64 -> 5) turned into a **1x1 convolution**.
#
# On a 26x26 window it computes exactly what the classifier did (a 1x1 output). On a larger
# image the 5x5 kernel slides over the feature map, one step of the feature map being
# `window_stride(classifier)` = 2 x 2 = 4 image pixels: the output cell `(i, j)` is the score of
# the window whose top-left pixel is `(4i, 4j)`.

# %%
from minifcn.models.spatial_map import convolutionalize, window_stride  # noqa: E402

fcn = convolutionalize(classifier, WINDOW)
stride = window_stride(classifier)
print(fcn)
print("stride between windows:", stride)

image_index = 3
x_image = val_images[image_index][None]  # (1, 3, 64, 64)
heatmap_scores = fcn(x_image)  # (1, 5, cells, cells)
cells = heatmap_scores.shape[-1]
print(
    "image",
    x_image.shape,
    "-> score map",
    heatmap_scores.shape,
    f"= ({SIDE} - {WINDOW}) // {stride} + 1 = {(SIDE - WINDOW) // stride + 1} cells per side",
)

# %% [markdown]
# ## The heatmap
#
# The softmax of the score map gives, at each cell, the probability of each class for that
# cell's window. Where do the cells go on the image? Cell `i`'s window covers pixels `4i` to
# `4i + 25`, so its centre is at pixel $4i + 12.5$ (the label it was trained on is that of pixel
# $4i + 13$, just past the centre). We draw each cell as a 4x4 block around that centre; the
# cell below prints where the blocks start and end and how wide the border that no window is
# centred on is. The last panel is the arg-max class per cell: already a segmentation, but a
# coarse one, one label every 4 pixels. The rest of FCN is about making it fine again.

# %%
probs = softmax(heatmap_scores[0], axis=0)  # (5, cells, cells)
centres = stride * np.arange(cells) + (WINDOW - 1) / 2  # 12.5, 16.5, ...
lo, hi = centres[0] - stride / 2, centres[-1] + stride / 2  # edges of the painted area
extent = (lo, hi, hi, lo)  # in imshow's pixel coordinates (pixel p spans p - 0.5 .. p + 0.5)
covered = np.arange(SIDE)[(np.arange(SIDE) > lo) & (np.arange(SIDE) < hi)]
border = (int(covered[0]), int(SIDE - 1 - covered[-1]))
print(f"cell centres: {centres[0]}, {centres[1]}, ..., {centres[-1]}; blocks span {lo} .. {hi}")
print(
    f"pixels {covered[0]}..{covered[-1]} are covered: a border of {border[0]} pixels on the "
    f"top and left and {border[1]} on the bottom and right has no window centred on it"
)
rgb = val_set.raw_image(image_index)

fig, axes = plt.subplots(1, 7, figsize=(17, 3.3))
axes[0].imshow(rgb)
axes[0].add_patch(
    plt.Rectangle((4 * 5 - 0.5, 4 * 5 - 0.5), WINDOW, WINDOW, fill=False, ec="yellow", lw=2)
)
axes[0].set_title("image; window of cell (5, 5)")
axes[1].imshow(colorize(val_set.labels[image_index]))
axes[1].set_title("ground truth")
for k in range(1, 5):
    ax = axes[1 + k]
    ax.imshow(rgb, alpha=0.35)
    ax.imshow(probs[k], extent=extent, cmap="magma", vmin=0, vmax=1, alpha=0.85)
    ax.set_title(f"P({CLASS_NAMES[k]})")
axes[6].imshow(rgb, alpha=0.35)
axes[6].imshow(colorize(probs.argmax(axis=0)), extent=extent, alpha=0.85)
axes[6].set_title("arg max per cell")
for ax in axes:
    ax.set_xlim(-0.5, SIDE - 0.5)
    ax.set_ylim(SIDE - 0.5, -0.5)
    ax.axis("off")
class_legend(fig)
plt.show()

# %% [markdown]
# ## Each cell is the classifier on its window
#
# The claim to check: cell `(i, j)` of the converted network's output equals the original
# classifier's scores for the window `image[:, 4i : 4i+26, 4j : 4j+26]`. We cut out all
# `cells x cells` windows, run them through the classifier one at a time, and compare. We also
# time this sliding-window way against the single pass: the single pass computes each
# convolution once per image position, while separate windows recompute the overlapping parts.

# %%
windows = np.stack(
    [
        x_image[0, :, stride * i : stride * i + WINDOW, stride * j : stride * j + WINDOW]
        for i in range(cells)
        for j in range(cells)
    ]
)
window_scores = np.concatenate([classifier(w[None]) for w in windows])  # one window at a time
t_fcn = best_time(lambda: fcn(x_image))
t_windows = best_time(lambda: [classifier(w[None]) for w in windows])
per_cell = window_scores.reshape(cells, cells, -1).transpose(2, 0, 1)  # (5, cells, cells)
max_diff = float(np.abs(per_cell - heatmap_scores[0]).max())
print(f"{len(windows)} windows: largest difference between classifier and heatmap {max_diff:.2e}")
print(f"time: one pass {1e3 * t_fcn:.1f} ms, window by window {1e3 * t_windows:.1f} ms")

# %% [markdown]
# ## Checked
#
# * `Linear`, `MaxPool2d` (ceil mode) and `SoftmaxCrossEntropy` (with void pixels) agree with
#   numerical gradients;
# * the converted network has no `Linear` or `Flatten` left, and its output has
#   `(64 - 26) / 4 + 1` cells per side; cell `i` is centred on pixel `4i + 12.5`, leaving an
#   11-pixel border on the top and left;
# * every cell equals the classifier on its window (up to float32 rounding);
# * the classifier learned: its loss fell, and (in the full run) its validation accuracy beats
#   the most common class by more than 30 points and is within 5 points of its training accuracy.

# %%
assert max(linear_errors.values()) < 1e-7, linear_errors
assert max(pool_errors.values()) < 1e-6, pool_errors
assert largest_pooled == pool_input.max() == 29.3  # the text's "largest input"
assert max(loss_errors.values()) < 1e-7, loss_errors
assert pool(x5).shape[2:] == (3, 3) and MaxPool2d(2, 2)(x5).shape[2:] == (2, 2)
assert not any(isinstance(m, (Linear, Flatten)) for m in fcn)
side = (SIDE - WINDOW) // 4 + 1
assert stride == 4 and heatmap_scores.shape == (1, 5, side, side)
assert centres[0] == 12.5 and border == (11, 13)
assert np.allclose(per_cell, heatmap_scores[0], rtol=1e-4, atol=1e-4), max_diff
assert np.allclose(fcn(x_val[:4]).reshape(4, -1), classifier(x_val[:4]), atol=1e-4)
assert np.mean(losses[-20:]) < np.mean(losses[:20])  # the classifier learned
if not QUICK:  # it learned enough to mean something, and it did not memorise
    assert val_accuracy > chance + 0.3, (val_accuracy, chance)
    assert abs(train_accuracy - val_accuracy) < 0.05, (train_accuracy, val_accuracy)
print("all checks passed")
