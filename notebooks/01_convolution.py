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
# # 1. Convolution: a loop, then one matrix multiply
#
# Most of the work in a Fully Convolutional Network (FCN) is done by convolutions, so this is
# where the speed and the correctness of the whole network are decided. This notebook
#
# 1. gives the definition, and you write it: **exercises** 1 and 2 are a convolution's forward
#    and backward pass as plain loops over output pixels (easy to read, slow), graded against
#    the definition while the library's own convolutions are switched off;
# 2. rewrites it as **im2col** (copy every input patch into a column) followed by **one matrix
#    multiply**, which is what `minifcn.nn.Conv2d` does on the plain path;
# 3. derives the backward pass from that matrix form;
# 4. checks the backward pass against a **numerical gradient**;
# 5. times the loop and the matrix form side by side.
#
# **Which code runs.** By default the package runs its accelerated path (`minifcn/accel`),
# which computes the same numbers with fewer copies (for stride-1 convolutions a "row-shift"
# form, see `docs/performance.md`); that is the path `python -m minifcn.bench` and training
# time. This notebook teaches the plain path, so its first cell sets `MINIFCN_ACCEL=0`: every
# `Conv2d` below, the timed one included, is im2col and one matrix product.
#
# Set the environment variable `MINIFCN_QUICK=1` to run everything at toy sizes (the tests do).

# %%
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps
os.environ["MINIFCN_ACCEL"] = "0"  # the plain path: Conv2d is im2col + one matrix product

import matplotlib.pyplot as plt
import numpy as np

from minifcn.course.graders import check_conv_backward, check_conv_forward, grade
from minifcn.course.teaching import best_time
from minifcn.data import ShapesDataset

plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)


# %% [markdown]
# ## What a convolution computes
#
# A convolution layer has a weight of shape `(O, C, kh, kw)`: `O` filters, each a little
# `C x kh x kw` block. It slides each filter over the (zero-padded) input `x` of shape
# `(N, C, H, W)` and takes a dot product at every position:
#
# $$y[n, o, r, s] = b[o] + \sum_{c, i, j} W[o, c, i, j]\; x_{pad}[n, c,\; r \cdot stride + i,\;
# s \cdot stride + j]$$
#
# (Deep-learning libraries do not flip the kernel, so strictly this is a cross-correlation.)
# The output side is `floor((H + 2*padding - kh) / stride) + 1`.
#
# That formula is the whole definition: write it first (exercise 1 below), then its backward
# pass (exercise 2).

# %% [markdown]
# ## Exercises: write the definition
#
# Write these two functions from the formula above, with loops over output pixels (a loop over
# kernel offsets works too). Plain NumPy only: the point is to see every index. Run the
# function's cell, then the check cell under it: it compares your function with the
# definition on five shapes (strides 1 to 3, paddings 0 to 2, a non-square kernel) in float64,
# to a relative error of 1e-10, and says PASS or what differs. While it runs your function the
# library's convolutions (`Conv2d`, `im2col`, the naive loops of `minifcn.nn.reference`, the
# accelerated path) are switched off: calling one fails with "write it yourself". A reference
# solution is in `notebooks/solutions/nb01.py`; try first.
#
# **Exercise 1.** `conv_forward(x, weight, bias, stride, padding)`: x `(N, C, H, W)`, weight
# `(O, C, kh, kw)`, bias `(O,)` -> y `(N, O, out_h, out_w)`, zero padding on all four sides, no
# kernel flip.


