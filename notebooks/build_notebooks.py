# ruff: noqa: E501  (the cell texts below are laid out by ruff in the notebooks)
"""Build (and optionally run) the teaching notebooks from the cell texts below.

    python notebooks/build_notebooks.py              # write the six .ipynb files, no outputs
    python notebooks/build_notebooks.py --execute    # ... then run each in full mode, save outputs

Edit the cells here rather than in the .ipynb files (building lays the code out with ``ruff
format``); check with ``ruff check notebooks``. Executing in full mode (MINIFCN_QUICK unset)
trains small models for a few minutes. On a small machine shared with other jobs, run it with
``OPENBLAS_NUM_THREADS=1``: competing OpenBLAS threads slow NumPy down several times there.
``tests/test_notebooks.py`` runs every notebook in quick mode.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os

QUICK = os.environ.get("MINIFCN_QUICK") == "1"  # the tests set this: smaller sizes, fewer steps
"""


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


NOTEBOOKS: dict[str, list] = {}

# ------------------------------------------------------------------------------ 01
NOTEBOOKS["01_convolution"] = [
    md(r"""
    # 1. Convolution: a loop, then one matrix multiply

    Every layer of a Fully Convolutional Network (FCN) except the upsampling is a convolution, so
    this is where the speed and the correctness of the whole network are decided. This notebook

    1. writes a convolution as a plain loop over output pixels (easy to read, slow);
    2. rewrites it as **im2col** (copy every input patch into a column) followed by **one matrix
       multiply**, which is what `minifcn.nn.Conv2d` does;
    3. derives the backward pass from that matrix form;
    4. checks the backward pass against a **numerical gradient**;
    5. times the two versions side by side.

    Set the environment variable `MINIFCN_QUICK=1` to run everything at toy sizes (the tests do).
    """),
    code(
        SETUP
        + """
import time

import matplotlib.pyplot as plt
import numpy as np

from minifcn.data import ShapesDataset
from minifcn.gradcheck import gradcheck, numerical_gradient, rel_error
from minifcn.nn import Conv2d, col2im, im2col
from minifcn.nn.reference import conv2d_naive

plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)
"""
    ),
    md(r"""
    ## What a convolution computes

    A convolution layer has a weight of shape `(O, C, kh, kw)`: `O` filters, each a little
    `C x kh x kw` block. It slides each filter over the (zero-padded) input `x` of shape
    `(N, C, H, W)` and takes a dot product at every position:

    $$y[n, o, r, s] = b[o] + \sum_{c, i, j} W[o, c, i, j]\; x_{pad}[n, c,\; r \cdot stride + i,\;
    s \cdot stride + j]$$

    (Deep-learning libraries do not flip the kernel, so strictly this is a cross-correlation.)
    The output side is `floor((H + 2*padding - kh) / stride) + 1`.

    Below is that formula as a loop over output pixels. At each pixel we cut out the patch the
    filters see and contract it with all filters at once (`np.tensordot` over `c, i, j`). We write
    it here on purpose, to read and to compare; the package keeps the same loop in
    `minifcn.nn.reference.conv2d_naive`.
    """),
    code("""
def conv_loop(x, weight, bias, stride=1, padding=0):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    y = np.empty((n, o, out_h, out_w), dtype=x.dtype)
    for r in range(out_h):
        for s in range(out_w):
            patch = xpad[:, :, r * stride : r * stride + kh, s * stride : s * stride + kw]
            y[:, :, r, s] = np.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3])) + bias
    return y


x = rng.standard_normal((2, 3, 7, 7))
weight = rng.standard_normal((4, 3, 3, 3))
bias = rng.standard_normal(4)
y_loop = conv_loop(x, weight, bias, stride=2, padding=1)
print("output shape", y_loop.shape)
print("max difference to the package's loop version:",
      np.abs(y_loop - conv2d_naive(x, weight, bias, stride=2, padding=1)).max())
"""),
    md(r"""
    ### A picture: edge filters on a shapes image

    The same loop applied to an image from the package's synthetic shapes dataset, with two
    hand-made 3x3 filters (Sobel filters) that respond to horizontal and vertical intensity
    changes. A trained network learns filters like these in its first layer.
    """),
    code("""
shapes = ShapesDataset("val", size=4)
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
"""),
    md(r"""
    ## im2col: turn the sliding window into a matrix

    The loop above runs Python code once per output pixel: `out_h * out_w` small dot products.
    The trick that makes convolutions fast on CPUs and GPUs is to **copy** every patch the filters
    will see into one big array first (*im2col*, "image to columns"), so that the whole
    convolution becomes a single matrix product, which BLAS (or cuBLAS on a GPU) runs at close to
    the machine's peak speed.

    `minifcn.nn.im2col(x, kh, kw, stride, padding)` returns `col` of shape
    `(N, C, kh, kw, out_h, out_w)`: `col[n, c, i, j, r, s]` is the padded input at row
    `r*stride + i`, column `s*stride + j`. Reshaped to `(N, K, P)` with `K = C*kh*kw` (the length
    of one patch) and `P = out_h*out_w` (the number of patches), each column is one patch. With the
    weight reshaped to `(O, K)`:

    $$Y = W_{(O, K)} \; col_{(K, P)} \quad\text{for each image}, \qquad y = Y \text{ reshaped to }
    (O, out_h, out_w).$$

    Note that `im2col` itself loops over the `kh*kw` kernel offsets (each one strided slice copy),
    never over output pixels: 9 Python iterations for a 3x3 kernel whatever the image size.

    The picture shows `col` for a 1-channel 5x5 image whose pixels hold their own index 0..24, a
    3x3 kernel and padding 1: column `p` lists the 9 pixels of the patch centred on pixel `p`
    (-1 marks padding).
    """),
    code("""
tiny = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
marked = np.pad(tiny, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1)  # show padding as -1
col_tiny = im2col(marked, 3, 3, stride=1, padding=0)  # (1, 1, 3, 3, 5, 5)
matrix = col_tiny.reshape(9, 25)

fig, ax = plt.subplots(figsize=(10, 3.2))
ax.imshow(matrix, cmap="viridis")
for (i, j), v in np.ndenumerate(matrix):
    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
            color="white" if v < 12 else "black")
ax.set_xlabel("column p = output pixel (row-major)")
ax.set_ylabel("k = kernel offset (i, j)")
ax.set_title("im2col of a 5x5 image, 3x3 kernel, padding 1: one column per patch")
plt.show()
"""),
    md(r"""
    Now the convolution as one matrix multiply (per image; `@` broadcasts over the batch axis),
    compared with the loop:
    """),
    code("""
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
"""),
    md(r"""
    ## Deriving the backward pass

    Training needs, for a scalar loss $L$ and the upstream gradient $dY = \partial L / \partial Y$
    (same shape as the output), the gradients with respect to the weight, the bias and the input.
    In matrix form, for one image, $Y = W\,col + b$ is a plain matrix product, so the usual
    matrix-calculus rules apply:

    * $\partial L/\partial W = dY\; col^\top$ — summed over the images of the batch (the same
      weight is used for all of them), shape `(O, K)`;
    * $\partial L/\partial b = \sum_{n, r, s} dY$ — every output pixel of channel `o` added `b[o]`;
    * $\partial L/\partial col = W^\top dY$, shape `(K, P)`: the gradient for every patch entry.

    The last step goes from patches back to the image. im2col *copied* each input pixel into
    several columns (once for every patch that contains it), and a copy's backward pass is a sum:
    each pixel receives the sum of the gradients of all its copies. That is **col2im**
    (`minifcn.nn.col2im`), the adjoint of im2col: $dx = \mathrm{col2im}(W^\top dY)$.

    Adjoint means $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$ for
    all `x` and `c`; we check that first, then compute all three gradients by hand and compare
    them with `Conv2d.backward`.
    """),
    code("""
c_rand = rng.standard_normal(im2col(x, 3, 3, 2, 1).shape)
lhs = np.sum(im2col(x, 3, 3, 2, 1) * c_rand)
rhs = np.sum(x * col2im(c_rand, 7, 7, 2, 1))
print(f"<im2col(x), c> = {lhs:.10f}\\n<x, col2im(c)> = {rhs:.10f}")

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
"""),
    md(r"""
    ## Checking the backward pass numerically

    A derivation can be wrong, and so can its code. The check that catches both is the
    definition of the derivative: nudge one input entry by $\pm h$ and watch the loss,

    $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + h e_i) - L(x - h e_i)}{2h}.$$

    A layer's output is not a scalar, so we use the scalar $L = \sum y \cdot dy$ with a fixed
    random $dy$: then $\partial L / \partial y = dy$, exactly the upstream gradient we fed to
    `backward`. The comparison uses the relative error
    $\max |a - b| / \max(10^{-8}, |a| + |b|)$, in float64, where about `1e-8` or smaller means the
    two agree (in float32 the rounding of the differences would swamp the comparison).

    First by hand for a few entries with `minifcn.gradcheck.numerical_gradient`, then with
    `gradcheck`, which does it for the input and every parameter.
    """),
    code("""
def weighted_output():
    return conv.forward(x)


num_dx = numerical_gradient(weighted_output, x, dout=dy, indices=[0, 10, 50, 100])
for i in [0, 10, 50, 100]:
    print(f"x entry {i:3d}: analytic {dx_pkg.reshape(-1)[i]: .8f}   "
          f"numerical {num_dx.reshape(-1)[i]: .8f}")

check_conv = Conv2d(3, 4, 3, stride=2, padding=1, rng=1).astype(np.float64)
grad_errors = gradcheck(check_conv, rng.standard_normal((2, 3, 6, 6)))
print("gradcheck relative errors:", {k: f"{v:.1e}" for k, v in grad_errors.items()})
"""),
    md(r"""
    ## Speed: the loop against im2col + matrix multiply

    The two versions compute the same numbers. We time both on float32 batches of 4 images with
    16 input and 16 output channels, 3x3 kernels, for growing image sides (each time is the best
    of five runs, which filters out moments when other programs hold the CPU). The loop does `side**2` small `tensordot`s in Python; `Conv2d` does 9 slice
    copies and one large matrix product.
    """),
    code("""
def best_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


sides = [8, 16, 32] if QUICK else [8, 16, 32, 64]
t_loop, t_fast = [], []
for side in sides:
    xb = rng.standard_normal((4, 16, side, side), dtype=np.float32)
    layer = Conv2d(16, 16, 3, padding=1, rng=0)
    wb, bb = layer.weight.data, layer.bias.data
    assert np.allclose(conv_loop(xb, wb, bb, padding=1), layer(xb), rtol=1e-4, atol=1e-4)
    t_loop.append(best_time(lambda xb=xb, wb=wb, bb=bb: conv_loop(xb, wb, bb, padding=1)))
    t_fast.append(best_time(lambda xb=xb, layer=layer: layer(xb)))
    print(f"side {side:3d}: loop {1e3 * t_loop[-1]:8.2f} ms   im2col+matmul "
          f"{1e3 * t_fast[-1]:7.2f} ms   speed-up x{t_loop[-1] / t_fast[-1]:.0f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(sides, 1e3 * np.array(t_loop), "o-", label="loop over output pixels")
ax.loglog(sides, 1e3 * np.array(t_fast), "s-", label="im2col + one matmul (Conv2d)")
ax.set_xticks(sides, [str(s) for s in sides])
ax.set_xlabel("image side (pixels)")
ax.set_ylabel("forward time (ms)")
ax.set_title("4 x 16 channels, 3x3 kernel, float32")
ax.legend()
plt.show()
"""),
    md(r"""
    Both grow with the number of pixels, but the loop pays Python's overhead for every output
    pixel, while im2col pays it only 9 times and hands the arithmetic to BLAS in one call. This is
    why every convolution in `minifcn` (and the transposed convolution, next notebooks) goes through
    im2col.

    ## What this notebook showed, checked

    * the loop, im2col + matmul and `Conv2d` give the same output;
    * col2im is the adjoint of im2col, and the hand-derived gradients equal `Conv2d.backward`;
    * the analytic gradients agree with central differences to float64 precision;
    * the im2col version is faster than the loop at the largest size.
    """),
    code("""
assert rel_error(y_mm, y_loop) < 1e-10 and rel_error(y_pkg, y_loop) < 1e-10
assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))
assert max(backward_errors.values()) < 1e-10, backward_errors
sampled = ~np.isnan(num_dx)
assert rel_error(num_dx[sampled], dx_pkg[sampled]) < 1e-7
assert max(grad_errors.values()) < 1e-7, grad_errors
assert t_fast[-1] < t_loop[-1], "im2col + matmul should beat the loop"
print("all checks passed")
"""),
]

