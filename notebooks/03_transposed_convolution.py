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
# # 3. Transposed convolution: learnable upsampling
#
# The convolutional part of an FCN shrinks the image 32 times. To label every pixel, the coarse
# score map must be brought back to full size. FCN does that with a **transposed convolution**
# (sometimes called "deconvolution", though it is not the inverse of a convolution), initialised
# to bilinear interpolation and optionally learned.
#
# This notebook shows
#
# 1. that a transposed convolution is the **adjoint** (the transpose of the matrix) of a
#    convolution: $\langle \mathrm{conv}(x), y\rangle = \langle x, \mathrm{convT}(y)\rangle$;
# 2. a transposed convolution small enough to check by hand;
# 3. the bilinear kernel FCN initialises it with, and the checkerboard pattern other kernels
#    leave;
# 4. upsampling a real (generated) image with it;
# 5. that it is a learnable layer: a gradient check, and gradient descent that learns the
#    bilinear filter from examples;
#
# It starts and continues with **exercises**: first you write the transposed convolution as a
# painting loop, then the bilinear kernel, each before the notebook shows the library's. While
# a grader runs your function, the library's own implementation is switched off. Model answers
# to the questions in bold are in `notebooks/solutions/answers.md`.

# %%
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps

import matplotlib.pyplot as plt
import numpy as np

from minifcn.course.graders import check_bilinear_kernel, check_transposed_conv, grade
from minifcn.data import ShapesDataset
from minifcn.nn.gradcheck import gradcheck, rel_error
from minifcn.optim import SGD

plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the transposed convolution as a painting loop
#
# A convolution reads a patch of its input for each output pixel. A transposed convolution
# does the reverse: **each input pixel paints** a copy of the kernel, scaled by its value,
# onto the output, at `stride` times its position; overlapping paint adds up. Write
# `conv_transpose(x, weight, stride, padding)` with x `(N, I, H, W)` and weight `(I, O, k, k)`
# (PyTorch's layout: input channel `i` paints `weight[i, o]` into output channel `o`); it
# returns y `(N, O, (H - 1) * stride - 2 * padding + k, ...)`: paint into a canvas of side
# `(H - 1) * stride + k`, then cut `padding` pixels off each side. The check compares with
# `ConvTranspose2d` for five settings, up to FCN's 16x16 kernel with stride 8, in float64; while
# it runs your function the library's convolutions are switched off. Solution:
# `notebooks/solutions/nb03.py`. The next section shows why this is the transpose of a
# convolution.


