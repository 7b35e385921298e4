"""The stride oracle, the boundary band and the comparison table."""

import numpy as np
import pytest

from minifcn.analysis.oracle import (
    _hat_matrix,
    boundary_band,
    boundary_labels,
    model_grid,
    oracle_prediction,
    oracle_table,
)
from minifcn.commands.oracle import main as oracle_main
from minifcn.models import FCN8s, FCN32s, build_model


def _square(n=1, side=48, lo=12, hi=36):
    labels = np.zeros((n, side, side), dtype=np.int64)
    labels[:, lo:hi, lo:hi] = 1
    return labels


def test_hat_matrix_is_the_bilinear_transposed_conv():
    # Column c of the hat matrix is the bilinear kernel a ConvTranspose2d(2s, s) lays down
    # around a cell centred at s*c + s - 0.5 (before the crop); rows sum to 1 inside.
    from minifcn.nn import bilinear_weight

    s = 8
    centres = s * np.arange(6) + s - 0.5
    u = _hat_matrix(6 * s + s, centres, s)
    k = bilinear_weight(1, 1, 2 * s)[0, 0]
    kernel_1d = k[s - 1] / np.sqrt(k[s - 1, s - 1])  # the kernel is an outer product a a^T
    np.testing.assert_allclose(u[s * 2 : s * 2 + 2 * s, 2], kernel_1d, atol=1e-6)
    np.testing.assert_allclose(u[s : 5 * s].sum(axis=1), 1.0, atol=1e-6)


def test_a_fine_grid_recovers_the_labels_and_a_coarse_one_cannot():
    labels = _square()
    exact = oracle_prediction(labels, 1, 2)
    assert np.array_equal(exact, labels)
    coarse = oracle_prediction(labels, 32, 2)
    assert (coarse != labels).any()


def test_fitting_beats_class_shares():
    rng = np.random.default_rng(0)
    labels = np.zeros((4, 64, 64), dtype=np.int64)
    for i in range(4):
        r, c = rng.integers(8, 40, 2)
        labels[i, r : r + 14, c : c + 14] = 1 + i % 2
    fitted = (oracle_prediction(labels, 16, 3) == labels).mean()
    shares = (oracle_prediction(labels, 16, 3, fit=False) == labels).mean()
    assert fitted >= shares


def test_ignored_pixels_count_for_no_class():
    labels = _square()
    labels[:, :4] = 255
    pred = oracle_prediction(labels, 4, 2)
    assert pred.shape == labels.shape and set(np.unique(pred)) <= {0, 1}


def test_boundary_band_widths():
    labels = _square(side=40, lo=10, hi=30)
    one, three = boundary_band(labels, 1), boundary_band(labels, 3)
    assert one[0, 10, 20] and one[0, 9, 20] and not one[0, 11, 20] and not one[0, 8, 20]
    assert three[0, 7, 20] and three[0, 12, 20] and not three[0, 6, 20] and not three[0, 13, 20]
    assert (one <= three).all()
    edge = boundary_labels(labels, 3)
    assert (edge[~three] == 255).all() and (edge[three] == labels[three]).all()


def test_model_grid_follows_the_geometry():
    # FCN-32s upsamples score_fr (stride 32), FCN-8s fuse_pool3 (stride 8); the centres
    # come from the coordinate maps, so they move with the first padding.
    m32 = build_model("fcn32s", 5, "mini")
    stride, centres = model_grid(m32, 96)
    cmap = m32.coordinate_maps()["score_fr"]
    assert stride == 32 and len(centres) == m32.blob_sizes(96)["score_fr"]
    assert centres[0] == float(cmap.shift)
    stride8, centres8 = model_grid(FCN8s(5, "mini"), 96)
    assert stride8 == 8 and np.allclose(np.diff(centres8), 8)


def test_the_mini_fcn32s_has_a_grid_not_a_single_cell():
    # On the default 96x96 shapes images FCN-32s gets several score cells, not one: the mini
    # backbone pads conv1_1 by 26 for that (models/config.py).
    _, centres = model_grid(FCN32s(5, "mini"), 96)
    inside = [c for c in centres if 0 <= c < 96]
    assert len(inside) >= 3


def test_oracle_table_orders_strides():
    rng = np.random.default_rng(1)
    labels = np.zeros((3, 64, 64), dtype=np.int64)
    for i in range(3):
        r, c = rng.integers(4, 30, 2)
        labels[i, r : r + 24, c : c + 6] = 1  # a bar 6 px wide
        labels[i, r : r + 6, c : c + 24] = 1  # and another across: an L
    rows = oracle_table(labels, [("a", 32, None), ("b", 8, None), ("c", 2, None)], 2, steps=30)
    ious = [r["mean_iu"] for r in rows]
    assert ious[0] < ious[1] < ious[2]
    assert all(r["boundary_iu"] <= r["mean_iu"] + 1e-9 for r in rows)


def test_oracle_command_prints_one_row_per_grid(capsys):
    oracle_main(["--size", "4", "--steps", "5", "--strides", "4"])
    out = capsys.readouterr().out
    for name in ("fcn32s", "fcn16s", "fcn8s", "stride 4"):
        assert name in out
    assert "3x3" in out  # FCN-32s's score_fr on a 96-pixel side


def test_compare_reports_training_kind_and_oracle(tmp_path, capsys):
    from minifcn.commands.compare import main as compare_main
    from minifcn.models.checkpoint import save_checkpoint

    m = build_model("fcn32s", 5, "mini", rng=0)
    save_checkpoint(tmp_path / "a.npz", m, meta={"args": {"epochs": 2}})
    m8 = build_model("fcn8s", 5, "mini", rng=0)
    save_checkpoint(
        tmp_path / "b.npz", m8, meta={"args": {"epochs": 3, "init_from": str(tmp_path / "a.npz")}}
    )
    fig = tmp_path / "f.png"
    rows = compare_main(
        [str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--val-size", "3", "--figure", str(fig)]
    )
    out = capsys.readouterr().out
    assert "FCN-32s" in out and "FCN-8s" in out and "staged from" in out
    assert rows[0]["training"] == "scratch" and rows[1]["epochs"] == 5  # 3 + the 2 before
    assert rows[0]["grid"] == 3 and rows[1]["stride"] == 8
    assert fig.stat().st_size > 0


@pytest.mark.parametrize("bad", [0, -1])
def test_stride_must_be_positive(bad):
    with pytest.raises(ValueError, match="stride must be >= 1"):
        oracle_prediction(_square(), bad, 2)
