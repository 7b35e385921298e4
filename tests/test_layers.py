"""What each layer computes: reference loops, identities, output sizes, dtypes, bad input."""

import itertools
import re
import weakref

import numpy as np
import pytest
from helpers import close, on

from minifcn.backend import plain_path
from minifcn.nn import (
    Conv2d,
    ConvTranspose2d,
    Crop,
    Dropout,
    Fuse,
    MaxPool2d,
    ReLU,
    Scale,
    SoftmaxCrossEntropy,
    bilinear_kernel,
    bilinear_weight,
    col2im,
    im2col,
)
from minifcn.nn.pool import pool_output_size
from minifcn.nn.reference import (
    conv2d_naive,
    conv_transpose2d_naive,
    max_pool2d_naive,
    pool_window_starts,
)


@pytest.mark.parametrize("k,s,p", [(1, 1, 0), (3, 1, 1), (3, 2, 0), (4, 2, 1), (7, 3, 3)])
def test_conv_forward_matches_naive_loop(xp, rng, k, s, p):
    layer = on(xp, Conv2d(3, 4, k, s, p, rng=rng))
    layer.bias.data[...] = xp.asarray(rng.standard_normal(4))
    x = rng.standard_normal((2, 3, 9, 8))
    w, b = (
        np.asarray(layer.weight.data.get() if xp is not np else layer.weight.data),
        np.asarray(layer.bias.data.get() if xp is not np else layer.bias.data),
    )
    close(layer(xp.asarray(x)), conv2d_naive(x, w, b, s, p), rtol=1e-10, atol=1e-10)


def test_im2col_and_col2im_are_adjoint(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 7, 6)))
    col = im2col(x, 3, 2, 2, 1)
    c = xp.asarray(rng.standard_normal(col.shape))
    lhs = float((col * c).sum())
    rhs = float((x * col2im(c, 7, 6, 2, 1)).sum())
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (4, 2, 1), (16, 8, 0), (3, 3, 2)])
def test_transposed_conv_is_adjoint_of_conv(xp, rng, k, s, p):
    """<conv(x), y> = <x, conv_transpose(y)> when both share one weight array."""
    conv = on(xp, Conv2d(3, 2, k, s, p, bias=False, rng=rng))
    up = on(xp, ConvTranspose2d(2, 3, k, s, p, init="kaiming"))
    up.weight.data = conv.weight.data  # (O=2, C=3, k, k) is (in=2, out=3, k, k) for the transpose
    # Sizes where (H + 2p - k) is a multiple of s, so the transpose restores H exactly.
    h, w = s * 4 + k - 2 * p, s * 3 + k - 2 * p
    x = xp.asarray(rng.standard_normal((2, 3, h, w)))
    y_shape = conv(x).shape
    y = xp.asarray(rng.standard_normal(y_shape))
    up_y = up(y)
    assert up_y.shape == x.shape
    lhs, rhs = float((conv(x) * y).sum()), float((x * up_y).sum())
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


def test_transposed_conv_forward_matches_naive_loop(xp, rng):
    layer = on(xp, ConvTranspose2d(3, 2, 4, 2, 1, init="kaiming", rng=rng))
    x = rng.standard_normal((2, 3, 4, 5))
    w = np.asarray(layer.weight.data.get() if xp is not np else layer.weight.data)
    close(layer(xp.asarray(x)), conv_transpose2d_naive(x, w, 2, 1), rtol=1e-10, atol=1e-10)


def test_read_span_holds_every_input_row_a_window_reads_and_covers_the_window():
    from minifcn.nn.conv_transpose import read_span

    for k, s, size in itertools.product(range(1, 7), range(1, 5), range(1, 6)):
        out = (size - 1) * s + k
        for start, length in ((a, n) for a in range(out) for n in range(1, out - a + 1)):
            first, stop = read_span(start, length, size, k, s)
            reads = {
                i for y in range(start, start + length) for i in range(size) if 0 <= y - i * s < k
            }
            assert 0 <= first < stop <= size, (k, s, size, start, length)
            assert first * s <= start and (stop - 1) * s + k >= start + length
            assert reads <= set(range(first, stop)), (k, s, size, start, length)
            if k >= s:  # every row read: none more than the window needs
                assert {first, stop - 1} <= reads, (k, s, size, start, length)


@pytest.mark.parametrize("k,s,p", [(16, 8, 0), (4, 2, 1), (3, 1, 1), (1, 2, 0), (5, 3, 2)])
def test_transposed_conv_of_a_window_is_the_whole_output_cut_on_both_paths(rng, k, s, p):
    """forward(x, window) computes only that part of the output; its values, and with the
    window's gradient the input and parameter gradients, are the whole output's."""
    x = rng.standard_normal((2, 2, 5, 4))
    for plain in (True, False):
        with plain_path(plain):
            make = lambda: ConvTranspose2d(2, 3, k, s, p, bias=True, init="kaiming", rng=0)  # noqa: E731
            whole = make()
            whole.bias.data[...] = [0.5, -1.0, 2.0]
            y = whole(x)
            big, wide = y.shape[2:]
            for top, left, h, w in [
                (1, 2, big - 2, wide - 3),
                (big - 1, wide - 1, 1, 1),
                (2, 0, 1, wide),
            ]:
                dy = rng.standard_normal((2, 3, h, w))
                part = make()
                part.bias.data[...] = whole.bias.data
                got = part(x, window=(top, left, h, w))
                assert part.cached().window is not None
                close(got, y[:, :, top : top + h, left : left + w], rtol=1e-12, atol=1e-12)
                whole.zero_grad()
                whole(x)
                padded = np.zeros(y.shape)
                padded[:, :, top : top + h, left : left + w] = dy
                close(part.backward(dy), whole.backward(padded), rtol=1e-12, atol=1e-12)
                for a, b in zip(part.parameters(), whole.parameters()):
                    close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    for bad in [(0, 0, 1, 99), (-1, 0, 1, 1), (0, 0, 0, 1), (big - 1, 0, 2, 1), (0, wide, 1, 1)]:
        with pytest.raises(ValueError, match=r"window \(.*\).*not inside the output"):
            whole(x, window=bad)


def test_transposed_conv_output_size_follows_pytorch_rule():
    assert ConvTranspose2d(2, 2, 64, 32).output_size(3) == (3 - 1) * 32 + 64
    assert ConvTranspose2d(2, 2, 4, 2, 1).output_size(5) == 10


def test_bilinear_kernel_of_size_4_has_the_expected_profile():
    k = bilinear_kernel(4)
    profile = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(k, np.outer(profile, profile))
    np.testing.assert_allclose(bilinear_kernel(3)[1], [0.5, 1.0, 0.5])
    assert bilinear_kernel(64).shape == (64, 64)


def test_bilinear_weight_is_diagonal_in_channels():
    w = ConvTranspose2d(3, 3, 4, 2).weight.data
    assert w.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(w[1, 1], bilinear_kernel(4))
    assert np.all(w[0, 1] == 0) and np.all(w[2, 0] == 0)


@pytest.mark.parametrize("k,s", [(4, 2), (16, 8), (64, 32)])
def test_bilinear_upsampling_keeps_a_constant_image_constant_away_from_borders(xp, k, s):
    up = on(xp, ConvTranspose2d(2, 2, k, s), dtype=np.float32)
    x = xp.full((1, 2, 6, 5), 3.0, dtype=xp.float32)
    y = up(x)
    assert y.dtype == xp.float32
    inner = y[:, :, k:-k, k:-k]
    close(inner, np.full(inner.shape, 3.0), rtol=1e-6)