# ------------------------------------------------------------------------------ 02
NOTEBOOKS["02_spatial_map"] = [
    md(r"""
    # 2. From a classifier to a spatial map

    The first idea of the FCN paper: a classification network's **fully connected layers are
    convolutions** whose kernel covers their whole input. Rewrite them that way and the network
    accepts images of any size; on an image larger than the one it was trained on it returns a
    grid of predictions, a *heatmap*, one cell per window, computed in one pass that shares all
    the work between overlapping windows.

    In this notebook we

    1. train a small window classifier (convolutions, then `Flatten` and two `Linear` layers) to
       tell which shape lies at the centre of a 26x26 window of a shapes image;
    2. convert it with `minifcn.models.spatial_map.convolutionalize`;
    3. run the converted network on a whole 64x64 image and plot the heatmap;
    4. check that every heatmap cell equals the original classifier applied to its window.
    """),
    code(
        SETUP
        + """
import time

import matplotlib.pyplot as plt
import numpy as np

from minifcn.data import CLASS_NAMES, ShapesDataset, colorize
from minifcn.models.spatial_map import convolutionalize, window_stride
from minifcn.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, SoftmaxCrossEntropy
from minifcn.optim import Adam

plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)
"""
    ),
    md(r"""
    ## The classifier

    Two 3x3 convolutions (no padding), each followed by ReLU and a 2x2 max pool, turn a 26x26
    window into a 32-channel 5x5 feature map; `Flatten` makes that a vector of 800 numbers, and two
    fully connected layers map it to 5 class scores (background, disk, rectangle, triangle,
    cross).

    Why no padding? A padded convolution sees zeros at the border of the window. Once the network
    slides over a big image, the same position sees real neighbouring pixels instead, and the two
    would differ. Without padding, what the network computes for a window depends only on the
    window's own pixels.
    """),
    code("""
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
"""),
    md(r"""
    ## Training data: windows and the class at their centre

    We cut random 26x26 windows out of shapes images; a window's label is the class of its centre
    pixel. Background covers most of each image, so half of the windows are centred on an object
    pixel, chosen on purpose. Images are mean-subtracted (as the dataset returns them) and divided
    by 64 so the inputs have roughly unit scale.
    """),
    code("""
def sample_windows(dataset, count, rng):
    images = np.stack([dataset[i][0] for i in range(len(dataset))]) / 64.0
    labels = dataset.labels
    half = WINDOW // 2
    xs, ys = [], []
    for k in range(count):
        i = rng.integers(len(dataset))
        if k % 2 == 0:  # centred on an object pixel
            rows, cols = np.nonzero(labels[i][half : -half + 1, half : -half + 1])
            j = rng.integers(len(rows))
            r, c = rows[j], cols[j]
        else:  # anywhere
            r, c = rng.integers(0, 64 - WINDOW + 1, 2)
        xs.append(images[i, :, r : r + WINDOW, c : c + WINDOW])
        ys.append(labels[i, r + half, c + half])
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


train_set = ShapesDataset("train", size=60 if QUICK else 300)
val_set = ShapesDataset("val", size=8 if QUICK else 40)
x_train, y_train = sample_windows(train_set, 3000 if QUICK else 12000, rng)
x_val, y_val = sample_windows(val_set, 400 if QUICK else 2000, rng)
print("windows:", x_train.shape, "labels per class:", np.bincount(y_train, minlength=5))
"""),
    md(r"""
    Training uses the package's layers and optimiser: the loss `SoftmaxCrossEntropy` expects score
    maps `(N, C, H, W)`, so the classifier's `(N, 5)` scores are viewed as `(N, 5, 1, 1)`. Each step
    is forward, loss, backward (every layer adds into its parameters' `.grad`), Adam update.
    """),
    code("""
loss_fn = SoftmaxCrossEntropy()
optimizer = Adam(classifier.parameters(), lr=2e-3)
steps, batch = (200, 64) if QUICK else (1500, 64)
losses = []
for _ in range(steps):
    idx = rng.integers(0, len(x_train), batch)
    scores = classifier(x_train[idx])
    losses.append(loss_fn(scores[:, :, None, None], y_train[idx][:, None, None]))
    classifier.zero_grad()
    classifier.backward(loss_fn.backward().reshape(batch, -1))
    optimizer.step()

val_accuracy = float((classifier(x_val).argmax(axis=1) == y_val).mean())
print(f"final training loss {np.mean(losses[-20:]):.3f}, validation window accuracy "
      f"{val_accuracy:.1%} (chance: {np.bincount(y_val).max() / len(y_val):.1%})")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(losses, lw=0.8)
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_title("training the window classifier")
plt.show()
"""),
    md(r"""
    ## Convolutionalising

    `convolutionalize(classifier, window=26)` returns a `Sequential` with the same convolutions
    and pools, no `Flatten`, and

    * the first `Linear` (800 -> 64) turned into a **5x5 convolution** with 32 input and 64 output
      channels: the kernel covers exactly the 5x5 feature map that `Flatten` used to unroll.
      `Flatten` orders the vector as `c*25 + y*5 + x`, so the weight `(64, 800)` reshaped to
      `(64, 32, 5, 5)` puts each number where that convolution needs it;
    * the second `Linear` (64 -> 5) turned into a **1x1 convolution**.

    On a 26x26 window it computes exactly what the classifier did (a 1x1 output). On a larger
    image the 5x5 kernel slides over the feature map, one step of the feature map being
    `window_stride(classifier)` = 2 x 2 = 4 image pixels: the output cell `(i, j)` is the score of
    the window whose top-left pixel is `(4i, 4j)`.
    """),
    code("""
fcn = convolutionalize(classifier, WINDOW)
stride = window_stride(classifier)
print(fcn)
print("stride between windows:", stride)

image_index = 3
x_image = (val_set[image_index][0] / 64.0)[None].astype(np.float32)  # (1, 3, 64, 64)
heatmap_scores = fcn(x_image)  # (1, 5, cells, cells)
cells = heatmap_scores.shape[-1]
print("image", x_image.shape, "-> score map", heatmap_scores.shape,
      f"= (64 - {WINDOW}) // {stride} + 1 = {(64 - WINDOW) // stride + 1} cells per side")
"""),
    md(r"""
    ## The heatmap

    The softmax of the score map gives, at each cell, the probability of each class for the window
    centred there. Cell `(i, j)` is centred on image pixel `4i + 9, 4j + 9`, so we draw the maps
    over the image with that placement (the border 7 pixels wide has no window centred on it). The
    last panel is the arg-max class per cell: already a segmentation, but a coarse one, one label
    every 4 pixels. The rest of FCN is about making it fine again.
    """),
    code("""
def softmax(scores, axis):
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


probs = softmax(heatmap_scores[0], axis=0)  # (5, cells, cells)
lo = WINDOW // 2 - stride / 2  # cell (0, 0) is centred on pixel 9 and 4 pixels wide
extent = (lo - 0.5, lo - 0.5 + stride * cells, lo - 0.5 + stride * cells, lo - 0.5)
rgb = val_set.raw_image(image_index)

fig, axes = plt.subplots(1, 7, figsize=(17, 3))
axes[0].imshow(rgb)
axes[0].add_patch(plt.Rectangle((4 * 5 - 0.5, 4 * 5 - 0.5), WINDOW, WINDOW, fill=False,
                                ec="yellow", lw=2))
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
    ax.set_xlim(-0.5, 63.5)
    ax.set_ylim(63.5, -0.5)
    ax.axis("off")
plt.show()
"""),
    md(r"""
    ## Each cell is the classifier on its window

    The claim to check: cell `(i, j)` of the converted network's output equals the original
    classifier's scores for the window `image[:, 4i : 4i+26, 4j : 4j+26]`. We cut out all
    `cells x cells` windows, run them through the classifier as one batch, and compare. We also
    time this sliding-window way against the single pass: the single pass computes each
    convolution once per image position, while separate windows recompute the overlapping parts.
    """),
    code("""
windows = np.stack([
    x_image[0, :, stride * i : stride * i + WINDOW, stride * j : stride * j + WINDOW]
    for i in range(cells)
    for j in range(cells)
])
window_scores = np.concatenate([classifier(w[None]) for w in windows])  # one window at a time


def best_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


t_fcn = best_time(lambda: fcn(x_image))
t_windows = best_time(lambda: [classifier(w[None]) for w in windows])
per_cell = window_scores.reshape(cells, cells, -1).transpose(2, 0, 1)  # (5, cells, cells)
max_diff = float(np.abs(per_cell - heatmap_scores[0]).max())
print(f"{len(windows)} windows: largest difference between classifier and heatmap {max_diff:.2e}")
print(f"time: one pass {1e3 * t_fcn:.1f} ms, window by window {1e3 * t_windows:.1f} ms")
"""),
    md(r"""
    ## Checked

    * the converted network has no `Linear` or `Flatten` left, and its output has
      `(64 - 26) / 4 + 1` cells per side;
    * every cell equals the classifier on its window (up to float32 rounding);
    * the classifier learned: its loss fell, and (in the full run) it beats always answering the
      most common class by a wide margin, so the heatmap means something.
    """),
    code("""
assert not any(isinstance(m, (Linear, Flatten)) for m in fcn)
assert stride == 4 and heatmap_scores.shape == (1, 5, (64 - WINDOW) // 4 + 1, (64 - WINDOW) // 4 + 1)
assert np.allclose(per_cell, heatmap_scores[0], rtol=1e-4, atol=1e-4), max_diff
assert np.allclose(fcn(x_train[:4]).reshape(4, -1), classifier(x_train[:4]), atol=1e-4)
assert np.mean(losses[-20:]) < np.mean(losses[:20])  # the classifier learned
if not QUICK:  # and it learned enough to beat always answering the most common class
    assert val_accuracy > np.bincount(y_val).max() / len(y_val) + 0.1
print("all checks passed")
"""),
]