# %%
def conv_transpose(x, weight, stride, padding):
    """x (N, I, H, W), weight (I, O, k, k) -> y (N, O, (H-1)*stride - 2*padding + k, ...)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise_1 = grade(check_transposed_conv, conv_transpose)

# %%
from minifcn.nn import Conv2d, ConvTranspose2d  # noqa: E402  (the library's, from here on)
from minifcn.nn.reference import conv_transpose2d_naive  # noqa: E402

# %% [markdown]
# ## A convolution is a matrix; its transpose is the transposed convolution
#
# A convolution is linear in its input, so it *is* a matrix $M$ acting on the flattened image:
# $\mathrm{conv}(x) = M x$. A strided convolution has fewer outputs than inputs (a wide, short
# $M$). Its transpose $M^\top$ goes the other way, from the small map to the large one: that is
# the transposed convolution. We can see the matrix by feeding the convolution one basis image
# (a single 1) at a time: column `k` of $M$ is the output for basis image `k`.
#
# Here: a 1-channel 5x5 input, a 3x3 kernel, stride 2, padding 1, giving a 3x3 output. So $M$
# is 9 x 25. (A 6x6 input would give a 3x3 output too: going back, the size is ambiguous, and
# the transposed convolution's size rule, `(3 - 1) * 2 - 2 * 1 + 3 = 5`, picks the smaller
# one.) We build `ConvTranspose2d` with the same weight (its weight layout is `(in, out, k, k)`,
# the convolution's `(out, in, k, k)` read the other way round) and read off its matrix the same
# way.

# %%
conv = Conv2d(1, 1, 3, stride=2, padding=1, bias=False, rng=0).astype(np.float64)
convT = ConvTranspose2d(1, 1, 3, stride=2, padding=1, init="kaiming").astype(np.float64)
convT.weight.data[...] = conv.weight.data
M = np.stack([conv(e.reshape(1, 1, 5, 5)).ravel() for e in np.eye(25)], axis=1)  # (9, 25)
MT = np.stack([convT(e.reshape(1, 1, 3, 3)).ravel() for e in np.eye(9)], axis=1)  # (25, 9)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [25, 9]})
lim = np.abs(M).max()
axes[0].imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[0].set_title("convolution as a matrix M (9 x 25)")
axes[1].imshow(MT, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].set_title("ConvTranspose2d as a matrix (25 x 9)")
plt.show()
print("ConvTranspose2d's matrix equals M transposed:", np.allclose(MT, M.T))

# %% [markdown]
# Each row of $M$ is one output pixel: the 3x3 kernel laid over its patch. Each column of the
# transposed convolution's matrix is one *input* pixel painting a copy of the kernel into the
# output, at stride 2, where neighbouring copies overlap and add up. The same picture as a loop
# is `minifcn.nn.reference.conv_transpose2d_naive`: "every input pixel paints a weighted kernel".
#
# The matrices above are only for looking at. The defining identity of the adjoint,
# $\langle Mx, y\rangle = \langle x, M^\top y\rangle$, can be checked on realistic sizes without
# ever forming $M$: multi-channel, batched, random `x` and `y`.

# %%
conv = Conv2d(4, 6, 3, stride=2, padding=1, bias=False, rng=1).astype(np.float64)
convT = ConvTranspose2d(6, 4, 3, stride=2, padding=1, init="kaiming").astype(np.float64)
convT.weight.data[...] = conv.weight.data  # (6, 4, 3, 3) read as (in=6, out=4, 3, 3)

x = rng.standard_normal((2, 4, 9, 9))
y = rng.standard_normal((2, 6, 5, 5))
lhs = float(np.sum(conv(x) * y))
rhs = float(np.sum(x * convT(y)))
print(f"<conv(x), y>  = {lhs:.12f}")
print(f"<x, convT(y)> = {rhs:.12f}")
naive_error = rel_error(convT(y), conv_transpose2d_naive(y, convT.weight.data, 2, 1))
print("ConvTranspose2d vs the naive painting loop: rel error", naive_error)

# %% [markdown]
# This identity is also *why* the layer is cheap to write: the forward pass of a transposed
# convolution is the input-gradient (backward) computation of a convolution, and its backward
# pass is a convolution's forward. `minifcn.nn.ConvTranspose2d` reuses `conv.py`'s functions
# with the roles swapped.
#
# ## A 2x2 example to check by hand
#
# Each input pixel paints a copy of the kernel, scaled by its value, with its top-left corner at
# `stride` times its position; where copies overlap they add up. Take the input
# $\begin{bmatrix}1 & 2\\ 3 & 4\end{bmatrix}$.
#
# * With a 2x2 kernel of ones and stride 1, the copies overlap by one pixel: the output is 3x3
#   and its centre receives all four values, 1 + 2 + 3 + 4 = 10.
# * With the kernel $\begin{bmatrix}1 & 2\\ 3 & 4\end{bmatrix}$ and stride 2 the copies sit side
#   by side without overlap: the output is 4x4, and its top-right 2x2 block is 2 times the
#   kernel.
#
# The expected outputs below are typed in from that reasoning, and compared with the layer.


# %%
def transposed(x, kernel, stride):
    layer = ConvTranspose2d(1, 1, kernel.shape[0], stride=stride, init="kaiming")
    layer = layer.astype(np.float64)
    layer.weight.data[0, 0] = kernel
    return layer(x[None, None])[0, 0]


x_hand = np.array([[1.0, 2.0], [3.0, 4.0]])
by_hand_1 = np.array([[1, 3, 2], [4, 10, 6], [3, 7, 4]], float)
by_hand_2 = np.array([[1, 2, 2, 4], [3, 4, 6, 8], [3, 6, 4, 8], [9, 12, 12, 16]], float)
out_1 = transposed(x_hand, np.ones((2, 2)), stride=1)
out_2 = transposed(x_hand, x_hand, stride=2)
print("kernel of ones, stride 1:\n", out_1)
print("kernel [[1, 2], [3, 4]], stride 2:\n", out_2)
print("as expected by hand:", np.array_equal(out_1, by_hand_1), np.array_equal(out_2, by_hand_2))

# %% [markdown]
# ## Exercise 2: the bilinear kernel
#
# FCN initialises its upsampling layers so that they start as bilinear interpolation. Write
# `bilinear(k)`, the `(k, k)` kernel that makes a transposed convolution with stride
# `f = ceil(k / 2)` (the upsampling factor) interpolate linearly between neighbouring input
# pixels. Work it out from what it must do rather than look it up:
#
# * it is separable: the outer product of a 1-D profile with itself;
# * the profile is a "tent": largest at its centre, the middle of the `k` samples, falling
#   linearly to 0 at a distance of one factor `f` (one input pixel) from it;
# * with stride `f`, the tents of neighbouring input pixels must add up to 1 everywhere in the
#   interior (a constant image stays constant).
#
# Do `k = 4` (2x) by hand first, then an odd `k` such as 3. The check compares with the
# library's kernel for k = 1 to 8, 16 and 64 (float64, 1e-10) while the library's kernel and
# the bilinear initialisation are switched off. Solution: `notebooks/solutions/nb03.py`.


# %%
def bilinear(k):
    """The (k, k) bilinear upsampling kernel."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise_2 = grade(check_bilinear_kernel, bilinear)