@pytest.mark.parametrize(
    "size,k,s,p,ceil,expected",
    [
        (7, 2, 2, 0, True, 4),
        (7, 2, 2, 0, False, 3),
        (8, 2, 2, 0, True, 4),
        (5, 3, 2, 1, True, 3),
        (6, 3, 2, 1, True, 4),
        (1, 2, 2, 0, True, 1),
        (10, 3, 3, 0, True, 4),
        (224 + 198, 2, 2, 0, True, 211),
    ],
)
def test_max_pool_output_size_rule(size, k, s, p, ceil, expected):
    assert pool_output_size(size, k, s, p, ceil) == expected


def test_max_pool_takes_the_window_maximum(xp):
    x = xp.asarray(np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5))
    y = MaxPool2d(2, 2, ceil_mode=True)(x)
    close(y[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])


def test_dropout_drops_with_probability_p_and_rescales(xp):
    layer = Dropout(0.25, rng=0)
    x = xp.ones((4, 8, 32, 32), dtype=xp.float32)
    y = layer(x)
    kept = float((y > 0).mean())
    assert abs(kept - 0.75) < 0.02
    close(y[y > 0], np.full(int((y > 0).sum()), 1 / 0.75), rtol=1e-6)
    layer.eval()
    assert layer(x) is x


def test_crop_backward_pads_with_zeros(xp):
    layer = Crop((1, 2))
    x = xp.zeros((1, 1, 4, 5))
    layer(x, xp.zeros((1, 1, 2, 2)))
    dx = layer.backward(xp.ones((1, 1, 2, 2)))
    expected = np.zeros((1, 1, 4, 5))
    expected[0, 0, 1:3, 2:4] = 1
    close(dx, expected)


