"""The accelerated path: the same layers as ``minifcn/nn/``, computed faster.

``minifcn/nn/`` writes every layer's algorithm once, in plain array code: read
those files to learn what a layer computes. This package holds everything that
exists only for speed, behind one switch (``minifcn.backend.accelerated``; set
``MINIFCN_ACCEL=0`` for the plain path, ``MINIFCN_CUDA_KERNELS=0`` for the plain
path on the GPU only). It is the default.

* ``cpu.py`` (NumPy): stride-1 convolutions in a "row-shift" form (kw shifted
  copies of each band of rows instead of im2col's kh*kw, one stacked product)
  whose input gradient is itself such a convolution, batch-major im2col for
  other strides, reused buffers, a 1x1 shortcut, the transposed convolution as
  one "sub-pixel" matrix product, a loss whose gradient is finished in the
  loss forward, and pooling and ReLU on blocks of images (on the pool of threads
  where a block is large enough).
* ``gpu.py`` (CuPy): the same layers with the custom CUDA kernels of
  ``cuda_kernels.py`` (im2col, col2im as a gather, max pooling with its argmax
  and its backward as a gather, ReLU, the softmax cross-entropy summed on the
  device), and fused forms that issue fewer launches (the convolution with its
  bias; both parameter gradients from one product). ``cuda_kernels.py`` also
  holds the fused Adam and SGD steps ``minifcn.optim`` runs on the GPU.
* ``pool.py``: max pooling over non-overlapping windows as strided views (NumPy).
* ``shared.py``: what both share: the 1x1 shortcut and the batch-major products.
* ``workers.py``: the pool of threads the CPU layers run their pieces on (pieces
  fixed by the shapes, the BLAS single-threaded in each: the same bits for any
  thread count).
* ``threads.py``: how many threads that pool has (as many as there are idle cores,
  unless ``MINIFCN_THREADS`` fixes it), and the BLAS pinned to one.
* ``split.py``: the batch split: a CPU training step as two fixed halves, the second
  in a helper process while two cores are idle (``minifcn.training.step.TrainStep``
  runs it; the same bits with or without the helper).

A layer uses an optional form (``conv2d_bias``, ``relu``, ``softmax_xent_totals``...)
only where its accelerated module offers one; of them the CPU module offers
``relu`` and ``relu_backward`` (the plain arithmetic, on blocks of images),
``conv2d_bias`` (the bias added where each form writes its output, the same values
as adding it after), ``conv2d_backward`` (the weight and input gradients side by
side on two threads, the same bits as one after the other) and
``softmax_xent_totals`` (the loss with the layer's label checks and sums, made once
for the batch around its blocks of images; the same gradient bits).

Each accelerated module implements ``minifcn.dispatch.LayerOps`` (the nine
functions conv2d, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d,
conv_transpose2d_backward, max_pool2d, max_pool2d_backward, softmax_xent,
softmax_xent_backward, with the plain functions' arguments and results; only the
cached state each forward returns for its backward differs). Importing this
package registers them with ``minifcn.dispatch``, which the layers ask; the
package ``minifcn`` imports it, so it is registered whenever minifcn is used.
"""

from __future__ import annotations

from ..dispatch import register_accelerated


def _cpu():
    from . import cpu

    return cpu


def _gpu():
    from . import gpu

    return gpu


register_accelerated("cpu", _cpu)
register_accelerated("gpu", _gpu)