# ------------------------------------------------------------------------------ 03
NOTEBOOKS["03_transposed_convolution"] = [
    md(r"""
    # 3. Transposed convolution: learnable upsampling

    The convolutional part of an FCN shrinks the image 32 times. To label every pixel, the coarse
    score map must be brought back to full size. FCN does that with a **transposed convolution**
    (sometimes called "deconvolution", though it is not the inverse of a convolution), initialised
    to bilinear interpolation and optionally learned.

    This notebook shows

    1. that a transposed convolution is the **adjoint** (the transpose of the matrix) of a
       convolution: $\langle \mathrm{conv}(x), y\rangle = \langle x, \mathrm{convT}(y)\rangle$;
    2. the bilinear kernel FCN initialises it with;
    3. upsampling a real (generated) image with it;
    4. that it is a learnable layer: a gradient check, and gradient descent that learns the
       bilinear filter from examples.
    """),
    code(
        SETUP
        + """
import matplotlib.pyplot as plt
import numpy as np

from minifcn.data import ShapesDataset
from minifcn.gradcheck import gradcheck, rel_error
from minifcn.nn import Conv2d, ConvTranspose2d, bilinear_kernel
from minifcn.nn.reference import conv_transpose2d_naive
from minifcn.optim import SGD

plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)
"""
    ),
    md(r"""
    ## A convolution is a matrix; its transpose is the transposed convolution

    A convolution is linear in its input, so it *is* a matrix $M$ acting on the flattened image:
    $\mathrm{conv}(x) = M x$. A strided convolution has fewer outputs than inputs (a wide, short
    $M$). Its transpose $M^\top$ goes the other way, from the small map to the large one: that is
    the transposed convolution. We can see the matrix by feeding the convolution one basis image
    (a single 1) at a time: column `k` of $M$ is the output for basis image `k`.

    Here: a 1-channel 5x5 input, a 3x3 kernel, stride 2, padding 1, giving a 3x3 output. So $M$
    is 9 x 25. (A 6x6 input would give a 3x3 output too: going back, the size is ambiguous, and
    the transposed convolution's size rule, `(3 - 1) * 2 - 2 * 1 + 3 = 5`, picks the smaller one.) We build `ConvTranspose2d` with the same weight (its weight layout is
    `(in, out, k, k)`, the convolution's `(out, in, k, k)` read the other way round) and read off
    its matrix the same way.
    """),
    code("""
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
"""),
    md(r"""
    Each row of $M$ is one output pixel: the 3x3 kernel laid over its patch. Each column of the
    transposed convolution's matrix is one *input* pixel painting a copy of the kernel into the
    output, at stride 2, where neighbouring copies overlap and add up. The same picture as a loop
    is `minifcn.nn.reference.conv_transpose2d_naive`: "every input pixel paints a weighted kernel".

    The matrices above are only for looking at. The defining identity of the adjoint,
    $\langle Mx, y\rangle = \langle x, M^\top y\rangle$, can be checked on realistic sizes without
    ever forming $M$: multi-channel, batched, random `x` and `y`.
    """),
    code("""
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
"""),
    md(r"""
    This identity is also *why* the layer is cheap to write: the forward pass of a transposed
    convolution is the input-gradient (backward) computation of a convolution, and its backward
    pass is a convolution's forward. `minifcn.nn.ConvTranspose2d` reuses `conv.py`'s functions
    with the roles swapped.

    ## The bilinear kernel

    FCN initialises its upsampling layers so that they start as bilinear interpolation. For an
    upsampling factor `f` the kernel has side `k = 2f` and is the outer product of a "tent"
    profile: $w[i] = 1 - |i - c| / f$ with centre $c = (k-1)/2$. With stride `f`, each output pixel
    gets contributions from the two nearest input pixels, weighted by how close it is to each:
    linear interpolation, in each direction. For `k = 4` (2x) the profile is
    `[0.25, 0.75, 0.75, 0.25]`.
    """),
    code("""
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
for ax, k in zip(axes[:3], [4, 16, 64]):
    ax.imshow(bilinear_kernel(k), cmap="viridis")
    ax.set_title(f"k = {k} (upsampling x{k // 2})")
    ax.axis("off")
for k in [4, 16, 64]:
    profile = bilinear_kernel(k)[k // 2]  # a middle row, scaled by the row's own peak
    axes[3].plot((np.arange(k) - (k - 1) / 2) / (k // 2), profile / profile.max(), ".-",
                 label=f"k = {k}")
axes[3].set_xlabel("offset / factor")
axes[3].set_title("1-D profiles: the same tent")
axes[3].legend()
plt.show()
k4 = bilinear_kernel(4)
print("k = 4 profile:", k4[0] / k4[0, 0] * 0.25)
"""),
    md(r"""
    ## Upsampling a real image

    Take a 64x64 shapes image, shrink it 8 times by averaging 8x8 blocks (an 8x8 image, roughly what
    a coarse layer sees), and bring it back with `ConvTranspose2d(3, 3, kernel_size=16, stride=8)`,
    which is bilinear by default when the input and output channel counts are equal (each colour
    channel is upsampled on its own).

    The output has side `(8 - 1) * 8 + 16 = 72`, larger than 64: the kernel overhangs at both ends.
    Where does it line up with the original? Block `i` of the small image is centred on pixel
    `8i + 3.5` of the original. An input pixel `i` of the transposed convolution paints its
    kernel over output pixels `8i ... 8i + 15`, centred at `8i + 7.5`. So output pixel `p` lies at
    original position `p - 4`: we crop 4 pixels from each side. (Notebook 4 computes such offsets
    for the whole FCN.) For comparison, nearest-neighbour upsampling just repeats each pixel 8x8.
    """),
    code("""
shapes = ShapesDataset("val", size=4)
original = shapes.raw_image(1).astype(np.float64)  # (64, 64, 3), 0..255
small = original.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))  # (8, 8, 3) block means
up = ConvTranspose2d(3, 3, 16, stride=8).astype(np.float64)
up_full = up(small.transpose(2, 0, 1)[None])[0]  # (3, 72, 72)
bilinear = up_full[:, 4:68, 4:68].transpose(1, 2, 0)  # crop 4 on each side -> (64, 64, 3)
nearest = small.repeat(8, axis=0).repeat(8, axis=1)

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
"""),
    md(r"""
    Two properties to check. Away from the borders (where one of the two neighbours is missing),
    the result should be exactly linear interpolation between the block centres in each direction,
    which `np.interp` computes independently. And the weights painted onto any interior pixel
    should sum to one, so a constant image stays constant.
    """),
    code("""
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
print("constant image upsampled, interior range:", ones[:, inner, inner].min(),
      ones[:, inner, inner].max())
"""),
    md(r"""
    ## A learnable filter

    In FCN the upsampling weights can be trained like any other. First, the backward pass of
    `ConvTranspose2d` (the gradient for its input and for its weight) must be right: the same
    float64 numerical gradient check as for convolutions in notebook 1, here with a random
    (not bilinear) weight so that nothing special hides a mistake.
    """),
    code("""
layer = ConvTranspose2d(2, 3, 4, stride=2, padding=1, init="kaiming", rng=0).astype(np.float64)
grad_errors = gradcheck(layer, rng.standard_normal((2, 2, 3, 3)))
print({name: f"{err:.1e}" for name, err in grad_errors.items()})
"""),
    md(r"""
    ### Learning to upsample

    Can plain gradient descent discover bilinear interpolation from examples? The *target* is a
    frozen bilinear 2x upsampling layer (`ConvTranspose2d(3, 3, 4, stride=2, padding=1)`, which
    exactly doubles the side); the *student* has the same shape but starts from random (He normal)
    weights, including the weights between different colour channels, which must learn to become
    zero.

    The training inputs are white noise. Noise contains every spatial frequency, so every number
    in the kernel affects the output and the examples pin the filter down completely. (Smooth
    images would teach it only partly: the loss would fall, yet the kernel could stay off in ways
    that smooth inputs never reveal.)

    The loss is the mean squared error $L = \frac{1}{2}\,\mathrm{mean}((\hat y - t)^2)$, whose
    gradient with respect to the prediction is $(\hat y - t) / \mathrm{size}$; `backward` turns that
    into the weight gradient and `minifcn.optim.SGD` (with momentum) takes the step. This is a
    linear least-squares problem, so the loss should fall steadily.
    """),
    code("""
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
print("learned kernel, red -> red:\\n", np.round(learned[0, 0], 3))

half = original.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)[None]  # (1, 3, 32, 32)
upsampled_by_student = student(half)[0].transpose(1, 2, 0)
fig, axes = plt.subplots(1, 5, figsize=(16, 3.2))
axes[0].semilogy(history)
axes[0].set_xlabel("step")
axes[0].set_title("loss (log scale)")
panels = [(bilinear_target[0, 0], "bilinear target, red -> red"),
          (learned[0, 0], "learned, red -> red"),
          (learned[0, 1], "learned, red -> green")]
for ax, (w, title) in zip(axes[1:4], panels):
    ax.imshow(w, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(title)
    ax.axis("off")
axes[4].imshow(np.clip(upsampled_by_student, 0, 255).astype(np.uint8))
axes[4].set_title("learned filter: 32x32 -> 64x64")
axes[4].axis("off")
plt.show()
"""),
    md(r"""
    The loss falls by orders of magnitude and the learned kernel approaches the bilinear one, while
    the cross-channel kernels shrink toward zero. In FCN the upsampling starts *at* the bilinear
    kernel and then adapts to what the task needs; the paper reports that learning it helps little,
    which is why the reference code keeps it frozen (`--freeze-upsampling` in `minifcn.train`).

    ## Checked
    """),
    code("""
assert np.allclose(MT, M.T)
assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs)), (lhs, rhs)
assert naive_error < 1e-10
assert np.allclose(bilinear_kernel(4)[0] / bilinear_kernel(4)[0, 0] * 0.25,
                   [0.25, 0.75, 0.75, 0.25])
assert up_full.shape == (3, 72, 72)
assert interp_error < 1e-9
assert np.allclose(ones[:, inner, inner], 1.0)
assert max(grad_errors.values()) < 1e-6, grad_errors
assert history[-1] < 1e-2 * history[0], (history[0], history[-1])
assert np.abs(learned - bilinear_target).max() < 0.1 * np.abs(initial - bilinear_target).max()
print("all checks passed")
"""),
]