# %% [markdown]
# ## The bilinear kernel, as the library writes it
#
# For an
# upsampling factor `f` the kernel has side `k = 2f` and is the outer product of a "tent"
# profile: $w[i] = 1 - |i - c| / f$ with centre $c = (k-1)/2$. With stride `f`, each output pixel
# gets contributions from the two nearest input pixels, weighted by how close it is to each:
# linear interpolation, in each direction. For `k = 4` (2x) the profile is
# `[0.25, 0.75, 0.75, 0.25]`.
#
# The right panel draws each kernel's 1-D profile (the square root of the kernel's diagonal,
# since the kernel is the profile times itself) against the offset from the centre divided by
# the factor, over the continuous tent $1 - |t|$ in grey. Every sample lies on the tent. For
# `k = 4` there are only four samples, at $t = \pm 0.25$ and $\pm 0.75$: the tip of the tent at
# $t = 0$ falls between two samples of equal height, so the straight lines joining the samples
# cut it off and that profile looks like a trapezoid. The kernel is still a sampled tent.

# %%
from minifcn.nn import bilinear_kernel  # noqa: E402  (the library's, from here on)

fig, axes = plt.subplots(1, 4, figsize=(14, 3))
for ax, k in zip(axes[:3], [4, 16, 64]):
    ax.imshow(bilinear_kernel(k), cmap="viridis")
    ax.set_title(f"k = {k} (upsampling x{k // 2})")
    ax.axis("off")