# %%
def conv_forward(x, weight, bias, stride, padding):
    """x (N, C, H, W), weight (O, C, kh, kw), bias (O,) -> y (N, O, out_h, out_w)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise_1 = grade(check_conv_forward, conv_forward)

# %% [markdown]
# **Exercise 2.** `conv_backward(dy, x, weight, stride, padding)` -> `(dx, dw, db)`, the
# gradients of $L = \sum y \cdot dy$ with respect to x, weight and bias (the rest of this
# notebook derives them in matrix form; here, derive them from the loop). Hint: output pixel
# `(r, s)` was a dot product of one padded patch with each filter, so its gradient `dy[:, :, r,
# s]` flows back into that patch (weighted by the filters) and into the filters (weighted by the
# patch). Accumulate with `+=`: patches overlap. Padding was added before the patches were cut,
# so compute the gradient of the padded input and cut the padding off at the end.


# %%
def conv_backward(dy, x, weight, stride, padding):
    """dy (N, O, out_h, out_w) -> (dx (N, C, H, W), dw (O, C, kh, kw), db (O,))."""
    # YOUR CODE HERE
    raise NotImplementedError


# %%
exercise_2 = grade(check_conv_backward, conv_backward)

# %% [markdown]
# ## The package's loop, and the library from here on
#
# The package keeps a loop like yours as `minifcn.nn.reference.conv2d_naive` (at each output
# pixel it cuts out the patch the filters see and contracts it with all filters at once,
# `np.tensordot` over `c, i, j`); compare it with your exercise 1. From here on the notebook
# uses it as `conv_loop`, and the library's layers.

# %%
from minifcn.nn import Conv2d, col2im, im2col
from minifcn.nn.gradcheck import gradcheck, numerical_gradient, rel_error
from minifcn.nn.reference import conv2d_naive as conv_loop

x = rng.standard_normal((2, 3, 7, 7))
weight = rng.standard_normal((4, 3, 3, 3))
bias = rng.standard_normal(4)
y_loop = conv_loop(x, weight, bias, stride=2, padding=1)
print("output shape", y_loop.shape)

# %% [markdown]
# ### A picture: edge filters on a shapes image
#
# The same loop applied to an image from the package's synthetic shapes dataset, with two
# hand-made 3x3 filters (Sobel filters) that respond to horizontal and vertical intensity
# changes. They are chosen by hand here; a network learns its filters from data instead.

# %%
shapes = ShapesDataset("val", size=4, image_size=64)
rgb = shapes.raw_image(0)
gray = rgb.astype(np.float64).mean(axis=2) / 255.0
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
edge_filters = np.stack([sobel_x, sobel_x.T])[:, None]  # (O=2, C=1, 3, 3)
edges = conv_loop(gray[None, None], edge_filters, np.zeros(2), padding=1)[0]

fig, axes = plt.subplots(1, 4, figsize=(12, 3))
axes[0].imshow(rgb)
axes[0].set_title("image (64 x 64)")
axes[1].imshow(sobel_x, cmap="RdBu_r", vmin=-2, vmax=2)
axes[1].set_title("filter 0 (Sobel x)")
for k, name in enumerate(["x", "y"]):
    axes[2 + k].imshow(edges[k], cmap="RdBu_r")
    axes[2 + k].set_title(f"output channel {k}: d/d{name}")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## im2col: turn the sliding window into a matrix
#
# The loop above runs Python code once per output pixel: `out_h * out_w` small dot products.
# A common way to make convolutions fast on CPUs and GPUs is to **copy** every patch the filters
# will see into one big array first (*im2col*, "image to columns"), so that the whole
# convolution becomes a single matrix product, one call into a BLAS library (cuBLAS on a GPU)
# instead of one Python step per pixel. The timing section below measures what that buys here;
# `python -m minifcn.bench` compares each layer with the machine's matrix-multiply speed.
#
# `minifcn.nn.im2col(x, kh, kw, stride, padding)` returns `col` of shape
# `(N, C, kh, kw, out_h, out_w)`: `col[n, c, i, j, r, s]` is the padded input at row
# `r*stride + i`, column `s*stride + j`. Reshaped to `(N, K, P)` with `K = C*kh*kw` (the length
# of one patch) and `P = out_h*out_w` (the number of patches), each column is one patch. With the
# weight reshaped to `(O, K)`:
#
# $$Y = W_{(O, K)} \; col_{(K, P)} \quad\text{for each image}, \qquad y = Y \text{ reshaped to }
# (O, out_h, out_w).$$
#
# Note that `im2col` itself loops over the `kh*kw` kernel offsets (each one strided slice copy),
# never over output pixels: 9 Python iterations for a 3x3 kernel whatever the image size.
#
# The picture shows `col` for a 1-channel 5x5 image whose pixels hold their own index 0..24, a
# 3x3 kernel and padding 1: column `p` lists the 9 pixels of the patch centred on pixel `p`
# (-1 marks padding).

# %%
tiny = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
marked = np.pad(tiny, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1)  # show padding as -1
col_tiny = im2col(marked, 3, 3, stride=1, padding=0)  # (1, 1, 3, 3, 5, 5)
matrix = col_tiny.reshape(9, 25)

fig, ax = plt.subplots(figsize=(10, 3.2))
ax.imshow(matrix, cmap="viridis")
for (i, j), v in np.ndenumerate(matrix):
    ax.text(
        j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 12 else "black"
    )
ax.set_xlabel("column p = output pixel (row-major)")
ax.set_ylabel("k = kernel offset (i, j)")
ax.set_title("im2col of a 5x5 image, 3x3 kernel, padding 1: one column per patch")
plt.show()


# %% [markdown]
# Now the convolution as one matrix multiply (per image; `@` broadcasts over the batch axis),
# compared with the loop:


# %%
def conv_im2col(x, weight, bias, stride=1, padding=0):
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    col = im2col(x, kh, kw, stride, padding)  # (N, C, kh, kw, out_h, out_w)
    out_h, out_w = col.shape[4:]
    y = weight.reshape(o, -1) @ col.reshape(n, c * kh * kw, out_h * out_w)  # (N, O, P)
    return y.reshape(n, o, out_h, out_w) + bias.reshape(1, o, 1, 1)


y_mm = conv_im2col(x, weight, bias, stride=2, padding=1)
conv = Conv2d(3, 4, 3, stride=2, padding=1).astype(np.float64)
conv.weight.data[...] = weight
conv.bias.data[...] = bias
y_pkg = conv(x)
print("im2col + matmul vs loop:   rel error", rel_error(y_mm, y_loop))
print("minifcn.nn.Conv2d vs loop: rel error", rel_error(y_pkg, y_loop))

# %% [markdown]
# ## Deriving the backward pass
#
# Training needs, for a scalar loss $L$ and the upstream gradient $dY = \partial L / \partial Y$
# (same shape as the output), the gradients with respect to the weight, the bias and the input.
# In matrix form, for one image, $Y = W\,col + b$ is a plain matrix product, so the usual
# matrix-calculus rules apply:
#
# * $\partial L/\partial W = dY\; col^\top$ — summed over the images of the batch (the same
#   weight is used for all of them), shape `(O, K)`;
# * $\partial L/\partial b = \sum_{n, r, s} dY$ — every output pixel of channel `o` added `b[o]`;
# * $\partial L/\partial col = W^\top dY$, shape `(K, P)`: the gradient for every patch entry.
#
# The last step goes from patches back to the image. im2col *copied* each input pixel into
# several columns (once for every patch that contains it), and a copy's backward pass is a sum:
# each pixel receives the sum of the gradients of all its copies. That is **col2im**
# (`minifcn.nn.col2im`), the adjoint of im2col: $dx = \mathrm{col2im}(W^\top dY)$.
#
# Adjoint means $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$ for
# all `x` and `c`; we check that first, then compute all three gradients by hand and compare
# them with `Conv2d.backward`.

# %%
c_rand = rng.standard_normal(im2col(x, 3, 3, 2, 1).shape)
lhs = np.sum(im2col(x, 3, 3, 2, 1) * c_rand)
rhs = np.sum(x * col2im(c_rand, 7, 7, 2, 1))
print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")

dy = rng.standard_normal(y_pkg.shape)  # an upstream gradient dL/dy
n, o = dy.shape[:2]
col = im2col(x, 3, 3, 2, 1).reshape(n, 3 * 9, -1)  # (N, K, P)
dY = dy.reshape(n, o, -1)  # (N, O, P)
dW_hand = (dY @ col.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)
db_hand = dy.sum(axis=(0, 2, 3))
dcol = weight.reshape(o, -1).T @ dY  # (N, K, P)
dx_hand = col2im(dcol.reshape(im2col(x, 3, 3, 2, 1).shape), 7, 7, 2, 1)

conv.zero_grad()
conv(x)
dx_pkg = conv.backward(dy)
backward_errors = {
    "dx": rel_error(dx_hand, dx_pkg),
    "dW": rel_error(dW_hand, conv.weight.grad),
    "db": rel_error(db_hand, conv.bias.grad),
}
print(backward_errors)


# %% [markdown]
# ## Checking the backward pass numerically
#
# A derivation can be wrong, and so can its code. The check that catches both is the
# definition of the derivative: nudge one input entry by $\pm h$ and watch the loss,
#
# $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + h e_i) - L(x - h e_i)}{2h}.$$
#
# A layer's output is not a scalar, so we use the scalar $L = \sum y \cdot dy$ with a fixed
# random $dy$: then $\partial L / \partial y = dy$, exactly the upstream gradient we fed to
# `backward`. The comparison uses the relative error
# $\max |a - b| / \max(10^{-8}, |a| + |b|)$, in float64, where about `1e-8` or smaller means the
# two agree (in float32 the rounding of the differences would swamp the comparison).
#
# First by hand for a few entries with `minifcn.nn.gradcheck.numerical_gradient(f, x, dout=dy)`.
# It takes `f`, a function of no arguments that returns the layer's plain output `y` (it reads
# `x`, which `numerical_gradient` nudges in place), and forms the weighted sum $\sum y \cdot dy$
# itself. Then with `gradcheck`, which does all of this for the input and every parameter.


# %%
def conv_output():
    return conv.forward(x)  # the plain output y; numerical_gradient weights it by dy


num_dx = numerical_gradient(conv_output, x, dout=dy, indices=[0, 10, 50, 100])
for i in [0, 10, 50, 100]:
    print(
        f"x entry {i:3d}: analytic {dx_pkg.reshape(-1)[i]: .8f}   "
        f"numerical {num_dx.reshape(-1)[i]: .8f}"
    )

check_conv = Conv2d(3, 4, 3, stride=2, padding=1, rng=1).astype(np.float64)
grad_errors = gradcheck(check_conv, rng.standard_normal((2, 3, 6, 6)))
print("gradcheck relative errors:", {k: f"{v:.1e}" for k, v in grad_errors.items()})


# %% [markdown]
# ## Speed: the loop against im2col + matrix multiply
#
# The two versions compute the same numbers. We time both on float32 batches of 4 images with
# 16 input and 16 output channels, 3x3 kernels, for growing image sides (each time is the best
# of five runs, `teaching.best_time`, which filters out moments when other programs hold
# the CPU). The loop does `side**2` small `tensordot`s in Python; `Conv2d` does 9 slice
# copies and one large matrix product.

# %%
sides = [8, 16, 32] if QUICK else [8, 16, 32, 64]
t_loop, t_fast = [], []
for side in sides:
    xb = rng.standard_normal((4, 16, side, side), dtype=np.float32)
    layer = Conv2d(16, 16, 3, padding=1, rng=0)
    wb, bb = layer.weight.data, layer.bias.data
    assert np.allclose(conv_loop(xb, wb, bb, padding=1), layer(xb), rtol=1e-4, atol=1e-4)
    t_loop.append(best_time(lambda xb=xb, wb=wb, bb=bb: conv_loop(xb, wb, bb, padding=1)))
    t_fast.append(best_time(lambda xb=xb, layer=layer: layer(xb)))
    print(
        f"side {side:3d}: loop {1e3 * t_loop[-1]:8.2f} ms   im2col+matmul "
        f"{1e3 * t_fast[-1]:7.2f} ms   speed-up x{t_loop[-1] / t_fast[-1]:.0f}"
    )

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(sides, 1e3 * np.array(t_loop), "o-", label="loop over output pixels")
ax.loglog(sides, 1e3 * np.array(t_fast), "s-", label="im2col + one matmul (Conv2d)")
ax.set_xticks(sides, [str(s) for s in sides])
ax.set_xlabel("image side (pixels)")
ax.set_ylabel("forward time (ms)")
ax.set_title("4 x 16 channels, 3x3 kernel, float32")
ax.legend()
plt.show()

# %% [markdown]
# Both grow with the number of pixels, but the loop pays Python's overhead for every output
# pixel, while im2col pays it only 9 times and hands the arithmetic to BLAS in one call. That is
# why the plain `Conv2d` uses im2col for its 3x3 (and 7x7) kernels. (The accelerated path,
# the default outside this notebook, avoids even most of im2col's copies; its timings are
# `python -m minifcn.bench`'s.)
#
# ### A 1x1 convolution needs no im2col
#
# For a 1x1 kernel with stride 1 and no padding (FCN's score layers `score_fr`, `score_pool4`,
# `score_pool3` are such layers), every patch is a single pixel, so the image itself, viewed as
# `(N, C, H*W)`, already *is* the column matrix: the convolution is one matrix product with no
# copy at all. The accelerated path takes that shortcut (`pointwise` in
# `minifcn/accel/shared.py`); the plain `Conv2d` this notebook runs still calls im2col, which
# for a 1x1 kernel only copies the input. The cell shows that the 1x1 layer equals a plain
# product over the channel axis, and that im2col's columns are the input unchanged.

# %%
score_layer = Conv2d(16, 5, 1, rng=0).astype(np.float64)
feats = rng.standard_normal((2, 16, 9, 9))
as_matmul = np.einsum("oc,nchw->nohw", score_layer.weight.data[:, :, 0, 0], feats)
as_matmul += score_layer.bias.data[None, :, None, None]
pointwise_error = rel_error(score_layer(feats), as_matmul)
col_1x1 = im2col(feats, 1, 1, 1, 0).reshape(2, 16, 81)
print("1x1 Conv2d vs one product over channels: rel error", pointwise_error)
print(
    "im2col of a 1x1 kernel is the input itself:", np.array_equal(col_1x1, feats.reshape(2, 16, 81))
)

# %% [markdown]
# ## What this notebook showed, checked
#
# * the loop, im2col + matmul and `Conv2d` give the same output;
# * col2im is the adjoint of im2col, and the hand-derived gradients equal `Conv2d.backward`;
# * the analytic gradients agree with central differences to float64 precision;
# * the im2col version (the plain `Conv2d`, which is what ran here) is faster than the loop at
#   the largest size;
# * a 1x1 convolution is one matrix product over the channels, with nothing for im2col to do.
#
# (The exercises are graded in their own cells; this cell does not depend on them.)

# %%
assert rel_error(y_mm, y_loop) < 1e-10 and rel_error(y_pkg, y_loop) < 1e-10
assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))
assert max(backward_errors.values()) < 1e-10, backward_errors
sampled = ~np.isnan(num_dx)
assert rel_error(num_dx[sampled], dx_pkg[sampled]) < 1e-7
assert max(grad_errors.values()) < 1e-7, grad_errors
assert t_fast[-1] < t_loop[-1], "im2col + matmul should beat the loop"
assert pointwise_error < 1e-12 and np.array_equal(col_1x1, feats.reshape(2, 16, 81))
print("all checks passed")