# ------------------------------------------------------------------------------ 04
NOTEBOOKS["04_skip_architecture"] = [
    md(r"""
    # 4. The skip architecture: coordinate maps, padding 100, crop offsets, fusion

    FCN-32s predicts from the last, coarsest layer and upsamples 32x in one step, so its output is
    blobby. FCN-16s and FCN-8s add **skips**: scores predicted from the finer pool4 and pool3
    layers are added to the upsampled coarse scores. To add two score maps, their pixels must
    refer to the same places in the image, and the reference implementation does this with crops
    at offsets that look like magic numbers: 19 for FCN-32s, 5 and 27 for FCN-16s, 5, 9 and 31
    for FCN-8s. This notebook derives them, explains the odd padding of 100 pixels in the first
    layer, draws the alignment, runs crop-and-fuse step by step, and compares the outputs of the
    three networks on the same images.

    Geometry needs no forward pass, so we use the paper's real VGG16 configuration for it (a
    paper-size network holds about 135 million parameters, half a gigabyte, so we build them but
    never run them). Where we do run a network we use a copy with the paper's geometry and very
    few channels.
    """),
    code(
        SETUP
        + """
import gc
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from minifcn.checkpoint import load_model
from minifcn.data import ShapesDataset, colorize
from minifcn.engine import predict_scores
from minifcn.explain import explain
from minifcn.models import PAPER, FCN8s, FCN16s, FCN32s
from minifcn.models.geometry import CoordMap, layer_map
from minifcn.train import train

%matplotlib inline
import matplotlib.pyplot as plt

plt.rcParams["figure.dpi"] = 80
"""
    ),
    md(r"""
    ## Coordinate maps

    Give every blob (layer output) a coordinate map: the position in the input image, in pixels,
    of the centre of its pixel `x`. For one convolution or pooling layer with kernel `k`, stride
    `s` and padding `p`, output pixel `x` is centred over input position

    $$x_{in} = s \cdot x_{out} + \frac{k - 1}{2} - p$$

    (its window starts at $s x_{out} - p$ and is `k` wide). Composing these maps from the image
    upwards gives every blob a map of the form $x_{img} = \mathrm{jump} \cdot x + \mathrm{shift}$,
    where the *jump* is the blob's stride in image pixels. A transposed convolution inverts its
    map (it goes from small to large). `minifcn.models.geometry.layer_map` gives one layer's map
    and `CoordMap.then` composes them; models expose the result as `coordinate_maps()`.

    A 2x2/2 pool, for example, maps output pixel `x` to input position `2x + 0.5`: halfway
    between the two input pixels it takes the max of.
    """),
    code("""
paper = {}  # name -> (crop offsets, coordinate maps), from the real paper-size models
for cls in (FCN32s, FCN16s, FCN8s):
    model = cls(21, "paper")
    n_params = sum(p.data.size for p in model.parameters())
    paper[cls.__name__] = (model.crop_offsets, model.coordinate_maps())
    print(f"{cls.__name__}: {n_params / 1e6:.1f} M parameters, crop offsets {model.crop_offsets}")
    del model
    gc.collect()

print("one 2x2/2 pool:", layer_map(FCN8s(21, replace(PAPER, widths=(1,) * 5, fc_channels=1)).pool1))
maps8 = paper["FCN8s"][1]
for blob in ["data", "conv1_1", "pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "score_fr"]:
    print(f"{blob:>9}: {maps8[blob]}")
"""),
    md(r"""
    `explain(model)` (also `python -m minifcn.explain --model fcn8s`) prints the whole table,
    layer by layer, with each blob's receptive field and, given an image side, its size. Here for
    FCN-8s on the paper backbone and a 500-pixel image (the size of a typical PASCAL VOC image).
    To keep memory low from here on, we use a copy of the paper configuration with 4 channels per
    block: widths do not change any kernel, stride or padding, so the geometry is the paper's.
    """),
    code("""
NARROW = replace(PAPER, name="paper-narrow", widths=(4,) * 5, fc_channels=8)
narrow = {cls.__name__: cls(5, NARROW) for cls in (FCN32s, FCN16s, FCN8s)}
for name, model in narrow.items():
    assert model.crop_offsets == paper[name][0] and model.coordinate_maps() == paper[name][1]
print(explain(narrow["FCN8s"], 500))
"""),
    md(r"""
    ## Why the first convolution pads by 100

    `fc6` is VGG16's first fully connected layer turned into a 7x7 convolution without padding, so
    it needs a pool5 map of at least 7x7, i.e. an input of about 7 x 32 = 224 pixels. The paper
    wanted any image size to work, so conv1_1 pads by 100 pixels on each side: then even a tiny
    image gives pool5 a 7x7 map.

    The padding also moves everything: with `p` the first padding, every blob's shift grows by
    `100 - p` relative to the paper. The final upsampled map of FCN-32s starts `p - 81` pixels
    before the image's first pixel, so it can be cropped to the image only if `p >= 81`; with less
    padding the network's output does not even cover the image. The loop below builds narrow
    FCN-32s models with other first paddings: the model refuses to be built when the crop offset
    would be negative, and for the others we ask for the smallest image side it can segment.
    """),
    code("""
paddings = list(range(0, 121, 10 if QUICK else 4))
offsets, smallest = [], []
for p in paddings:
    try:
        m = FCN32s(5, replace(NARROW, first_padding=p))
    except ValueError as err:
        if p == 0:
            print("first padding 0:", err)
        offsets.append(np.nan)
        smallest.append(np.nan)
        continue
    offsets.append(m.crop_offsets["score"])
    sizes = m.supported_sizes(256)
    smallest.append(sizes[0] if sizes else np.nan)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(paddings, offsets, "o-", ms=3)
axes[0].axvline(100, color="gray", ls=":")
axes[0].set_xlabel("padding of conv1_1")
axes[0].set_ylabel("offset of the final crop")
axes[0].set_title("no model below 81: the output would not cover the image")
axes[1].plot(paddings, smallest, "o-", ms=3, color="tab:red")
axes[1].axvline(100, color="gray", ls=":")
axes[1].set_xlabel("padding of conv1_1")
axes[1].set_ylabel("smallest image side")
axes[1].set_title("smallest image FCN-32s (paper geometry) accepts")
plt.show()
print("paper padding 100: crop offset", offsets[paddings.index(100)],
      "smallest side", smallest[paddings.index(100)])
"""),
    md(r"""
    ## Where 19, 5, 27, 9 and 31 come from

    To add blob `b` to blob `a` (or to cut the final scores to the image), their maps must have
    the same jump, and we cut `b` at the offset where its pixel lands on `a`'s pixel 0:

    $$\text{offset} = \frac{\mathrm{shift}_a - \mathrm{shift}_b}{\mathrm{jump}}.$$

    With padding 100 the maps are (for FCN-8s):

    * `pool4` (and the 1x1 `score_pool4` on it): $16x - 91.5$. `upscore2` (score_fr upsampled 2x):
      $16x - 11.5$. Offset $(-11.5 + 91.5) / 16 = 5$.
    * `pool3` / `score_pool3`: $8x - 95.5$. `upscore_pool4`: $8x - 23.5$.
      Offset $(-23.5 + 95.5) / 8 = 9$.
    * the final 8x upsampling `upscore8`: $x - 31$; the image: $x + 0$. Offset 31.
    * FCN-16s's final 16x upsampling lands at $x - 27$ (offset 27), FCN-32s's 32x one at
      $x - 19$ (offset 19).

    The models compute these from the maps when they are built (`model.crop_offsets`); nothing is
    typed in. The next cell recomputes them from the maps with the formula.
    """),
    code("""
def offset_from_maps(maps, big, ref):
    return (maps[ref].shift - maps[big].shift) / maps[big].scale


derived = {
    "FCN32s score": offset_from_maps(paper["FCN32s"][1], "upscore", "data"),
    "FCN16s score_pool4c": offset_from_maps(paper["FCN16s"][1], "score_pool4", "upscore2"),
    "FCN16s score": offset_from_maps(paper["FCN16s"][1], "upscore16", "data"),
    "FCN8s score_pool4c": offset_from_maps(maps8, "score_pool4", "upscore2"),
    "FCN8s score_pool3c": offset_from_maps(maps8, "score_pool3", "upscore_pool4"),
    "FCN8s score": offset_from_maps(maps8, "upscore8", "data"),
}
for name, value in derived.items():
    print(f"{name:>20}: {value}")
"""),
    md(r"""
    ### A drawing of the alignment

    Each bar is one blob of FCN-8s for a 64-pixel image side, drawn where its pixels fall in
    image coordinates (from the centre of its first pixel minus half a jump, to the centre of its
    last plus half a jump); dots mark pixel centres for the coarse blobs. The grey band is the
    image. The padding of 100 makes the early blobs reach far outside the image; the deep blobs
    still overhang it. The crops cut each longer bar (light) down to the bar it is fused with
    (dark, same jump) at the derived offset.
    """),
    code("""
def footprint(cmap, n):
    lo = cmap.shift - cmap.scale / 2
    return float(lo), float(lo + cmap.scale * n)


SIDE = 64
sizes = narrow["FCN8s"].blob_sizes(SIDE)
rows = [
    ("data", "image"),
    ("conv1_1", "conv1_1 (padding 100)"),
    ("pool3", "pool3 / score_pool3"),
    ("score_pool3c", "score_pool3c (crop 9)"),
    ("pool4", "pool4 / score_pool4"),
    ("score_pool4c", "score_pool4c (crop 5)"),
    ("pool5", "pool5"),
    ("score_fr", "fc6 / fc7 / score_fr"),
    ("upscore2", "upscore2 (x2)"),
    ("upscore_pool4", "upscore_pool4 (x2)"),
    ("upscore8", "upscore8 (x8)"),
    ("score", "score (crop 31)"),
]
colours = {"pool3": "tab:green", "score_pool3c": "tab:green", "pool4": "tab:orange",
           "score_pool4c": "tab:orange", "upscore2": "tab:orange", "upscore_pool4": "tab:green"}
fig, ax = plt.subplots(figsize=(11, 4.6))
ax.axvspan(-0.5, SIDE - 0.5, color="0.85")
for y, (blob, label) in enumerate(rows):
    cmap, n = maps8[blob], sizes[blob]
    lo, hi = footprint(cmap, n)
    light = blob in ("pool3", "pool4")
    ax.barh(y, hi - lo, left=lo, height=0.5, color=colours.get(blob, "tab:blue"),
            alpha=0.35 if light else 0.9)
    if cmap.scale >= 8:
        centres = [float(cmap.scale * i + cmap.shift) for i in range(n)]
        ax.plot(centres, [y] * n, "k.", ms=3)
    ax.text(hi + 4, y, f"{label}: {n} px, {cmap}", va="center", fontsize=8)
ax.set_yticks([])
ax.invert_yaxis()
ax.set_xlim(-130, 330)
ax.set_xlabel("image coordinate (pixels)")
ax.set_title(f"FCN-8s, paper geometry, {SIDE}-pixel image: where each blob lies")
plt.show()
"""),
    md(r"""
    ## Crop and fuse, step by step

    `model.graph()` lists every connection as `(output blob, layer, input blob[, reference blob])`;
    a `Crop` cuts its input to the reference's size at the model's offset, a `Fuse` adds its two
    inputs. Walking that list and calling each layer reproduces the forward pass, and gives us
    every intermediate blob to look at. We do it for the narrow paper-geometry FCN-8s on one
    64x64 image (in eval mode, so that dropout is off).
    """),
    code("""
val = ShapesDataset("val", size=6)
x = val[0][0][None]  # (1, 3, 64, 64), mean-subtracted
net = narrow["FCN8s"].eval()
blobs = {"data": x}
for out, layer, src, *ref in net.graph():
    module = getattr(net, layer)
    blobs[out] = module(blobs[src], blobs[ref[0]]) if ref else module(blobs[src])

for blob in ["pool3", "pool4", "score_fr", "upscore2", "score_pool4", "score_pool4c",
             "fuse_pool4", "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3",
             "upscore8", "score"]:
    print(f"{blob:>14}: {tuple(blobs[blob].shape)}   predicted side {sizes[blob]}")
graph_matches_forward = np.array_equal(blobs["score"], net(x))
print("walking the graph gives the same scores as forward():", graph_matches_forward)
"""),
    md(r"""
    `score_pool4` is 17x17 but `upscore2` only 8x8: the crop keeps rows and columns 5 to 12 of
    `score_pool4`, exactly the pixels that sit at the same image positions as `upscore2`'s.
    Likewise rows and columns 9 to 26 of the 33x33 `score_pool3` line up with the 18x18
    `upscore_pool4`, and the final crop takes the 64x64 image-sized window at 31 from the 152x152
    `upscore8`. After each crop the two summands of a `Fuse` have identical coordinate maps, which
    is what "aligned" means:
    """),
    code("""
for fuse, a, b in [("fuse_pool4", "upscore2", "score_pool4c"),
                   ("fuse_pool3", "upscore_pool4", "score_pool3c")]:
    print(f"{fuse}: {a} {maps8[a]}  |  {b} {maps8[b]}")
    assert maps8[a] == maps8[b]
sides = {blob: blobs[blob].shape[-1] for blob in blobs}
assert (sides["score_pool4"], sides["upscore2"], sides["score_pool3"], sides["upscore_pool4"]) == (
    17, 8, 33, 18)
assert (sides["upscore8"], sides["score"]) == (152, 64)
"""),
    md(r"""
    ## FCN-32s, FCN-16s and FCN-8s on the same images

    Finally the point of all this: does fusing finer layers give finer predictions? We train the
    mini configuration (the same architecture with fewer channels, a smaller first padding and a
    3x3 fc6, for 64x64 shapes images) in stages, as the paper does: FCN-32s first, then FCN-16s
    started from it, then FCN-8s started from FCN-16s. Each stage is a call to
    `minifcn.train.train` (the same as `python -m minifcn.train ...`) writing into a temporary
    folder. The budget here is small (notebook 5 trains longer and studies the numbers); the
    predictions are for validation images the networks did not train on.
    """),
    code("""
runs = Path(tempfile.mkdtemp(prefix="minifcn_nb04_"))
size_args = ["--train-size", "16", "--val-size", "8"] if QUICK else ["--train-size", "1500",
                                                                     "--val-size", "40"]
stages = [("fcn32s", "1" if QUICK else "2", None),
          ("fcn16s", "1" if QUICK else "2", "fcn32s"),
          ("fcn8s", "1" if QUICK else "3", "fcn16s")]
summaries = {}
for model_name, epochs, previous in stages:
    argv = ["--model", model_name, "--out", str(runs / model_name), "--epochs", epochs,
            "--no-progress", *size_args]
    if previous:
        argv += ["--init-from", str(runs / previous / "best.npz")]
    summaries[model_name] = train(argv)
"""),
    code("""
models = {name: load_model(runs / name / "best.npz")[0].eval() for name in summaries}
show = range(4)
fig, axes = plt.subplots(len(show), 5, figsize=(11, 2.3 * len(show)), squeeze=False)
for row, i in enumerate(show):
    image, label = val[i]
    panels = [(val.raw_image(i), "image"), (colorize(label), "ground truth")]
    for name, model in models.items():
        pred = predict_scores(model, image[None])[0].argmax(axis=0)
        panels.append((colorize(pred), f"{name} (val mIU {summaries[name]['best_mean_iu']:.2f})"))
    for ax, (panel, title) in zip(axes[row], panels):
        ax.imshow(panel, interpolation="nearest")
        ax.axis("off")
        if row == 0:
            ax.set_title(title, fontsize=9)
plt.show()
"""),
    md(r"""
    With a budget this short the networks are far from converged (in quick mode they have barely
    started). A network that has not yet learned to find the objects predicts the most common
    class, background, everywhere; the mean IU in each title tells how far each one got. Where
    they do predict objects, FCN-32s's scores can only change smoothly over about 32 pixels,
    while FCN-16s and FCN-8s can follow edges more closely. Notebook 5 trains longer and compares
    the metrics.

    ## Checked

    * the offsets computed by the paper-size models are 19; 5, 27; 5, 9, 31, and the formula on
      the coordinate maps gives the same;
    * a narrow copy of the paper configuration has exactly the paper's geometry;
    * below a first padding of 81 no FCN-32s can be built; with 100 any image side works;
    * walking `graph()` reproduces `forward()`, and the summands of each fuse share a map;
    * the staged runs wrote checkpoints that load back as the right models.
    """),
    code("""
assert paper["FCN32s"][0] == {"score": 19}
assert paper["FCN16s"][0] == {"score_pool4c": 5, "score": 27}
assert paper["FCN8s"][0] == {"score_pool4c": 5, "score_pool3c": 9, "score": 31}
assert list(derived.values()) == [19, 5, 27, 5, 9, 31]
assert maps8["pool4"] == CoordMap(16, -91.5) and maps8["upscore2"] == CoordMap(16, -11.5)
assert all(np.isnan(o) for p, o in zip(paddings, offsets) if p < 81)
assert offsets[paddings.index(100)] == 19 and smallest[paddings.index(100)] == 1
assert graph_matches_forward
assert [type(m).__name__ for m in models.values()] == ["FCN32s", "FCN16s", "FCN8s"]
print("all checks passed")
"""),
]