t = np.linspace(-1, 1, 201)
axes[3].plot(t, 1 - np.abs(t), color="0.8", lw=4, label="tent 1 - |t|")
tent_error = 0.0
for k in [4, 16, 64]:
    profile = np.sqrt(np.diag(bilinear_kernel(k, np.float64)))  # kernel = outer(profile, profile)
    offsets = (np.arange(k) - (k - 1) / 2) / (k // 2)
    tent_error = max(tent_error, float(np.abs(profile - (1 - np.abs(offsets))).max()))
    axes[3].plot(offsets, profile, ".-", label=f"k = {k}")
axes[3].set_xlabel("offset / factor")
axes[3].set_title("1-D profiles: samples of one tent")
axes[3].legend(fontsize=8)
plt.show()
k4_profile = np.sqrt(np.diag(bilinear_kernel(4, np.float64)))
print("k = 4 profile:", k4_profile)
print("largest distance of any sample from the tent:", tent_error)

# %% [markdown]
# ## The checkerboard artefact
#
# Why a kernel of side `2 * stride`? Look at how many kernel copies reach each output pixel. With
# stride 2, the output pixels fall into four classes by the parity of their row and column, and
# each class is painted by a different subset of the kernel's taps. If those subsets do not sum
# to the same value, a constant input comes out as a regular pattern: the *checkerboard
# artefact* (Odena, Dumoulin and Olah, "Deconvolution and Checkerboard Artifacts", Distill,
# 2016). Below, three 2x upsamplings of a constant 8x8 image of ones:
#
# * kernel 3x3 of ones, stride 2: 3 is not divisible by 2, so some pixels are reached by one
#   copy, some by two, some by four;
# * a random (He-normal) 4x4 kernel, stride 2: every pixel is reached by four taps, but by
#   different ones, with different sums;
# * the bilinear 4x4 kernel: every pixel class sums to 1, so the interior is flat.

# %%
ones_in = np.ones((1, 1, 8, 8))
odd = ConvTranspose2d(1, 1, 3, stride=2, init="kaiming").astype(np.float64)
odd.weight.data[...] = 1.0
random4 = ConvTranspose2d(1, 1, 4, stride=2, padding=1, init="kaiming", rng=0).astype(np.float64)
bilinear4 = ConvTranspose2d(1, 1, 4, stride=2, padding=1).astype(np.float64)
boards = {
    "kernel 3, stride 2 (ones)": odd(ones_in)[0, 0],
    "kernel 4, stride 2, random": random4(ones_in)[0, 0],
    "kernel 4, stride 2, bilinear": bilinear4(ones_in)[0, 0],
}
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
interior_values = {}
for ax, (title, out) in zip(axes, boards.items()):
    im = ax.imshow(out, cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    interior_values[title] = np.unique(np.round(out[2:-2, 2:-2], 6))
plt.show()
for title, values in interior_values.items():
    print(f"{title:>30}: distinct interior values {values}")

# %% [markdown]
# The first two come out as regular patterns; only the bilinear kernel keeps the interior
# constant. The random kernel is how an upsampling layer starts if it is not initialised
# bilinear, so training would first have to undo the pattern. A kernel of side `2 * stride` is
# not enough on its own: the second panel has the right size and still shows it.
#
# ## Upsampling a real image
#
# Take a 64x64 shapes image, shrink it 8 times by averaging 8x8 blocks (an 8x8 image, roughly what
# a coarse layer sees), and bring it back with `ConvTranspose2d(3, 3, kernel_size=16, stride=8)`,
# which is bilinear by default when the input and output channel counts are equal (each colour
# channel is upsampled on its own).
#
# The output has side `(8 - 1) * 8 + 16 = 72`, larger than 64: the kernel overhangs at both ends.
# Where does it line up with the original? Block `i` of the small image is centred on pixel
# `8i + 3.5` of the original. An input pixel `i` of the transposed convolution paints its
# kernel over output pixels `8i ... 8i + 15`, centred at `8i + 7.5`. So output pixel `p` lies at
# original position `p - 4`: we crop 4 pixels from each side. (Notebook 4 computes such offsets
# for the whole FCN.) For comparison, nearest-neighbour upsampling just repeats each pixel 8x8.
#
# The crop of 4 is what the layer's own `padding` does: `ConvTranspose2d(3, 3, 16, stride=8,
# padding=4)` cuts 4 pixels off each side itself and returns the 64x64 window directly (checked
# below). In general a kernel `2f` with stride `f` and padding `f/2` gives exactly `f` times
# the input side, `(n - 1) f - 2 (f/2) + 2f = n f`: that is why the 2x layer further down,
# kernel 4, stride 2 and **padding 1**, "exactly doubles the side". FCN's layers keep padding 0
# and crop once at the end instead, at the offset that notebook 4 derives for the whole
# network.

# %%
shapes = ShapesDataset("val", size=4, image_size=64)
original = shapes.raw_image(1).astype(np.float64)  # (64, 64, 3), 0..255
small = original.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))  # (8, 8, 3) block means
up = ConvTranspose2d(3, 3, 16, stride=8).astype(np.float64)
up_full = up(small.transpose(2, 0, 1)[None])[0]  # (3, 72, 72)
bilinear = up_full[:, 4:68, 4:68].transpose(1, 2, 0)  # crop 4 on each side -> (64, 64, 3)
nearest = small.repeat(8, axis=0).repeat(8, axis=1)
padded_up = ConvTranspose2d(3, 3, 16, stride=8, padding=4).astype(np.float64)
padding_is_the_crop = np.allclose(
    padded_up(small.transpose(2, 0, 1)[None])[0], up_full[:, 4:68, 4:68]
)
print("padding 4 in the layer gives the same 64 x 64 window as the crop:", padding_is_the_crop)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for ax, img, title in zip(
    axes,
    [original, small, nearest, bilinear],
    ["original 64 x 64", "block means 8 x 8", "nearest x8", "ConvTranspose2d x8 (bilinear)"],
):
    ax.imshow(np.clip(img, 0, 255).astype(np.uint8), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# The bilinear result has a **dark frame** about 4 pixels wide. Block centres lie at pixels 3.5,
# 11.5, ..., 59.5; a pixel outside the first or last centre is reached by only one block's
# kernel, whose weights there sum to less than 1, so the colour fades towards 0 (black). The
# weights that a constant image of ones receives along a middle row show it:

# %%
frame_weights = up(np.ones((1, 3, 8, 8)))[0, 0, 4:68, 4:68]
print("weights along row 32, pixels 0..5:  ", np.round(frame_weights[32, :6], 4))
print("weights along row 32, pixels 58..63:", np.round(frame_weights[32, -6:], 4))
print("weight at the corner pixel (0, 0):", round(float(frame_weights[0, 0]), 4))

# %% [markdown]
# Two properties to check. Away from the borders (where one of the two neighbours is missing),
# the result should be exactly linear interpolation between the block centres in each direction,
# which `np.interp` computes independently. And the weights painted onto any interior pixel
# should sum to one, so a constant image stays constant.

# %%
centres = 8 * np.arange(8) + 3.5
pixels = np.arange(64.0)
interp = np.empty_like(bilinear)
for ch in range(3):
    rows = np.stack([np.interp(pixels, centres, r) for r in small[:, :, ch]])  # (8, 64)
    interp[:, :, ch] = np.stack([np.interp(pixels, centres, c) for c in rows.T], axis=1)
inner = slice(4, 60)  # from the first block centre to the last
interp_error = float(np.abs(bilinear - interp)[inner, inner].max())
ones = up(np.ones((1, 3, 8, 8)))[0, :, 4:68, 4:68]
print(f"largest difference to np.interp inside: {interp_error:.2e}")
print(
    "constant image upsampled, interior range:",
    ones[:, inner, inner].min(),
    ones[:, inner, inner].max(),
)

# %% [markdown]
# ## A learnable filter
#
# In FCN the upsampling weights can be trained like any other. First, the backward pass of
# `ConvTranspose2d` (the gradient for its input and for its weight) must be right: the same
# float64 numerical gradient check as for convolutions in notebook 1, here with a random
# (not bilinear) weight so that nothing special hides a mistake.

# %%
layer = ConvTranspose2d(2, 3, 4, stride=2, padding=1, init="kaiming", rng=0).astype(np.float64)
grad_errors = gradcheck(layer, rng.standard_normal((2, 2, 3, 3)))
print({name: f"{err:.1e}" for name, err in grad_errors.items()})

# %% [markdown]
# ### Learning to upsample
#
# Can plain gradient descent discover bilinear interpolation from examples? The *target* is a
# frozen bilinear 2x upsampling layer (`ConvTranspose2d(3, 3, 4, stride=2, padding=1)`, which
# exactly doubles the side); the *student* has the same shape but starts from random (He normal)
# weights, including the weights between different colour channels, which must learn to become
# zero.
#
# The training inputs are white noise. Noise contains every spatial frequency, so every number
# in the kernel affects the output and the examples pin the filter down completely. (Smooth
# images would constrain it only partly: parts of the kernel that act on high frequencies would
# barely change the output, so the loss could fall while those parts stayed wrong.)
#
# The loss is the mean squared error $L = \frac{1}{2}\,\mathrm{mean}((\hat y - t)^2)$, whose
# gradient with respect to the prediction is $(\hat y - t) / \mathrm{size}$; `backward` turns that
# into the weight gradient and `minifcn.optim.SGD` (with momentum) takes the step. This is a
# linear least-squares problem: the loss has a single minimum and no plateau to get stuck on.
# It does not fall at every step, though: momentum 0.9 overshoots, and the printed count of
# steps at which the loss rose says how often.

# %%
inputs = rng.standard_normal((8, 3, 16, 16))
teacher = ConvTranspose2d(3, 3, 4, stride=2, padding=1, freeze=True).astype(np.float64)
targets = teacher(inputs)  # (8, 3, 32, 32)

student = ConvTranspose2d(3, 3, 4, stride=2, padding=1, init="kaiming", rng=0).astype(np.float64)
initial = student.weight.data.copy()
bilinear_target = teacher.weight.data
opt = SGD(student.parameters(), lr=0.5, momentum=0.9)
steps = 60 if QUICK else 200
history = []
for _ in range(steps):
    pred = student(inputs)
    diff = pred - targets
    history.append(0.5 * float(np.mean(diff**2)))
    student.zero_grad()
    student.backward(diff / diff.size)
    opt.step()

learned = student.weight.data
print(f"loss: {history[0]:.3e} at the start, {history[-1]:.3e} after {steps} steps")
rises = [i for i in range(1, steps) if history[i] > history[i - 1]]
print(
    f"steps at which the loss rose: {len(rises)}, the last at step {rises[-1] if rises else None}"
)
print("learned kernel, red -> red:\n", np.round(learned[0, 0], 3))

half = (
    original.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)[None]
)  # (1, 3, 32, 32)
upsampled_by_student = student(half)[0].transpose(1, 2, 0)
fig, axes = plt.subplots(1, 5, figsize=(16, 3.2))
axes[0].semilogy(history)
axes[0].set_xlabel("step")
axes[0].set_title("loss (log scale)")
panels = [
    (bilinear_target[0, 0], "bilinear target, red -> red"),
    (learned[0, 0], "learned, red -> red"),
    (learned[0, 1], "learned, red -> green"),
]
for ax, (w, title) in zip(axes[1:4], panels):
    ax.imshow(w, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(title)
    ax.axis("off")
axes[4].imshow(np.clip(upsampled_by_student, 0, 255).astype(np.uint8))
axes[4].set_title("learned filter: 32x32 -> 64x64")
axes[4].axis("off")
plt.show()

# %% [markdown]
# Overall the loss falls by orders of magnitude, with rises in the first steps while momentum
# overshoots (counted above), and the learned kernel approaches the bilinear one, while the
# cross-channel kernels shrink toward zero.
#
# What FCN does with this: in the paper, the intermediate 2x upsamplings (`upscore2`,
# `upscore_pool4`) are initialised to bilinear and then learned, while the last upsampling to
# full resolution is fixed to bilinear. The reference implementation goes further and fixes all
# of them: its README's FAQ ("Is learning the interpolation necessary?") reports no significant
# difference in accuracy between learned and fixed bilinear kernels in the authors' follow-up
# experiments, and a slight speed-up from fixing them. `minifcn` learns them by default;
# `python -m minifcn.train --freeze-upsampling` fixes them all, as the reference code does.

# %% [markdown]
# ## Checked

# %%
assert np.allclose(MT, M.T)
assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs)), (lhs, rhs)
assert naive_error < 1e-10
assert np.array_equal(out_1, by_hand_1) and np.array_equal(out_2, by_hand_2)
assert np.allclose(k4_profile, [0.25, 0.75, 0.75, 0.25]) and tent_error < 1e-6
assert len(interior_values["kernel 3, stride 2 (ones)"]) > 1
assert len(interior_values["kernel 4, stride 2, random"]) > 1
assert np.allclose(interior_values["kernel 4, stride 2, bilinear"], 1.0)
assert frame_weights[32, 0] < 0.6 and np.isclose(frame_weights[32, 32], 1.0)
assert up_full.shape == (3, 72, 72) and padding_is_the_crop
assert interp_error < 1e-9
assert np.allclose(ones[:, inner, inner], 1.0)
assert max(grad_errors.values()) < 1e-6, grad_errors
assert history[-1] < 1e-2 * history[0], (history[0], history[-1])
assert np.abs(learned - bilinear_target).max() < 0.1 * np.abs(initial - bilinear_target).max()
print("all checks passed")
