"""--recipe paper: the reference solver's settings; its step equals the default's up to scale.

The paper trains on the *summed* per-pixel loss with SGD at 1e-10 / 1e-12 / 1e-14 (FCN-32s /
16s / 8s), momentum 0.99, weight decay 5e-4, batch 1 and fixed bilinear upsampling; this
project's default is the mean loss with Adam. The summed loss's gradient is P times the
mean's (P labelled pixels), so SGD at lr on the sum is SGD at lr * P on the mean, and Adam's
step does not change when the loss is scaled.
"""

import numpy as np
import pytest

from minifcn.commands.train import parse_args, train
from minifcn.data import ShapesDataset
from minifcn.models import FCN32s
from minifcn.models.checkpoint import load_checkpoint
from minifcn.nn import ConvTranspose2d, SoftmaxCrossEntropy
from minifcn.optim import SGD, Adam
from minifcn.training.recipe import PAPER_LR, apply_recipe, loss_reduction
from minifcn.training.setup import set_up

TINY = ["--train-size", "4", "--val-size", "2", "--epochs", "1", "--no-progress"]


def _set_up(tmp_path, argv):
    from minifcn.commands.train import given_flags

    args = parse_args(argv + ["--out", str(tmp_path / "run")])
    run = set_up(args, given_flags(argv), parse_args([]))
    return run


@pytest.mark.parametrize("model", ["fcn32s", "fcn16s", "fcn8s"])
def test_paper_recipe_sets_the_reference_solver_for_each_stage(model, tmp_path):
    run = _set_up(tmp_path, ["--recipe", "paper", "--model", model, *TINY])
    try:
        args = run.args
        assert (args.optimizer, args.lr, args.momentum, args.weight_decay) == (
            "sgd",
            PAPER_LR[model],
            0.99,
            5e-4,
        )
        assert args.batch_size == 1 and args.schedule == "constant"
        assert isinstance(run.opt, SGD) and run.opt.momentum == 0.99
        assert run.schedule(0) == PAPER_LR[model] == run.schedule(1000)
        assert run.loss_fn.reduction == "sum"
        ups = [m for _, m in run.model.children() if isinstance(m, ConvTranspose2d)]
        assert ups and all(not m.weight.requires_grad for m in ups)
    finally:
        run.folder.close(remove_if_unused=True)
    assert PAPER_LR == {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}


def test_default_recipe_is_the_mean_loss_with_adam(tmp_path):
    run = _set_up(tmp_path, TINY)
    try:
        assert isinstance(run.opt, Adam) and run.loss_fn.reduction == "mean"
        assert run.args.batch_size == 2 and not run.model.freeze_upsampling
    finally:
        run.folder.close(remove_if_unused=True)


def test_flags_typed_with_the_paper_recipe_win():
    args = parse_args(["--recipe", "paper", "--lr", "1e-9", "--batch-size", "2"])
    apply_recipe(args, {"lr", "batch_size", "recipe"})
    assert (args.lr, args.batch_size, args.optimizer, args.momentum) == (1e-9, 2, "sgd", 0.99)
    assert loss_reduction(args) == "sum"


def _one_step(reduction, opt_cls, lr, **kw):
    """One optimiser step of a mini FCN-32s (float64) on two shapes images; the new weights."""
    data = ShapesDataset("train", size=2, image_size=64)
    x = np.stack([data[i][0] for i in range(2)]).astype(np.float64)
    y = np.stack([data[i][1] for i in range(2)])
    model = FCN32s(data.num_classes, "mini", rng=0).astype(np.float64).eval()
    for _, p in model.named_parameters():  # score_fr starts at zero; give it a gradient path
        p.data += 0.01
    loss = SoftmaxCrossEntropy(reduction=reduction)
    opt = opt_cls(model.parameters(), lr=lr, **kw)
    loss(model(x), y)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    opt.step()
    return {n: p.data.copy() for n, p in model.named_parameters()}, int((y != 255).sum())


def test_sgd_on_the_summed_loss_is_sgd_on_the_mean_at_lr_times_pixels():
    pixels = _one_step("sum", SGD, 1.0)[1]
    summed, _ = _one_step("sum", SGD, 1e-7)
    mean, _ = _one_step("mean", SGD, 1e-7 * pixels)
    for name in summed:
        np.testing.assert_allclose(summed[name], mean[name], rtol=1e-9, atol=1e-15, err_msg=name)
    other, _ = _one_step("mean", SGD, 1e-7)  # the same lr on the mean is a far smaller step
    assert any(not np.allclose(other[n], summed[n], rtol=1e-9, atol=1e-15) for n in summed)


def test_adam_takes_the_same_step_on_the_summed_and_the_mean_loss():
    summed, _ = _one_step("sum", Adam, 1e-3, eps=1e-30)
    mean, _ = _one_step("mean", Adam, 1e-3, eps=1e-30)
    for name in summed:
        np.testing.assert_allclose(summed[name], mean[name], rtol=1e-7, atol=1e-12, err_msg=name)


def test_a_paper_recipe_run_trains_and_records_its_recipe(tmp_path, capsys):
    summary = train(["--recipe", "paper", "--model", "fcn32s", *TINY, "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "sgd lr 1e-10" in out and "recipe paper: summed loss" in out
    assert np.isfinite(summary["best_mean_iu"])
    _, meta, _ = load_checkpoint(tmp_path / "r" / "last.npz")
    assert meta["args"]["recipe"] == "paper" and meta["args"]["lr"] == 1e-10
    resumed = parse_args(["--out", str(tmp_path / "r"), "--resume", "--epochs", "2"])
    run = set_up(resumed, {"out", "resume", "epochs"}, parse_args([]))
    try:  # a resumed run keeps the recipe, its summed loss included
        assert run.loss_fn.reduction == "sum" and run.args.lr == 1e-10
    finally:
        run.folder.close(remove_if_unused=True)