# ------------------------------------------------------------------------------ 05
NOTEBOOKS["05_training"] = [
    md(r"""
    # 5. Staged training: FCN-32s, then FCN-16s, then FCN-8s

    The paper trains its networks in stages. FCN-32s is trained first. FCN-16s is then
    initialised from it, with the new pool4 score layer set to zero so that it starts out
    predicting what FCN-32s did, and trained further; FCN-8s is initialised from FCN-16s the same
    way. On PASCAL VOC each stage improved the result (on a subset of the VOC 2011 validation set
    the paper reports a mean IU of 59.4 for FCN-32s, 62.4 for FCN-16s and 62.7 for FCN-8s), and
    the predictions got visibly finer.

    Here we do the same on the package's synthetic shapes dataset with the **mini** backbone
    (the VGG16 layout at a width a CPU trains in minutes), and look at what the numbers this
    notebook actually produced say about the paper's ordering FCN-8s > FCN-16s > FCN-32s.

    Each stage is one call of `minifcn.train.train`, which takes the same arguments as the command
    line. In full mode (how the saved outputs were made) the three stages are exactly:

    ```bash
    python -m minifcn.train --model fcn32s --out RUNS/fcn32s --epochs 2
    python -m minifcn.train --model fcn16s --out RUNS/fcn16s --epochs 3 --init-from RUNS/fcn32s/best.npz
    python -m minifcn.train --model fcn8s --out RUNS/fcn8s --epochs 4 --init-from RUNS/fcn16s/best.npz
    ```

    (plus `--no-progress`), with the package's default optimiser, learning rate and schedule. That
    is a modest budget, a few minutes per stage at most on a two-core CPU. Quick mode (`MINIFCN_QUICK=1`) uses 16 training images,
    8 validation images and one epoch per stage, only to check that the notebook runs.
    """),
    code(
        SETUP
        + """
import json
import tempfile
from pathlib import Path

import numpy as np
from IPython.display import Markdown, display

from minifcn.checkpoint import load_model
from minifcn.data import CLASS_NAMES, ShapesDataset, colorize
from minifcn.engine import evaluate, predict_scores
from minifcn.train import train

%matplotlib inline
import matplotlib.pyplot as plt

plt.rcParams["figure.dpi"] = 80

TRAIN_SIZE, VAL_SIZE = (16, 8) if QUICK else (3000, 200)  # full mode: the command's defaults
EPOCHS = {"fcn32s": 1, "fcn16s": 1, "fcn8s": 1} if QUICK else {"fcn32s": 2, "fcn16s": 3, "fcn8s": 4}
runs = Path(tempfile.mkdtemp(prefix="minifcn_nb05_"))  # never inside the repository


def stage_args(model, init_from=None):
    argv = ["--model", model, "--out", str(runs / model), "--epochs", str(EPOCHS[model]),
            "--train-size", str(TRAIN_SIZE), "--val-size", str(VAL_SIZE), "--no-progress"]
    return argv + (["--init-from", str(runs / init_from / "best.npz")] if init_from else [])


print("run folder:", runs)
"""
    ),
    md(r"""
    ## Stage 1: FCN-32s

    From random initial weights (there is no ImageNet pre-training here). The log line of each
    epoch gives the training loss and the four validation metrics of the paper: pixel accuracy,
    mean (per-class) accuracy, mean IU (intersection over union, averaged over classes) and
    frequency-weighted IU. `best.npz` keeps the weights of the epoch with the best mean IU. A
    warning that the predictions "collapsed onto class 0" means the network still predicts
    background everywhere: background covers most pixels, so that is where training starts.

    Expect FCN-32s to stay there on this dataset. With the mini backbone a 64x64 image leaves a
    3x3 pool5 map, and the 3x3 fc6 turns it into a **single** score cell: FCN-32s can only paint
    one blurred 64x64 blob per class over the whole image, and with about 78% of the pixels being
    background, "background everywhere" is close to the best such a predictor can do. The stages
    that follow add the finer pool4 (stride 16) and pool3 (stride 8) grids.
    """),
    code("""
summary = {"fcn32s": train(stage_args("fcn32s"))}
"""),
    md(r"""
    ## Stage 2: FCN-16s from FCN-32s

    `--init-from` loads the FCN-32s checkpoint into an FCN-16s (`FCN16s.from_fcn32s`): the
    backbone and `score_fr` are copied; `score_pool4` starts at zero, so the pool4 skip adds
    nothing until training gives it weight; the upsampling layers start bilinear.
    """),
    code("""
summary["fcn16s"] = train(stage_args("fcn16s", init_from="fcn32s"))
"""),
    md(r"""
    ## Stage 3: FCN-8s from FCN-16s

    The same once more: `FCN8s.from_fcn16s` copies everything FCN-16s has (including its
    `score_pool4`), and `score_pool3` starts at zero.
    """),
    code("""
summary["fcn8s"] = train(stage_args("fcn8s", init_from="fcn16s"))
"""),
    md(r"""
    ## Curves

    Every run folder holds `metrics.json`, one row per epoch. Plotted one stage after the other
    (the epoch axis continues across stages), the training loss and the validation mean IU show
    what each stage added.
    """),
    code("""
history = {m: json.loads((runs / m / "metrics.json").read_text()) for m in summary}
fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(11, 3.6))
start = 0
for m, rows in history.items():
    epochs = start + np.array([r["epoch"] for r in rows])
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label=m)
    ax_iu.plot(epochs, [r["mean_iu"] for r in rows], "o-", label=m)
    start = epochs[-1]
    for ax in (ax_loss, ax_iu):
        ax.axvline(start + 0.5, color="0.8", lw=1)
ax_loss.set_title("training loss")
ax_iu.set_title("validation mean IU")
for ax in (ax_loss, ax_iu):
    ax.set_xlabel("epoch (all stages)")
    ax.legend()
plt.show()
"""),
    md(r"""
    ## The four metrics

    For each network, the validation metrics of its best epoch (the one saved in `best.npz`).
    We also evaluate each `best.npz` again with `minifcn.engine.evaluate`, which must reproduce
    the logged mean IU, and keep its per-class IU for later.
    """),
    code("""
METRICS = ["pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"]
val_set = ShapesDataset("val", size=VAL_SIZE)
best, models, per_class, recheck = {}, {}, {}, {}
for m, rows in history.items():
    best[m] = max(rows, key=lambda r: (r["mean_iu"], r["epoch"]))  # ties: the later epoch, as train
    models[m] = load_model(runs / m / "best.npz")[0]
    result = evaluate(models[m], val_set, batch_size=4)
    recheck[m] = (result["mean_iu"], best[m]["mean_iu"])
    per_class[m] = result["per_class_iu"]

table = ["| network | best epoch | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
for m in history:
    cells = " | ".join(f"{100 * best[m][k]:.1f}" for k in METRICS)
    table.append(f"| {m} | {best[m]['epoch']} | {cells} |")
display(Markdown("\\n".join(table) + "\\n\\n(percent)"))
"""),
    md(r"""
    Mean IU weights every class equally, so it is the metric that notices small and thin objects;
    pixel accuracy and frequency-weighted IU are dominated by the background. Per class:
    """),
    code("""
lines = ["| class | " + " | ".join(history) + " |", "|---" * (len(history) + 1) + "|"]
for c, name in enumerate(CLASS_NAMES):
    lines.append(f"| {name} | " + " | ".join(f"{100 * per_class[m][c]:.1f}" for m in history) + " |")
display(Markdown("\\n".join(lines) + "\\n\\n(IU, percent)"))
"""),
    md(r"""
    ## Where the skips should help: near boundaries

    The skips add detail, so their effect should be largest close to object boundaries and
    smallest inside large regions. We split the validation pixels into those within 2 pixels of a
    label boundary and the rest, and measure the pixel accuracy of each network on each part.
    """),
    code("""
def near_boundary(labels, width=2):
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    edge[:, :-1, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    edge[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
    for _ in range(width - 1):  # grow the band by one pixel each time
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, :, 1:] |= edge[:, :, :-1]
        grown[:, :, :-1] |= edge[:, :, 1:]
        edge = grown
    return edge


images = np.stack([val_set[i][0] for i in range(len(val_set))])
labels = val_set.labels.astype(np.int64)
band = near_boundary(labels)
preds = {m: predict_scores(model.eval(), images).argmax(axis=1) for m, model in models.items()}
boundary_acc = {m: float((p == labels)[band].mean()) for m, p in preds.items()}
interior_acc = {m: float((p == labels)[~band].mean()) for m, p in preds.items()}
print(f"{band.mean():.0%} of the validation pixels lie within 2 px of a boundary")
for m in preds:
    print(f"{m}: accuracy near boundaries {boundary_acc[m]:.3f}, elsewhere {interior_acc[m]:.3f}")
"""),
    md(r"""
    ## Predictions

    The same validation images through the three networks (each at its best epoch). The
    `predictions.png` each run folder holds shows the same for one network at a time.
    """),
    code("""
show = list(range(min(5, len(val_set))))
fig, axes = plt.subplots(len(show), 5, figsize=(10, 2.1 * len(show)), squeeze=False)
for row, i in enumerate(show):
    panels = [(val_set.raw_image(i), "image"), (colorize(labels[i]), "ground truth")]
    panels += [(colorize(preds[m][i]), m) for m in preds]
    for ax, (panel, title) in zip(axes[row], panels):
        ax.imshow(panel, interpolation="nearest")
        ax.axis("off")
        if row == 0:
            ax.set_title(title)
plt.show()
"""),
    md(r"""
    ## Does the paper's ordering show?

    The next cell compares the three networks on every measure above and writes out what it finds,
    so that the text below always describes the numbers of this run (in quick mode, too).
    """),
    code("""
def ordering(values):
    order = sorted(values, key=values.get, reverse=True)
    return " > ".join(f"{m} ({values[m]:.3f})" for m in order), order == ["fcn8s", "fcn16s",
                                                                           "fcn32s"]


measures = {k: {m: best[m][k] for m in best} for k in METRICS}
measures["accuracy near boundaries"] = boundary_acc
measures["accuracy away from boundaries"] = interior_acc
holds, fails = [], []
report = []
for name, values in measures.items():
    text, paper_order = ordering(values)
    (holds if paper_order else fails).append(name)
    report.append(f"- **{name}**: {text}" + (" (the paper's order)" if paper_order else ""))

gain = {k: measures[k]["fcn8s"] - measures[k]["fcn32s"] for k in measures}
summary_lines = [
    f"In this run the paper's ordering 8s > 16s > 32s holds for {len(holds)} of the "
    f"{len(measures)} measures" + (f" ({', '.join(holds)})" if holds else "") + ".",
    f"FCN-8s minus FCN-32s: mean IU {gain['mean_iu']:+.3f}, pixel accuracy "
    f"{gain['pixel_accuracy']:+.3f}, accuracy near boundaries "
    f"{gain['accuracy near boundaries']:+.3f}, away from boundaries "
    f"{gain['accuracy away from boundaries']:+.3f}.",
]
if gain["accuracy near boundaries"] > gain["accuracy away from boundaries"]:
    summary_lines.append("FCN-8s gained more near boundaries than inside regions, which is "
                         "where the finer skips are expected to help.")
else:
    summary_lines.append("FCN-8s did not gain more near boundaries than inside regions in this "
                         "run, so the finer skips did not show their expected advantage here.")
for previous, m in [("fcn32s", "fcn16s"), ("fcn16s", "fcn8s")]:
    if best[previous]["epoch"] < EPOCHS[previous]:
        summary_lines.append(
            f"{m} started from {previous}'s best checkpoint, saved at epoch "
            f"{best[previous]['epoch']} of {EPOCHS[previous]}: later epochs of {previous} did not "
            "raise its mean IU, so their training did not carry over."
        )
if all(best[m]["mean_iu"] < 0.25 for m in best):
    summary_lines.append("All three networks are still close to predicting background only "
                         "(mean IU below 0.25), so this run is too short to compare them.")
display(Markdown("\\n".join(report) + "\\n\\n" + " ".join(summary_lines)))
"""),
    md(r"""
    ### Reading these numbers

    Keep in mind what the comparison above is and is not:

    * **Staging confounds the comparison.** FCN-16s continued from FCN-32s's weights and trained
      for more epochs in total; FCN-8s for more still. Any gain of a later stage mixes the effect
      of the skip with the effect of simply training longer. The paper has the same confound; it
      reports separately that training FCN-32s longer did not reach FCN-16s.
    * **Where the skips should show.** Their effect is local: near boundaries and on thin
      structures (bars, the arms of crosses). Interior pixels and background, which dominate pixel
      accuracy and frequency-weighted IU, are predicted well already from stride 32. So gains, if
      any, should appear first in mean IU, in the per-class IU of thin classes (rectangle,
      cross), and in the boundary accuracy, and barely in pixel accuracy. On PASCAL VOC too the
      step from 16s to 8s added only 0.3 mean IU points.
    * **Where they cannot show.** If the backbone has not yet learned to find the objects (mean IU
      near that of predicting background everywhere), finer upsampling has nothing to refine;
      then the ordering is noise. A small validation set also makes differences of a point or
      two unreliable.
    * **Zero-initialised skips.** A new stage starts out predicting what the previous one did;
      with only a few epochs the new score layer may not have moved far from zero.

    To see the ordering more clearly, train each stage longer and compare again.

    ## Checked
    """),
    code("""
for m in summary:
    assert (runs / m / "best.npz").is_file() and (runs / m / "metrics.json").is_file()
    assert len(history[m]) == EPOCHS[m]
    assert all(0.0 <= best[m][k] <= 1.0 for k in METRICS)
    fresh, logged = recheck[m]
    assert abs(fresh - logged) < 1e-6, (m, fresh, logged)
assert [type(models[m]).__name__ for m in summary] == ["FCN32s", "FCN16s", "FCN8s"]
assert str(runs).startswith(tempfile.gettempdir())
print("all checks passed")
"""),
]