def test_loss_value_matches_a_direct_computation(rng):
    scores = rng.standard_normal((2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[1, 0] = 255
    p = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    n, h, w = np.nonzero(labels != 255)
    expected = -np.log(p[n, labels[n, h, w], h, w]).mean()
    assert SoftmaxCrossEntropy()(scores, labels) == pytest.approx(expected, rel=1e-12)
    total = SoftmaxCrossEntropy(reduction="sum")(scores, labels)
    assert total == pytest.approx(expected * len(n), rel=1e-12)


def test_loss_all_ignored_is_zero_with_zero_gradient(xp):
    loss = SoftmaxCrossEntropy()
    scores = xp.ones((2, 3, 4, 4), dtype=xp.float32)
    value = loss(scores, xp.full((2, 4, 4), 255))
    grad = loss.backward()
    assert value == 0.0
    assert not bool(xp.isnan(grad).any()) and float(abs(grad).sum()) == 0.0


def test_loss_is_stable_for_huge_scores(xp):
    scores = xp.asarray(np.array([1e4, -1e4, 0.0], dtype=np.float32).reshape(1, 3, 1, 1))
    loss = SoftmaxCrossEntropy()
    assert loss(scores, xp.zeros((1, 1, 1), dtype=xp.int64)) == pytest.approx(0.0, abs=1e-6)
    assert loss(scores, xp.ones((1, 1, 1), dtype=xp.int64)) == pytest.approx(2e4, rel=1e-6)
    assert not bool(xp.isnan(loss.backward()).any())


def _float32_cases():
    return [
        (lambda: Conv2d(3, 4, 3, 1, 1), (2, 3, 6, 5)),
        (lambda: Conv2d(3, 4, 1), (2, 3, 6, 5)),
        (lambda: ConvTranspose2d(3, 3, 4, 2), (2, 3, 6, 5)),
        (lambda: MaxPool2d(2, 2, ceil_mode=True), (2, 3, 7, 5)),
        (lambda: ReLU(), (2, 3, 6, 5)),
        (lambda: Dropout(0.5), (2, 3, 6, 5)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_float32_in_gives_float32_out_and_gradients(xp, rng, case):
    make, shape = _float32_cases()[case]
    layer = on(xp, make(), dtype=np.float32)
    x = xp.asarray(rng.standard_normal(shape).astype(np.float32))
    y = layer(x)
    dx = layer.backward(xp.ones_like(y))
    assert y.dtype == xp.float32 and dx.dtype == xp.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())


def test_float32_loss_gradient_and_crop_fuse_stay_float32(xp):
    scores = xp.zeros((1, 3, 2, 2), dtype=xp.float32)
    loss = SoftmaxCrossEntropy()
    loss(scores, xp.zeros((1, 2, 2), dtype=xp.int32))
    assert loss.backward().dtype == xp.float32
    crop = Crop(1)
    assert crop(xp.zeros((1, 2, 4, 4), dtype=xp.float32), scores).dtype == xp.float32
    assert crop.backward(xp.zeros((1, 2, 2, 2), dtype=xp.float32)).dtype == xp.float32
    assert Fuse()(scores, scores).dtype == xp.float32


def test_bad_input_errors_name_the_problem(xp):
    conv = on(xp, Conv2d(3, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        conv(xp.zeros((3, 8, 8), dtype=xp.float32))
    with pytest.raises(ValueError, match="expected 3 input channels, got 5"):
        conv(xp.zeros((1, 5, 8, 8), dtype=xp.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv(xp.zeros((1, 3, 2, 8), dtype=xp.float32))
    with pytest.raises(ValueError, match="label value 7 is out of range for 3 classes"):
        SoftmaxCrossEntropy()(xp.zeros((1, 3, 2, 2)), xp.asarray([[[0, 7], [255, 1]]]))
    with pytest.raises(ValueError, match="labels must have shape"):
        SoftmaxCrossEntropy()(xp.zeros((1, 3, 2, 2)), xp.zeros((1, 3, 2), dtype=xp.int64))
    with pytest.raises(ValueError, match="Crop: cannot cut"):
        Crop(3)(xp.zeros((1, 1, 4, 4)), xp.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="shapes must match"):
        Fuse()(xp.zeros((1, 1, 4, 4)), xp.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="expected 2 input channels"):
        on(xp, ConvTranspose2d(2, 2, 4, 2))(xp.zeros((1, 3, 2, 2)))


def test_backward_accumulates_parameter_gradients(rng):
    conv = Conv2d(2, 3, 3, 1, 1, rng=rng)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    dy = np.ones((2, 3, 5, 5), dtype=np.float32)
    conv(x)
    conv.backward(dy)
    once = conv.weight.grad.copy()
    conv.backward(dy)
    close(conv.weight.grad, 2 * once, rtol=1e-6)
    conv.zero_grad()
    assert float(np.abs(conv.weight.grad).sum()) == 0.0


# ------------------------------------------------------------ plain path == accelerated path
# Shapes that reach every accelerated variant: the row-shift form at stride 1 on maps of
# 1024+ pixels with out <= 4 x in channels (also as the input gradient, with dy padded,
# unpadded and cropped), the batch-major product on small maps, for more out channels
# and at other strides, 1x1, paddings; the sub-pixel transposed
# conv with s | k, s not dividing k, and padding; tiled and general pooling.
PATH_CASES = {
    "conv3x3 large map": (lambda: Conv2d(8, 5, 3, 1, 1, rng=0), (2, 8, 40, 37)),
    "conv3x3 p0": (lambda: Conv2d(4, 4, 3, 1, 0, rng=0), (1, 4, 36, 34)),
    "conv3x3 p4 (padding > k - 1)": (lambda: Conv2d(4, 4, 3, 1, 4, rng=0), (2, 4, 30, 28)),
    "conv5x5 p1": (lambda: Conv2d(3, 3, 5, 1, 1, rng=0), (1, 3, 36, 34)),
    "conv3x3 2->9 large map": (lambda: Conv2d(2, 9, 3, 1, 1, rng=0), (1, 2, 34, 33)),
    "conv3x3 s2 large map": (lambda: Conv2d(8, 4, 3, 2, 2, rng=0), (2, 8, 41, 40)),
    "conv3x3 small map": (lambda: Conv2d(3, 4, 3, 1, 1, rng=0), (2, 3, 9, 8)),
    "conv3x3 narrow mid map": (lambda: Conv2d(64, 2, 3, 1, 1, rng=0), (1, 64, 23, 23)),
    "conv3x3 wide mid map": (lambda: Conv2d(65, 3, 3, 1, 1, rng=0), (1, 65, 24, 23)),
    "conv3x3 winograd": (lambda: Conv2d(256, 256, 3, 1, 1, rng=0), (2, 256, 6, 4)),
    "conv3x3 winograd p0": (lambda: Conv2d(256, 260, 3, 1, 0, rng=0), (1, 256, 6, 8)),
    "conv3x3 wide, odd output": (lambda: Conv2d(256, 256, 3, 1, 1, rng=0), (1, 256, 5, 6)),
    "conv7x7 s3 p2": (lambda: Conv2d(2, 3, 7, 3, 2, rng=0), (2, 2, 11, 9)),
    "conv1x1": (lambda: Conv2d(4, 3, 1, rng=0), (2, 4, 5, 6)),
    "convT 4/2": (lambda: ConvTranspose2d(3, 3, 4, 2), (2, 3, 5, 4)),
    "convT 16/8": (lambda: ConvTranspose2d(2, 3, 16, 8, init="kaiming", rng=0), (2, 2, 3, 2)),
    "convT 64/32": (lambda: ConvTranspose2d(2, 2, 64, 32, init="kaiming", rng=0), (1, 2, 2, 2)),
    "convT 5/2 p2 bias": (
        lambda: ConvTranspose2d(3, 2, 5, 2, 2, bias=True, init="kaiming", rng=0),
        (2, 3, 4, 5),
    ),
    "convT 3/1 p1": (lambda: ConvTranspose2d(2, 3, 3, 1, 1, init="kaiming", rng=0), (2, 2, 5, 4)),
    "maxpool 2/2 ceil": (lambda: MaxPool2d(2, 2, ceil_mode=True), (2, 3, 7, 6)),
    "maxpool 2/2 floor": (lambda: MaxPool2d(2, 2), (2, 3, 7, 5)),
    "maxpool 3/2 p1": (lambda: MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 7, 8)),
}


def _run_layer(xp, make, x, dy_seed=5):
    layer = on(xp, make())
    y = layer(xp.asarray(x))
    dy = xp.asarray(np.random.default_rng(dy_seed).standard_normal(y.shape))
    dx = layer.backward(dy)
    return [y, dx] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("name", PATH_CASES)
def test_plain_and_accelerated_paths_give_the_same_values_and_gradients(xp, rng, name):
    make, shape = PATH_CASES[name]
    x = rng.permutation(np.arange(np.prod(shape)) * 0.01 - 1).reshape(shape)  # no pool ties
    with plain_path():
        plain = _run_layer(xp, make, x)
    with plain_path(False):
        fast = _run_layer(xp, make, x)
    assert len(plain) == len(fast)
    for a, b in zip(plain, fast):
        assert a.shape == b.shape
        close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_plain_and_accelerated_losses_agree(xp, rng, dtype, reduction):
    scores = (rng.standard_normal((2, 5, 6, 7)) * 5).astype(dtype)
    labels = rng.integers(0, 5, (2, 6, 7)).astype(np.uint8)
    labels[0, :2] = 255
    results = []
    for plain in (True, False):
        with plain_path(plain):
            loss = SoftmaxCrossEntropy(reduction=reduction)
            value = loss(xp.asarray(scores), xp.asarray(labels))
            results.append((value, loss.backward(0.5)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert results[0][0] == pytest.approx(results[1][0], rel=tol)
    assert results[1][1].dtype == dtype
    close(results[0][1], results[1][1], rtol=tol, atol=tol * 0.1)


@pytest.mark.parametrize("least", [0, None], ids=["blocks on the pool", "one block"])
def test_the_accelerated_loss_in_blocks_of_images_matches_the_plain_loss(rng, monkeypatch, least):
    from minifcn.accel import cpu, workers

    pool = workers.Workers(3)
    monkeypatch.setattr(workers, "workers", lambda: pool)
    if least is not None:
        monkeypatch.setattr(cpu, "ELEMENTWISE_WORK", least)
        assert [b.stop - b.start for b in cpu._thread_blocks(5, 1)] == [2, 2, 1]
    scores = rng.standard_normal((5, 4, 6, 7)) * 5  # blocks of 2, 2 and 1 images
    labels = rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)
    labels[3, 2:4] = 255  # ignored pixels in the second block
    results = []
    for plain in (True, False):
        with plain_path(plain):
            loss = SoftmaxCrossEntropy(reduction="sum")
            results.append((loss(scores, labels), loss.backward(1.0)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    close(results[0][1], results[1][1], rtol=1e-12, atol=1e-13)
    assert np.all(results[1][1][3, :, 2:4] == 0)


def test_the_loss_is_the_same_bits_in_one_block_or_one_per_thread(rng, monkeypatch):
    """The loss cuts the batch into one block of images per thread (every value is a
    pixel's own), so the thread count, which follows the load, changes no bit."""
    from minifcn.accel import cpu, workers

    monkeypatch.setattr(cpu, "ELEMENTWISE_WORK", 0)
    scores = (rng.standard_normal((7, 5, 9, 11)) * 4).astype(np.float32)
    labels = rng.integers(0, 5, (7, 9, 11)).astype(np.uint8)
    labels[2, 3:] = 255
    labels[5] = 255  # a block's image with no counted pixel
    results = []
    for threads in (1, 2, 3, 7):
        pool = workers.Workers(threads)
        monkeypatch.setattr(workers, "workers", lambda: pool)  # noqa: B023
        assert len(cpu._thread_blocks(7, 1)) == threads
        loss = SoftmaxCrossEntropy()
        results.append((loss(scores, labels), loss.backward(0.3)))
        pool.close()
    for value, grad in results[1:]:
        assert value == results[0][0]
        assert grad.dtype == np.float32 and np.array_equal(grad, results[0][1])
    assert np.all(results[0][1][5] == 0) and np.any(results[0][1][2] != 0)


def test_the_cpu_loss_totals_are_each_images_sums_and_count_bad_labels_where_they_are(rng):
    """``softmax_xent_totals`` makes the layer's label checks and sums in its blocks: each
    row is one image's loss sum, labelled pixels and out-of-range labels (negative ones
    too), and the gradient is the one ``softmax_xent`` finishes on the class-id pixels."""
    from minifcn.accel import cpu, workers
    from minifcn.nn.loss import softmax_xent

    pool = workers.Workers(2)
    scores = rng.standard_normal((3, 4, 5, 6)) * 3
    labels = rng.integers(0, 4, (3, 5, 6))
    labels[0, 0, :2] = 255
    labels[1, 2, 3], labels[2, 4, 0], labels[2, 1, 1] = -1, 4, 9
    valid = labels != 255
    counted = valid & (labels >= 0) & (labels < 4)
    want_loss, _ = softmax_xent(scores, labels, 255, counted)
    _, want = cpu.softmax_xent(scores, labels, 255, counted)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "ELEMENTWISE_WORK", 0)
        patch.setattr(workers, "workers", lambda: pool)
        partial, saved = cpu.softmax_xent_totals(scores, labels, 255)
    pool.close()
    close(partial[:, 0], want_loss.reshape(3, -1).sum(axis=1), rtol=1e-12)
    assert partial[:, 1].tolist() == [28, 30, 30] and partial[:, 2].tolist() == [0, 1, 2]
    assert np.array_equal(saved.grad, want.grad)
    with pytest.raises(ValueError, match="label value -1 is out of range for 4 classes"):
        SoftmaxCrossEntropy()(scores, labels)


def test_the_cpu_loss_backward_hands_over_its_gradient_and_makes_it_again_when_asked_twice(rng):
    """backward scales the forward's gradient in place and returns it; a second backward
    of the same forward makes it again, so what the first returned may be changed."""
    scores = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 5, 6))
    labels[1, 2] = 255
    with plain_path():
        plain = SoftmaxCrossEntropy()
        plain(scores, labels)
        want = plain.backward(0.5)
    loss = SoftmaxCrossEntropy()
    loss(scores, labels)
    first = loss.backward(0.5)
    close(first, want, rtol=1e-5, atol=1e-7)
    kept = first.copy()
    first[...] = 7.0  # the caller's to change
    second = loss.backward(0.5)
    assert second is not first and np.array_equal(second, kept)
    close(loss.backward(2.0), 4 * kept, rtol=1e-6, atol=1e-8)
    # The loss holds the scores weakly (not the network's output until the next forward):
    # once nothing else does, a backward after the first says so.
    gone = weakref.ref(scores)
    loss(scores, labels)
    loss.backward()
    del scores
    assert gone() is None
    with pytest.raises(RuntimeError, match="earlier backward took this forward's gradient"):
        loss.backward()


def test_a_nan_score_gives_a_nan_loss_on_the_cpu_path_too(rng):
    scores = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    scores[1, 2, 1, 1] = np.nan
    labels = rng.integers(0, 3, (2, 4, 4))
    loss = SoftmaxCrossEntropy()
    assert np.isnan(loss(scores, labels))
    grad = loss.backward()
    assert np.isnan(grad[1, :, 1, 1]).all() and np.isfinite(grad[0]).all()


@pytest.mark.parametrize("ignore_index", [255, 1, -100])
def test_the_accelerated_loss_ignores_the_ignore_label_inside_or_outside_the_classes(
    rng, ignore_index
):
    """An ignore label may be a class id (1 here) or negative (PyTorch's -100): the
    accelerated masks must leave it out as the plain loss does, and count it as labelled
    for neither the loss nor the error."""
    scores = rng.standard_normal((2, 4, 3, 5))
    labels = rng.integers(0, 4, (2, 3, 5))
    labels[0, 1] = ignore_index
    results = []
    for plain in (True, False):
        with plain_path(plain):
            loss = SoftmaxCrossEntropy(ignore_index=ignore_index)
            results.append((loss(scores, labels), loss.backward()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    close(results[0][1], results[1][1], rtol=1e-12, atol=1e-13)
    assert np.all(results[1][1][0, :, 1] == 0)


def test_a_layer_backward_follows_the_path_its_forward_took(rng):
    x = rng.standard_normal((2, 8, 40, 37))
    with plain_path(False):
        layer = Conv2d(8, 5, 3, 1, 1, rng=0).astype(np.float64)
        layer(x)
    with plain_path():  # the switch flips between forward and backward
        dx = layer.backward(np.ones((2, 5, 40, 37)))
    with plain_path():
        ref = Conv2d(8, 5, 3, 1, 1, rng=0).astype(np.float64)
        ref(x)
        close(dx, ref.backward(np.ones((2, 5, 40, 37))), rtol=1e-12)


@pytest.mark.parametrize(
    "make,args",
    [
        (lambda: Conv2d(2, 2, 3), (np.ones((1, 2, 2, 2)),)),
        (lambda: ConvTranspose2d(2, 2, 4, 2), (np.ones((1, 2, 2, 2)),)),
        (lambda: MaxPool2d(2), (np.ones((1, 2, 2, 2)),)),
        (lambda: ReLU(), (np.ones((1, 2, 2, 2)),)),
        (lambda: Dropout(0.5), (np.ones((1, 2, 2, 2)),)),
        (lambda: Crop(0), (np.ones((1, 2, 2, 2)),)),
        (lambda: SoftmaxCrossEntropy(), ()),
    ],
)
def test_backward_before_forward_is_a_clear_error(make, args):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        make().backward(*args)


def test_every_layer_keeps_its_state_in_one_named_cache():
    from minifcn.nn import Flatten, Linear

    layers = [Conv2d(2, 2, 3), ConvTranspose2d(2, 2, 4, 2), MaxPool2d(2), ReLU(), Dropout(0.5)]
    layers += [Crop(0), SoftmaxCrossEntropy(), Linear(2, 2), Flatten()]
    for layer in layers:
        assert layer._cache is None, type(layer).__name__
        state = {k for k, v in vars(layer).items() if k.startswith("_")}
        assert state == {"_cache"}, (type(layer).__name__, state)


def test_max_pool_output_size_drops_a_last_window_that_would_start_in_the_right_padding():
    # 5 + 2*1 padding: windows start at 0, 2, 4 and (ceil) 6, but 6 = 5 + 1 is in the padding.
    assert pool_output_size(5, 2, 2, 1, True) == 3
    assert pool_output_size(7, 3, 2, 1, True) == 4  # starts 0, 2, 4, 6 (6 < 7 + 1: kept)
    assert pool_output_size(4, 3, 3, 1, True) == 2  # starts 0, 3; 6 would be past the end


@pytest.mark.parametrize("ceil", [True, False])
def test_max_pool_output_size_is_the_window_count_of_the_documented_rule(ceil):
    for size in range(1, 14):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    if size + 2 * p < k:
                        continue
                    starts = pool_window_starts(size, k, s, p, ceil)
                    assert pool_output_size(size, k, s, p, ceil) == len(starts), (size, k, s, p)


@pytest.mark.parametrize(
    "k,s,p,ceil,h,w",
    [
        (2, 2, 1, True, 5, 5),
        (2, 2, 0, True, 7, 5),
        (3, 2, 1, True, 7, 6),
        (3, 3, 1, False, 8, 7),
        (2, 3, 1, False, 8, 8),  # the last window ends before the input does (canvas size)
    ],
)
def test_max_pool_matches_a_loop_over_output_pixels_on_both_paths(xp, rng, k, s, p, ceil, h, w):
    x = rng.standard_normal((2, 3, h, w))
    expected = max_pool2d_naive(x, k, s, p, ceil)
    for plain in (True, False):
        with plain_path(plain):
            close(MaxPool2d(k, s, p, ceil_mode=ceil)(xp.asarray(x)), expected, rtol=0, atol=0)


def test_the_conv_path_cases_reach_every_accelerated_form():
    from minifcn.accel import cpu, winograd

    expected = {
        "conv3x3 large map": cpu.RowShift,
        "conv3x3 p0": cpu.RowShift,
        "conv3x3 p4 (padding > k - 1)": cpu.RowShift,
        "conv5x5 p1": cpu.RowShift,
        "conv3x3 small map": np.ndarray,  # batch-major patches
        "conv3x3 narrow mid map": cpu.RowShift,  # 529 pixels, NARROW_CHANNELS
        "conv3x3 wide mid map": np.ndarray,  # 552 pixels, more channels than that
        "conv3x3 winograd": winograd.Winograd,  # 256 channels in and out, an even output
        "conv3x3 winograd p0": winograd.Winograd,
        "conv3x3 wide, odd output": np.ndarray,  # no 2x2 tiles: batch-major
        "conv3x3 2->9 large map": np.ndarray,  # O > 4C, as VGG16's conv1_1
        "conv3x3 s2 large map": np.ndarray,
    }
    with plain_path(False):
        for name, kind in expected.items():
            make, shape = PATH_CASES[name]
            layer = make()
            layer(np.zeros(shape))
            assert isinstance(layer.cached().col, kind), name


CONV_FORMS = [  # one shape for each form of the CPU convolution
    ((2, 8, 40, 37), 3, 1, 1),
    ((2, 6, 9, 8), 3, 1, 1),
    ((2, 3, 11, 9), 3, 2, 2),
    ((2, 4, 5, 6), 1, 1, 0),
    ((1, 6, 9, 8), 3, 1, 1),
]
CONV_FORM_IDS = ["row-shift", "batch-major", "stride 2", "1x1", "batch-major, one image"]


@pytest.mark.parametrize("shape,k,s,p", CONV_FORMS, ids=CONV_FORM_IDS)
def test_the_cpu_convolution_with_its_bias_is_the_convolution_then_the_bias_bit_for_bit(
    rng, shape, k, s, p
):
    from minifcn.accel import cpu

    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((5, shape[1], k, k)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    y, _ = cpu.conv2d(x, weight, s, p)
    fused, _ = cpu.conv2d_bias(x, weight, bias, s, p)
    assert fused.dtype == np.float32 and np.array_equal(fused, y + bias.reshape(1, -1, 1, 1))


@pytest.mark.parametrize("shape,k,s,p", CONV_FORMS, ids=CONV_FORM_IDS)
@pytest.mark.parametrize(
    "weight_grad,bias_grad,input_grad",
    [(True, True, True), (False, True, True), (True, False, False), (True, True, False)],
    ids=["all", "frozen weight", "weight only", "no input gradient"],
)
def test_the_cpu_convolution_backward_side_by_side_is_the_three_steps_bit_for_bit(
    rng, monkeypatch, shape, k, s, p, weight_grad, bias_grad, input_grad
):
    """The weight and input gradients run as two pieces on two threads (every piece on
    the pool here, however small): the same bits as one after the other, added into the
    gradients given, none where frozen."""
    from minifcn.accel import cpu, workers

    monkeypatch.setattr(workers, "PARALLEL_WORK", 0)
    pool = workers.Workers(2)
    monkeypatch.setattr(workers, "workers", lambda: pool)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((5, shape[1], k, k)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    y, col = cpu.conv2d_bias(x, weight, bias, s, p)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    start_w, start_b = rng.standard_normal(weight.shape).astype(np.float32), np.ones(5, "f4")
    dw, db = start_w.copy(), start_b.copy()
    dx = cpu.conv2d_backward(
        col, dy, weight, dw if weight_grad else None, db if bias_grad else None,
        *shape[2:], s, p, input_grad,
    )  # fmt: skip
    want_w = start_w + cpu.conv2d_weight_grad(col, dy).reshape(weight.shape)
    assert np.array_equal(dw, want_w if weight_grad else start_w)
    assert np.array_equal(db, start_b + dy.sum(axis=(0, 2, 3)) if bias_grad else start_b)
    if input_grad:
        want_x = cpu.conv2d_input_grad(dy, weight, *shape[2:], s, p)
        assert dx.dtype == np.float32 and np.array_equal(dx, want_x)
    else:
        assert dx is None
    pool.close()


@pytest.mark.parametrize("shape,k,s,p", CONV_FORMS, ids=CONV_FORM_IDS)
def test_a_large_weight_gradient_is_made_the_other_way_round_with_the_same_values(
    rng, monkeypatch, shape, k, s, p
):
    """At LARGE_GRAD_VALUES or more the weight gradient is computed (O, K), C-contiguous,
    so that adding it into the gradient reads it in order; below, as the transpose of a
    (K, O) product. Both are the plain path's gradient."""
    from minifcn.accel import cpu
    from minifcn.nn import conv

    x = rng.standard_normal(shape)
    weight = rng.standard_normal((5, shape[1], k, k))
    y, saved = cpu.conv2d(x, weight, s, p)
    dy = rng.standard_normal(y.shape)
    plain = conv.conv2d_weight_grad(conv.conv2d(x, weight, s, p)[1], dy)
    small = cpu.conv2d_weight_grad(saved, dy)
    monkeypatch.setattr(cpu, "LARGE_GRAD_VALUES", weight.size)
    large = cpu.conv2d_weight_grad(saved, dy)
    if not isinstance(saved, cpu.RowShift):
        assert large.flags.c_contiguous and not small.flags.c_contiguous
    close(small, plain, rtol=1e-12, atol=1e-12)
    close(large, plain, rtol=1e-12, atol=1e-12)


def test_winograd_gives_the_same_bits_on_one_thread_or_three(rng, monkeypatch):
    """The Winograd form's pieces (blocks of channels, the 16 products) are fixed by the
    shapes: its forward and backward are the same bits whatever the thread count."""
    from minifcn.accel import workers

    make, shape = PATH_CASES["conv3x3 winograd"]
    x = rng.standard_normal(shape).astype(np.float32)
    results = []
    for threads in (1, 3):
        pool = workers.Workers(threads)
        monkeypatch.setattr(workers, "workers", lambda pool=pool: pool)
        with plain_path(False):
            layer = make().astype(np.float32)
            y = layer(x)
            dx = layer.backward(np.random.default_rng(5).standard_normal(y.shape).astype("f4"))
            results.append([y, dx] + [p.grad for p in layer.parameters()])
        pool.close()
    for a, b in zip(*results):
        assert a.dtype == np.float32 and np.array_equal(a, b)


def test_winograd_parts_refuse_what_they_cannot_tile():
    from minifcn.accel import winograd

    with pytest.raises(ValueError, match="5x7 is odd"):
        winograd.transform_input(np.zeros((1, 1, 7, 9)), 0)
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd.transform_weight(np.zeros((1, 1, 5, 5)))
    assert winograd.winograd_pays(256, 256, 3, 3, 1, 8, 8)
    for args in [
        (255, 256, 3, 3, 1, 8, 8),
        (256, 128, 3, 3, 1, 8, 8),
        (256, 256, 3, 3, 2, 8, 8),
        (256, 256, 5, 5, 1, 8, 8),
        (256, 256, 3, 3, 1, 7, 8),
        (256, 256, 3, 3, 1, 8, 9),
    ]:
        assert not winograd.winograd_pays(*args), args  # fmt: skip


@pytest.mark.parametrize(
    "band_bytes,batch",
    [(3000, 2), (600_000, 9)],
    ids=["bands of a few rows, a short last one", "two images a piece, one in the last"],
)
def test_accelerated_conv_in_pieces_matches_the_plain_path(rng, monkeypatch, band_bytes, batch):
    from minifcn.accel import cpu

    monkeypatch.setattr(cpu, "BAND_BYTES", band_bytes)
    make, shape = PATH_CASES["conv3x3 large map"]
    shape = (batch,) + shape[1:]
    pieces = cpu._row_pieces(batch, shape[1], 3, 3, shape[2], shape[3], 8)
    if band_bytes == 3000:
        assert len(pieces) > batch
    else:  # two images fit a band; the last piece has one
        assert [(p[0].start, p[0].stop) for p in pieces] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    x = rng.standard_normal(shape)
    with plain_path():
        plain = _run_layer(np, make, x)
    with plain_path(False):
        fast = _run_layer(np, make, x)
    for a, b in zip(plain, fast):
        close(a, b, rtol=1e-12, atol=1e-12)


def test_a_copy_of_short_runs_as_wide_items_is_the_copy(rng):
    """``_copy_runs`` copies each contiguous run of the last axis as one item: the same
    values as a plain copy, and a plain copy where the runs are not contiguous."""
    from minifcn.accel import cpu

    src = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    src[0, 0, 0, 1] = np.nan
    for view in (src.transpose(2, 0, 1, 3), src[:, ::2].transpose(1, 2, 0, 3)):
        dst = np.empty(view.shape, np.float32)
        cpu._copy_runs(dst, view)
        assert np.array_equal(dst, view, equal_nan=True)
    for view in (src.transpose(3, 1, 2, 0), src.astype(np.float64)):  # strided runs, a cast
        dst = np.empty(view.shape, np.float32)
        cpu._copy_runs(dst, view)
        assert np.array_equal(dst, view.astype(np.float32), equal_nan=True)


@pytest.mark.parametrize("p,kh", [(0, 3), (1, 3), (2, 3), (4, 3), (2, 5), (1, 1), (7, 3)])
def test_a_piece_copies_its_rows_as_the_padded_batch_shifted_would_be(rng, p, kh):
    """Each row-shift piece copies the rows it reads kw times straight from x, with zeros
    for the padding; every band (the top and bottom ones, bands all in the padding,
    one image or several, padding wider than the image) equals the padded batch's rows
    shifted by 0..kw-1 columns, whatever the buffer held before."""
    from minifcn.accel import cpu

    x = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)
    padded = cpu._padded(x, p)
    out_h, out_w = 6 + 2 * p - kh + 1, 5 + 2 * p - kh + 1
    for images in (slice(0, 1), slice(1, 3)):
        for start in range(out_h):
            for stop in range(start + 1, out_h + 1):
                buf = np.full(2 * kh * 3 * (stop - start + kh - 1) * out_w, np.nan, np.float32)
                cols = cpu._shifted(x, images, slice(start, stop), p, kh, buf, kh, out_w)
                rows = padded[images, :, start : stop + kh - 1]  # (nb, C, rin, Wp)
                want = np.stack([rows[..., j : j + out_w] for j in range(kh)], axis=2)
                want = want.transpose(1, 2, 0, 3, 4).reshape(cols.shape)
                assert np.array_equal(cols, want), (images, start, stop)


@pytest.mark.parametrize(
    "name", ["maxpool 2/2 ceil", "maxpool 2/2 floor", "maxpool 3/2 p1", "relu"]
)
def test_pooling_and_relu_in_blocks_of_images_match_the_plain_path(rng, monkeypatch, name):
    from minifcn.accel import cpu
    from minifcn.accel import pool as tiled

    monkeypatch.setattr(cpu, "ELEMENTWISE_WORK", 0)  # blocks however small the layer
    calls = []
    for fn in ("max_pool2d", "max_pool2d_backward"):
        real = getattr(tiled, fn)
        monkeypatch.setattr(tiled, fn, lambda *a, real=real: calls.append(a[0].shape) or real(*a))
    make, shape = (ReLU, (2, 3, 7, 6)) if name == "relu" else PATH_CASES[name]
    shape = (5,) + shape[1:]  # blocks of 2, 2 and 1 images
    x = rng.permutation(np.arange(np.prod(shape)) * 0.01 - 1).reshape(shape)  # no pool ties
    with plain_path():
        plain = _run_layer(np, make, x)
    with plain_path(False):
        fast = _run_layer(np, make, x)
    for a, b in zip(plain, fast):
        assert a.shape == b.shape and np.array_equal(a, b)
    if name != "relu":
        assert [c[0] for c in calls] == [2, 2, 1, 2, 2, 1]  # forward, then backward, by block
    flat = rng.standard_normal((5, 4))  # a ReLU after a Linear layer: any shape
    y, mask = cpu.relu(flat)
    assert np.array_equal(y, flat * (flat > 0)) and np.array_equal(mask, flat > 0)


@pytest.mark.parametrize("plain", [True, False])
def test_max_pool_ties_send_the_gradient_to_the_first_offset_in_row_major_order(xp, plain):
    x = xp.asarray(np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [2.0, 0.0, 2.0]]]]))
    with plain_path(plain):
        pool = MaxPool2d(2, 1)  # default: floor mode, 2x2 windows at stride 1 -> 2x2 output
        y = pool(x)
        dx = pool.backward(xp.ones_like(y))
    close(y, [[[[1.0, 2.0], [2.0, 2.0]]]])
    close(dx, [[[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]]])
    assert MaxPool2d(2).output_size(7) == 3  # ceil_mode is off unless asked for


@pytest.mark.parametrize(
    "name",
    [
        "conv3x3 large map",
        "conv3x3 p4 (padding > k - 1)",
        "conv3x3 s2 large map",
        "conv3x3 winograd",
    ],
)
def test_accelerated_conv_keeps_float32(rng, name):
    from minifcn.accel import cpu

    make, shape = PATH_CASES[name]
    x = rng.standard_normal(shape)
    with plain_path():
        ref = _run_layer(np, make, x)  # float64
    with plain_path(False):
        layer = make().astype(np.float32)
        y = layer(x.astype(np.float32))
        dy = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
        fast = [y, layer.backward(dy)] + [p.grad for p in layer.parameters()]
        dw = cpu.conv2d_weight_grad(layer.cached().col, dy)
        assert dw.shape == (layer.weight.data.shape[0], x.shape[1] * 9) and dw.dtype == np.float32
    for a, b in zip(ref, fast):
        assert b.dtype == np.float32
        close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "k,s,p,shape",
    [
        (3, 3, 1, (1, 2, 9, 9)),  # the padded canvas, not the last window, sets dx's extent
        (3, 2, 0, (1, 2, 3, 4)),  # a single output row
    ],
)
def test_accelerated_conv_gradients_at_strides_that_leave_pixels_unread(rng, k, s, p, shape):
    x = rng.standard_normal(shape)

    def make():
        return Conv2d(shape[1], 3, k, s, p, rng=0)

    with plain_path():
        plain = _run_layer(np, make, x)
    with plain_path(False):
        fast = _run_layer(np, make, x)
    for a, b in zip(plain, fast):
        assert a.shape == b.shape
        close(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------ constructor defaults, argument checks and edge sizes
# Constructor defaults and dtypes, argument checks, edge sizes (a 1x1 output, a crop flush
# with the edge), bias gradients, per-pixel loss shifts.


def test_conv_layers_default_to_pytorch_settings_float32_and_he_init():
    conv = Conv2d(64, 64, 3, rng=0)
    assert (conv.stride, conv.padding) == (1, 0)
    assert conv.weight.data.dtype == np.float32 and conv.bias.data.dtype == np.float32
    # He et al.: std sqrt(2 / fan_in), fan_in = 64 * 3 * 3
    assert float(conv.weight.data.std()) == pytest.approx(np.sqrt(2 / 576), rel=0.05)
    assert Conv2d(2, 3, 3, bias=False).bias is None
    wide = Conv2d(2, 3, 3, dtype=np.float64)
    assert wide.weight.data.dtype == np.float64 and wide.bias.data.dtype == np.float64

    up = ConvTranspose2d(3, 3, 4)
    assert (up.stride, up.padding, up.bias) == (1, 0, None)
    assert up.weight.data.dtype == np.float32
    close(up.weight.data, bilinear_weight(3, 3, 4))  # in == out: bilinear by default
    assert bilinear_weight(3, 3, 4).dtype == np.float32
    assert ConvTranspose2d(3, 3, 4, bias=True).bias.data.dtype == np.float32

    learned = ConvTranspose2d(64, 32, 4, rng=0)  # in != out: He init, fan_in = in_channels
    assert learned.weight.data.dtype == np.float32
    assert float(learned.weight.data.std()) == pytest.approx(np.sqrt(2 / 64), rel=0.05)
    assert float(np.abs(learned.weight.data[0, 1]).sum()) > 0  # not the diagonal bilinear
    assert ConvTranspose2d(3, 2, 4, init="kaiming").weight.data.dtype == np.float32
    assert bilinear_kernel(4).dtype == np.float32
    for init in ("bilinear", "kaiming"):
        assert ConvTranspose2d(2, 2, 4, init=init, dtype=np.float64).weight.data.dtype == np.float64


@pytest.mark.parametrize(
    "layer,args",
    [
        (Conv2d, (0, 2, 3)),
        (Conv2d, (2, 0, 3)),
        (Conv2d, (2, 2, 0)),
        (Conv2d, (2, 2, 3, 0)),
        (Conv2d, (2, 2, 3, 1, -1)),
        (ConvTranspose2d, (0, 2, 4)),
        (ConvTranspose2d, (2, 0, 4)),
        (ConvTranspose2d, (2, 2, 0)),
        (ConvTranspose2d, (2, 2, 4, 0)),
        (ConvTranspose2d, (2, 2, 4, 1, -1)),
    ],
)
def test_conv_layers_reject_each_bad_constructor_argument(layer, args):
    message = rf"^{layer.__name__}: channels, kernel_size and stride must be >= 1 and padding >= 0"
    with pytest.raises(ValueError, match=message):
        layer(*args)


def test_transposed_conv_rejects_an_unknown_init():
    with pytest.raises(ValueError, match="init must be 'bilinear' or 'kaiming', got 'nearest'"):
        ConvTranspose2d(2, 2, 4, init="nearest")


# (kernel, stride, padding, H, W): FCN's fc6 case (kernel = input: a 1x1 output), and a
# stride whose last window ends before the padded border (col2im's canvas size).
@pytest.mark.parametrize("k,s,p,h,w", [(7, 1, 0, 7, 7), (3, 3, 1, 6, 6), (3, 2, 1, 5, 8)])
def test_plain_conv_output_size_values_and_input_gradient_at_edge_sizes(rng, k, s, p, h, w):
    with plain_path():
        conv = Conv2d(2, 3, k, s, p, bias=False, rng=rng).astype(np.float64)
        x = rng.standard_normal((2, 2, h, w))
        y = conv(x)
        assert y.shape[2:] == (conv.output_size(h), conv.output_size(w))
        close(y, conv2d_naive(x, conv.weight.data, None, s, p), rtol=1e-10, atol=1e-10)
        dy = rng.standard_normal(y.shape)
        dx = conv.backward(dy)  # bias=False: only the weight gets a gradient
    assert dx.shape == x.shape
    # The input gradient is the adjoint of the (linear) convolution: <conv(x), dy> = <x, dx>.
    assert float((y * dy).sum()) == pytest.approx(float((x * dx).sum()), rel=1e-10)
    assert Conv2d(1, 1, 3, 2, 1).output_size(7) == 4
    assert Conv2d(1, 1, 7).output_size(7) == 1


def test_conv_rejects_a_kernel_larger_than_the_padded_input_on_either_axis():
    conv = Conv2d(1, 1, 4, padding=1)
    with pytest.raises(ValueError, match=r"larger than the padded input 3x7 "):
        conv(np.zeros((1, 1, 1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"larger than the padded input 7x3 "):
        conv(np.zeros((1, 1, 5, 1), dtype=np.float32))
    assert conv(np.zeros((1, 1, 2, 2), dtype=np.float32)).shape == (1, 1, 1, 1)


def test_plain_conv_and_transposed_conv_add_bias_gradients_into_grad(rng):
    cases = [
        (Conv2d(2, 3, 3, 1, 1, rng=rng), (2, 2, 5, 4)),
        (ConvTranspose2d(2, 3, 4, 2, 1, bias=True, init="kaiming", rng=rng), (2, 2, 3, 4)),
    ]
    for layer, shape in cases:
        layer.astype(np.float64)
        layer.bias.data[...] = rng.standard_normal(3)
        x = rng.standard_normal(shape)
        with plain_path():
            y = layer(x)
            dy = rng.standard_normal(y.shape)
            layer.backward(dy)
            once = [p.grad.copy() for p in layer.parameters()]
            layer.backward(dy)
        close(layer.bias.grad, 2 * dy.sum(axis=(0, 2, 3)), rtol=1e-12)
        for p, g in zip(layer.parameters(), once):
            close(p.grad, 2 * g, rtol=1e-12)
        bias = layer.bias.data.copy()
        layer.bias.data[...] = 0
        with plain_path():
            close(y - layer(x), np.broadcast_to(bias.reshape(1, 3, 1, 1), y.shape), rtol=1e-12)


def test_transposed_conv_rejects_an_empty_output_on_either_axis_and_allows_one_pixel():
    up = ConvTranspose2d(1, 1, 2, 1, 1)  # out = (size - 1) - 2 + 2 = size - 1
    with plain_path():
        with pytest.raises(ValueError, match=r"input \(1, 1, 1, 3\) gives an empty output"):
            up(np.zeros((1, 1, 1, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="gives an empty output"):
            up(np.zeros((1, 1, 3, 1), dtype=np.float32))
        assert up(np.ones((1, 1, 2, 3), dtype=np.float32)).shape == (1, 1, 1, 2)
        assert up(np.ones((1, 1, 3, 2), dtype=np.float32)).shape == (1, 1, 2, 1)


def test_conv_layer_reprs_show_bias_and_a_frozen_weight():
    assert repr(Conv2d(1, 2, 3, bias=False)) == (
        "Conv2d(1, 2, kernel_size=3, stride=1, padding=0, bias=False)"
    )
    assert repr(ConvTranspose2d(2, 2, 4, 2, freeze=True)) == (
        "ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=0, frozen)"
    )
    assert repr(ConvTranspose2d(2, 2, 4, 2)) == (
        "ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=0)"
    )


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: MaxPool2d(2.5), "MaxPool2d: kernel_size must be an integer >= 1, got 2.5"),
        (lambda: MaxPool2d(True), "MaxPool2d: kernel_size must be an integer >= 1, got True"),
        (lambda: MaxPool2d(0), "MaxPool2d: kernel_size must be an integer >= 1, got 0"),
        (lambda: MaxPool2d(2, 0), "MaxPool2d: stride must be an integer >= 1, got 0"),
        (lambda: MaxPool2d(2, 1.5), "MaxPool2d: stride must be an integer >= 1, got 1.5"),
        (lambda: MaxPool2d(3, 1, -1), "MaxPool2d: padding must be an integer >= 0, got -1"),
        (
            lambda: MaxPool2d(2, 2, 2),
            "MaxPool2d: padding (2) must be at most half of kernel_size (2)",
        ),
    ],
)
def test_max_pool_rejects_each_bad_constructor_argument(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


def test_max_pool_allows_a_one_pixel_output_and_rejects_an_empty_one_on_either_axis():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    with plain_path():
        close(MaxPool2d(2)(x), [[[[3.0]]]])
        close(MaxPool2d(2, ceil_mode=True)(x[:, :, :, :1]), [[[[2.0]]]])  # a 1-wide input
        for shape in [(1, 1, 2, 5), (1, 1, 5, 2)]:
            with pytest.raises(ValueError, match="MaxPool2d: kernel 3 is larger than the padded"):
                MaxPool2d(3)(np.zeros(shape, dtype=np.float32))


LAYER_NAMES = [
    (lambda: Conv2d(3, 2, 1), "Conv2d"),
    (lambda: ConvTranspose2d(3, 3, 2, 2), "ConvTranspose2d"),
    (lambda: MaxPool2d(2), "MaxPool2d"),
    (lambda: Crop(0), "Crop"),
    (lambda: SoftmaxCrossEntropy(), "SoftmaxCrossEntropy (scores)"),
]


@pytest.mark.parametrize("make,name", LAYER_NAMES)
def test_input_errors_name_the_layer_and_what_was_given(make, name):
    second = [np.zeros((1, 3, 3), dtype=np.int64)] if "Softmax" in name else []
    if name == "Crop":
        second = [np.zeros((1, 1, 1, 1))]
    prefix = name.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"^{prefix}: expected input of shape .* got shape list$"):
        make()([1.0, 2.0], *second)
    with pytest.raises(ValueError, match=rf"^{prefix}: .* got shape \(3, 4, 4\)$"):
        make()(np.zeros((3, 4, 4)), *second)
    for shape in [(0, 3, 4, 4), (1, 3, 0, 4), (1, 3, 4, 0)]:
        with pytest.raises(ValueError, match=rf"^{prefix}: expected a non-empty batch .*{shape}"):
            make()(np.zeros(shape), *second)
    if name != "Crop":  # Crop only moves values: any dtype
        with pytest.raises(ValueError, match=rf"^{prefix}: expected a floating-point input"):
            make()(np.zeros((1, 3, 3, 3), dtype=np.int64), *second)


def test_loss_subtracts_each_pixel_own_maximum(rng):
    # One pixel's scores are huge, the other's small: a single shift for the whole batch
    # would underflow exp() at the second pixel and give an infinite loss.
    scores = np.array([[[[1e4, 0.0]], [[0.0, 1.0]]]])  # (N=1, C=2, H=1, W=2)
    labels = np.array([[[0, 1]]])
    expected = (0.0 + np.log1p(np.exp(-1.0))) / 2
    with plain_path():
        loss = SoftmaxCrossEntropy()
        assert loss(scores, labels) == pytest.approx(expected, rel=1e-12)
        grad = loss.backward()
    close(grad[0, :, 0, 1], np.array([1 / (1 + np.e), -1 / (1 + np.e)]) / 2, rtol=1e-12)


def test_loss_names_the_first_label_equal_to_the_class_count_and_other_bad_arguments():
    scores = np.zeros((1, 3, 1, 2))
    with plain_path():
        with pytest.raises(
            ValueError,
            match=re.escape("label value 3 is out of range for 3 classes (expected 0..2 or "),
        ):
            SoftmaxCrossEntropy()(scores, np.array([[[3, 0]]]))
        with pytest.raises(ValueError, match="labels must be integers, got dtype float64"):
            SoftmaxCrossEntropy()(scores, np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'none'"):
        SoftmaxCrossEntropy(reduction="none")


def test_relu_passes_only_positive_values_and_their_gradient():
    x = np.array([-1.0, 0.0, 0.25, 2.0])
    relu = ReLU()
    close(relu(x), [0.0, 0.0, 0.25, 2.0])
    close(relu.backward(np.ones(4)), [0.0, 0.0, 1.0, 1.0])  # 0 at x == 0, as PyTorch


def test_scale_multiplies_values_and_gradients_by_its_factor():
    scale = Scale(0.5)
    y = scale(np.array([2.0, -4.0], dtype=np.float32))
    assert y.dtype == np.float32
    close(y, [1.0, -2.0])
    close(scale.backward(np.array([1.0, 3.0])), [0.5, 1.5])
    assert repr(scale) == "Scale(factor=0.5)"


def test_dropout_default_range_and_seeded_masks():
    assert Dropout().p == 0.5
    for p in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"Dropout: p must be in \[0, 1\), got {p}"):
            Dropout(p)
    x = np.ones((2, 3, 8, 8), dtype=np.float32)
    first, second = Dropout(0.5, rng=3)(x), Dropout(0.5, rng=3)(x)
    close(first, second)  # the same seed gives the same mask
    assert not np.array_equal(first, Dropout(0.5, rng=4)(x))


def test_crop_flush_with_the_bottom_right_edge_and_one_pixel_too_far_on_each_side():
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    ref = np.zeros((1, 1, 2, 2))
    close(Crop((2, 3))(x, ref), x[:, :, 2:4, 3:5])  # 2 + 2 == H, 3 + 2 == W: allowed
    for offset in [(3, 3), (2, 4), (-1, 0), (0, -1)]:
        with pytest.raises(ValueError, match=r"at offset .* of spatial size 4x5"):
            Crop(offset)(x, ref)


def test_max_pool_and_loss_reject_bad_arguments_and_empty_batches():
    for kw in ({"stride": 0}, {"padding": -1}, {"stride": 1.5}):
        with pytest.raises(ValueError, match="MaxPool2d: (stride|padding) must be an integer"):
            MaxPool2d(2, **kw)
    loss = SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="non-empty batch"):
        loss(np.zeros((0, 3, 4, 4), np.float32), np.zeros((0, 4, 4), np.int64))
    with pytest.raises(ValueError, match="floating-point"):
        loss(np.zeros((1, 3, 4, 4), np.int64), np.zeros((1, 4, 4), np.int64))


# ---------------------------------------------- the accelerated path's memory setting
def test_keep_freed_memory_takes_effect_on_glibc_and_not_on_the_plain_path():
    import platform

    from minifcn.accel.cpu import keep_freed_memory

    with plain_path():
        assert keep_freed_memory() is False
    with plain_path(False):
        assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


class _Mallopt:
    """A stand-in for the C library's mallopt: records its calls, answers from a list."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, param, value):
        self.calls.append((param, value))
        return self.answers.pop(0)


@pytest.mark.parametrize("answers,expected", [([1, 1], True), ([0, 1], False), ([1, 0], False)])
def test_keep_freed_memory_needs_both_thresholds_set(monkeypatch, answers, expected):
    import ctypes
    import types

    from minifcn.accel import cpu

    mallopt = _Mallopt(answers)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: types.SimpleNamespace(mallopt=mallopt))
    with plain_path(False):
        assert cpu.keep_freed_memory(1000) is expected
    assert mallopt.calls[0] == (cpu.M_MMAP_THRESHOLD, 1000)
    if len(mallopt.calls) > 1:
        param, value = mallopt.calls[1]
        assert param == cpu.M_TRIM_THRESHOLD and value >= 1000


def test_keep_freed_memory_is_false_without_mallopt(monkeypatch):
    import ctypes
    import types

    from minifcn.accel import cpu

    monkeypatch.setattr(ctypes, "CDLL", lambda name: types.SimpleNamespace())  # no mallopt
    with plain_path(False):
        assert cpu.keep_freed_memory() is False