# ------------------------------------------------------------------------------ 06
NOTEBOOKS["06_gpu_with_cupy"] = [
    md(r"""
    # 6. The same model on a GPU with CuPy

    CuPy is a NumPy look-alike whose arrays live on an NVIDIA GPU: `cupy.matmul`, slicing,
    `cupy.exp` and so on run as GPU kernels. `minifcn` never writes `import numpy as np` inside a
    layer's arithmetic; each layer asks `minifcn.backend.get_array_module(x)` for the module its
    input belongs to (NumPy or CuPy) and computes with that. So one code path serves both, and
    moving a model to the GPU is `model.to("gpu")`: every parameter is copied to the device, and
    from then on inputs must be CuPy arrays (`minifcn.backend.to_device(x, "gpu")`).

    This notebook runs the mini FCN-8s on both and checks

    1. **parity**: the GPU computes the same scores and gradients as the CPU, to within float32
       rounding;
    2. **speed**: forward and training-step times on each.

    Where there is no GPU (or CuPy is not installed) it says so and runs the CPU parts only.
    """),
    code(
        SETUP
        + """
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
    print(f"NO GPU on this machine ({why}). The GPU comparisons below are SKIPPED; the CPU parts "
          "run. Install CuPy on a machine with an NVIDIA GPU to run them (see the README).")
"""
    ),
    md(r"""
    ## A model and a batch

    The mini FCN-8s with 5 classes. Its score layers start at zero (as in the paper), which would
    make every output exactly zero and any comparison trivial, so we give them small random
    weights first. The batch is a few shapes images, mean-subtracted.
    """),
    code("""
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
    \"\"\"Largest difference relative to the largest magnitude: max|a - b| / max|b|.\"\"\"
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


print(images.shape, images.dtype, "->", model(images).shape)
"""),
    md(r"""
    ## What "the same" means: float32 rounding on the CPU

    A GPU adds numbers in a different order than the CPU (many threads, different matrix-multiply
    algorithms), and in float32 a different order gives slightly different results. So we cannot
    expect bit-identical outputs, only differences of the size float32 rounding makes anyway. To
    know that size, compare the float32 model on the CPU with a float64 copy of it: that
    difference is the yardstick for the GPU. Both the scores and the gradients of all parameters
    (for a fixed random upstream gradient) are compared.
    """),
    code("""
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
print(f"CPU float32 vs float64: scores {cpu_score_err:.1e}, worst parameter gradient "
      f"{cpu_grad_err:.1e}")
"""),
    md(r"""
    ## Parity on the GPU

    The same weights moved to the GPU with `.to("gpu")`, the same batch copied there with
    `to_device`; results come back with `as_numpy`. The GPU float32 results are compared with the
    float64 CPU reference and should be as close to it as the CPU float32 results are (within a
    small factor). We also compare a few training steps (Adam, dropout on) on both devices from the
    same starting point: the dropout masks come from each layer's NumPy generator on both devices,
    so the two runs see identical masks and their losses should agree.
    """),
    code("""
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
    scores_gpu, grads_gpu = forward_backward(model_gpu, to_device(images, "gpu"),
                                             to_device(dscores, "gpu"))
    gpu_score_err = scaled_error(scores_gpu, scores64)
    gpu_grad_err = max(scaled_error(grads_gpu[n], grads64[n]) for n in grads64)
    gpu_vs_cpu = scaled_error(scores_gpu, scores32)
    gpu_losses = train_losses(clone(model), "gpu")
    print(f"GPU float32 vs CPU float64: scores {gpu_score_err:.1e}, worst gradient "
          f"{gpu_grad_err:.1e}   (CPU float32: {cpu_score_err:.1e}, {cpu_grad_err:.1e})")
    print(f"GPU vs CPU, both float32: scores {gpu_vs_cpu:.1e}")
    print("GPU training losses:", np.round(gpu_losses, 6))
else:
    print("No GPU: parity check skipped.")
"""),
    md(r"""
    ## Speed

    Times are medians of a few runs after a warm-up run (`minifcn.bench.timeit`). On the GPU, work
    is queued and runs asynchronously, so the clock stops only after
    `minifcn.backend.synchronize` has waited for the queue to empty; otherwise we would time the
    queuing, not the computation. A training step is forward, loss, backward and an Adam update.
    The first GPU call also compiles CuPy's kernels, which the warm-up run absorbs.
    """),
    code("""
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
"""),
    md(r"""
    A network this small (a few hundred thousand parameters on 64x64 images) keeps a GPU far from
    busy:
    each layer is a short kernel, and the time goes to launching kernels from Python. The
    speed-up grows with the batch, the image size and the width of the network; the paper-size
    VGG16 network on 500x500 images is where the GPU is indispensable
    (`python -m minifcn.bench --device gpu` times the layers at those sizes).

    ## Checked

    On every machine: the float32 CPU model agrees with its float64 copy to float32 precision and
    training on the CPU lowers the loss. With a GPU, in addition: the GPU's scores and gradients
    are as close to the float64 reference as the CPU's are (within a factor of 10), and the
    training losses on the two devices agree.
    """),
    code("""
assert cpu_score_err < 1e-4 and cpu_grad_err < 1e-3, (cpu_score_err, cpu_grad_err)
assert cpu_losses[-1] < cpu_losses[0]
if GPU:
    assert gpu_score_err < 10 * cpu_score_err + 1e-6, (gpu_score_err, cpu_score_err)
    assert gpu_grad_err < 10 * cpu_grad_err + 1e-6, (gpu_grad_err, cpu_grad_err)
    assert np.allclose(gpu_losses, cpu_losses, rtol=1e-4), (gpu_losses, cpu_losses)
else:
    print("GPU checks skipped: no GPU.")
print("all checks passed")
"""),
]


# ------------------------------------------------------------------------------ main
def build(names=()) -> list[Path]:
    """Write the notebooks (only ``names`` if given; the others keep their saved outputs)."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    if shutil.which("ruff"):  # the cell texts above are written loosely; let ruff lay them out
        subprocess.run(["ruff", "format", "--quiet", *map(str, paths)], check=True)
    return paths


def execute(paths, timeout: int = 1800) -> dict:
    """Run each notebook top to bottom in full mode and save it with its outputs."""
    from nbclient import NotebookClient

    env_quick = os.environ.pop("MINIFCN_QUICK", None)
    times = {}
    try:
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            start = time.perf_counter()
            NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(HERE)}},
            ).execute()
            times[path.name] = time.perf_counter() - start
            nbformat.write(nb, path)
            print(f"{path.name}: {times[path.name]:.0f} s", flush=True)
    finally:
        if env_quick is not None:
            os.environ["MINIFCN_QUICK"] = env_quick
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--execute", action="store_true", help="run in full mode, save outputs")
    parser.add_argument("names", nargs="*", help="only these notebooks (e.g. 01_convolution)")
    args = parser.parse_args(argv)
    paths = build(args.names)
    if args.execute:
        execute(paths)


if __name__ == "__main__":
    main(sys.argv[1:])
