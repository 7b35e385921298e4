"""The batch split (minifcn.accel.split): a training step as two fixed halves, the second
in a helper process. It is the whole batch's step up to rounding, and gives the same
bits with the helper, without it, and when the helper is lost."""

from __future__ import annotations

import numpy as np
import pytest

from minifcn import dispatch
from minifcn.accel import split, threads
from minifcn.models import FCN8s
from minifcn.nn import SoftmaxCrossEntropy
from minifcn.nn.dropout import RowsOfBatch
from minifcn.nn.loss import softmax_xent, softmax_xent_backward
from minifcn.optim import SGD
from minifcn.training.step import TrainStep


def _on_threads(count: int, monkeypatch) -> threads.CpuThreads:
    fixed = threads.CpuThreads(environ={"MINIFCN_THREADS": str(count)}).start()
    monkeypatch.setattr(threads, "_PROCESS", fixed)
    return fixed


def _batch(n: int, side: int = 40, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, side, side)).astype(np.float32)
    labels = rng.integers(0, classes, (n, side, side)).astype(np.uint8)
    labels[:, :5] = 255  # some ignored pixels, a different share in each image
    labels[-1, :, :9] = 255
    return x, labels


def _train(step_fn, model, x, labels, steps: int = 3) -> list:
    """Gradients and loss of each of ``steps`` SGD steps, then the weights and the dropout
    generators' states."""
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = step_fn(x, labels)
        out += [p.grad.copy() for p in model.parameters()] + [np.float64(loss)]
        opt.step()
    return out + [p.data.copy() for p in model.parameters()] + [model.rng_state()]


def _whole(model, loss_fn):
    def step(x, labels):
        loss = loss_fn(model(x), labels)
        model.backward(loss_fn.backward(), input_grad=False)
        return loss

    return step


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_halves_are_the_whole_batch_step_up_to_rounding(reduction, monkeypatch):
    """Float64, dropout on, an odd batch (the first half gets the odd image), ignored
    pixels unevenly spread: loss, every gradient and the weights after three steps agree
    to rounding, and the dropout generators end exactly where the whole batch leaves them."""
    _on_threads(1, monkeypatch)
    x, labels = _batch(3)
    x = x.astype(np.float64)
    runs = []
    for halves in (False, True):
        model = FCN8s(5, config="mini", rng=0).astype(np.float64)
        model.train()
        loss_fn = SoftmaxCrossEntropy(reduction=reduction)
        fn = TrainStep(model, loss_fn) if halves else _whole(model, loss_fn)
        runs.append(_train(fn, model, x, labels))
    whole, halved = runs
    assert whole[-1] == halved[-1]  # the dropout generators' states
    nonzero = 0
    for a, b in zip(whole[:-1], halved[:-1]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-13)
        nonzero += bool(np.any(a != 0))
    assert nonzero > 60


def test_the_halves_draw_the_whole_batchs_dropout_masks():
    rng = np.random.default_rng(3)
    want = np.random.default_rng(3).random((5, 2, 3), dtype=np.float32)
    first, second = split.halves(5)
    assert (first, second) == (slice(0, 3), slice(3, 5))
    state = rng.bit_generator.state
    got = [RowsOfBatch(rng, 5, first.start).random((3, 2, 3), dtype=np.float32)]
    rng.bit_generator.state = state
    got.append(RowsOfBatch(rng, 5, second.start).random((2, 2, 3), dtype=np.float32))
    np.testing.assert_array_equal(np.concatenate(got), want)


def _kill(helper) -> None:
    helper.proc.kill()
    helper.proc.wait()


def _split_run(monkeypatch, count, x, labels, freeze=False, kill_before=None, kill_in=None):
    """Four SGD steps on ``count`` threads (see ``_train``), the steps' helpers and the
    thread counts each half ran on; the helper killed before step ``kill_before`` or
    during this process's half of step ``kill_in``."""
    _on_threads(count, monkeypatch)
    model = FCN8s(5, config="mini", rng=0, freeze_upsampling=freeze)
    model.train()
    step = TrainStep(model, SoftmaxCrossEntropy())
    calls, pools = [], []
    run_half = split.run_half

    def spy(*args):  # the threads this process's pool runs a half on
        pools.append(threads.adapt_threads().pool_threads)
        if kill_in is not None and len(calls) == kill_in and pools[-1] == 1:
            _kill(step._split._helper)
        return run_half(*args)

    monkeypatch.setattr(split, "run_half", spy)

    def fn(x, labels):
        calls.append(step._split._helper)
        if len(calls) == kill_before:
            _kill(step._split._helper)
        return step(x, labels)

    try:
        return _train(fn, model, x, labels, steps=4), calls, pools
    finally:
        step.close()


@pytest.mark.parametrize("freeze", [False, True])
def test_the_helper_process_gives_the_bits_of_one_process(freeze, monkeypatch):
    """Float32, four SGD steps of batch 5 with dropout: on two threads the helper runs the
    second half; on one this process runs both. Every gradient, loss, weight and
    generator state is the same bits (frozen upsampling weights included)."""
    x, labels = _batch(5)
    alone, calls, pools = _split_run(monkeypatch, 1, x, labels, freeze)
    assert calls == [None] * 4 and pools == [1] * 8  # both halves here, on the one thread
    helped, calls, pools = _split_run(monkeypatch, 2, x, labels, freeze)
    assert calls[0] is None and all(c is calls[1] for c in calls[1:]) and calls[1] is not None
    assert pools == [1] * 4  # the first half here, beside the helper: one thread each
    assert alone[-1] == helped[-1]
    for a, b in zip(alone[:-1], helped[:-1]):
        assert np.array_equal(a, b)
        assert a.dtype == b.dtype


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_lost_helper_costs_time_not_results(when, monkeypatch, capsys):
    """Killed before step 3 it is found lost when the step hands it its half; killed while
    this process runs its own half, when the step waits for its reply (then this process
    runs the second half itself). From then on both halves run here, on both threads."""
    x, labels = _batch(4)
    alone, _, _ = _split_run(monkeypatch, 1, x, labels)
    kill = dict(kill_before=3) if when == "before" else dict(kill_in=3)
    helped, calls, pools = _split_run(monkeypatch, 2, x, labels, **kill)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "helper process stopped: it ended" in err
    assert "this process runs both halves" in err
    assert calls[1] is calls[2] is not None and calls[3] is None
    assert pools == ([1, 1, 2, 2, 2, 2] if when == "before" else [1, 1, 1, 2, 2, 2])
    for a, b in zip(alone[:-1], helped[:-1]):
        assert np.array_equal(a, b)


def _grads_after(step, model, x, labels, bad=()):
    """The gradients of a step on ``labels`` after steps on each of ``bad`` (which raise)."""
    for labels_ in bad:
        with pytest.raises(ValueError, match="label value 7 is out of range for 5 classes"):
            step(x, labels_)
    model.zero_grad()
    step(x, labels)
    return [p.grad.copy() for p in model.parameters()]


def test_a_bad_label_in_either_half_is_refused_as_in_the_whole_batch(monkeypatch):
    """In the second half the helper fails and this process, running the half again,
    raises the loss's own error; the helper is not to blame and stays. In the first half
    the error comes out while the helper still works; its late reply is passed over."""
    x, labels = _batch(4)
    late, early = labels.copy(), labels.copy()
    late[3, 20, 20] = 7
    early[0, 20, 20] = 7
    _on_threads(1, monkeypatch)
    model = FCN8s(5, config="mini", rng=0).eval()  # no dropout draws in the failed steps
    want = _grads_after(TrainStep(model, SoftmaxCrossEntropy()), model, x, labels)
    _on_threads(2, monkeypatch)
    model = FCN8s(5, config="mini", rng=0).eval()
    step = TrainStep(model, SoftmaxCrossEntropy())
    try:
        step(x, labels)
        helper = step._split._helper
        assert helper is not None
        got = _grads_after(step, model, x, labels, bad=(late, early, late))
        assert step._split._helper is helper
    finally:
        step.close()
    assert len(got) == len(want) and any(np.any(g != 0) for g in want)
    for a, b in zip(want, got):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("why", ["no interpreter", "no model", "a model pickle refuses"])
def test_a_helper_that_cannot_start_leaves_the_halves_here(why, monkeypatch, capsys):
    _on_threads(2, monkeypatch)
    if why == "no interpreter":
        monkeypatch.setattr(split.sys, "executable", "/nonexistent/python")
        said = "/nonexistent/python"
    elif why == "no model":  # the helper starts, but what it gets is not a model
        monkeypatch.setattr(split, "_replica_bytes", lambda model: b"not a pickle")
        said = "RuntimeError: the model did not load here: UnpicklingError"
    else:
        said = "lambda"
    x, labels = _batch(2)
    model = FCN8s(5, config="mini", rng=0)
    if why == "a model pickle refuses":
        model.score_fr.note = lambda: "a user's own attribute"
    step = TrainStep(model, SoftmaxCrossEntropy())
    step(x, labels)
    step(x, labels)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not start" in err and said in err
    assert step._split._helper is None


def test_what_is_not_split(monkeypatch):
    x, _ = _batch(2)
    assert split.splits(x)
    assert not split.splits(x[:1])  # one image
    with monkeypatch.context() as m:
        m.setenv("MINIFCN_ACCEL", "0")
        assert not split.splits(x)  # the plain path runs the batch whole
    fns = dict(softmax_xent=softmax_xent, softmax_xent_backward=softmax_xent_backward)
    with dispatch.use(**fns):  # a helper could not see the functions given here
        assert not split.splits(x)
    assert not split.splits(list(x))
    runs = []  # TrainStep(split=False), as the ranks make it, runs the batch whole
    for make in (lambda m, f: TrainStep(m, f, split=False), _whole):
        model, loss_fn = FCN8s(5, config="mini", rng=0), SoftmaxCrossEntropy()
        runs.append(_train(make(model, loss_fn), model, *_batch(2), steps=2))
    for a, b in zip(runs[0][:-1], runs[1][:-1]):
        assert np.array_equal(a, b)


def test_the_pool_runs_on_the_threads_not_lent_to_the_helper(monkeypatch):
    from minifcn.accel import workers

    state = _on_threads(3, monkeypatch)
    assert state.pool_threads == 3 and workers.workers().active == 3
    state.lent = 2
    assert state.pool_threads == 1 and workers.workers().active == 1
    assert workers.workers().threads == 3  # the pool keeps its threads
    state.lent = 5
    assert state.pool_threads == 1
    state.fix(4)
    state.lent = 0
    assert (state.threads, state.fixed, state.adaptive) == (4, 4, False)


def test_the_helper_waits_while_the_load_leaves_one_thread(monkeypatch):
    """With the count following the idle cores, a machine whose other programs leave one
    core idle runs both halves here (a helper would have no core of its own); once two
    are idle again the helper starts."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    state = threads.CpuThreads(environ={}).start()
    monkeypatch.setattr(threads, "_PROCESS", state)
    state.threads, state.interval = 1, 1e9  # as a busy machine leaves it
    assert state.adaptive
    x, labels = _batch(2)
    model = FCN8s(5, config="mini", rng=0)
    step = TrainStep(model, SoftmaxCrossEntropy())
    step(x, labels)
    assert step.helper_pid is None
    state.threads = 2  # the other program has gone
    try:
        step(x, labels)
        assert step.helper_pid is not None
    finally:
        step.close()
    assert step.helper_pid is None


def _changing_run(monkeypatch, count: int) -> tuple[list, object]:
    """Steps between which the model changes: a one-image step (not split: the dropout
    generators move on in this process alone), evaluation mode, a frozen weight."""
    _on_threads(count, monkeypatch)
    model = FCN8s(5, config="mini", rng=0)
    model.train()
    step = TrainStep(model, SoftmaxCrossEntropy())
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, labels = _batch(4)
    out = []

    def record():  # the gradients, then an SGD step (the backbone's become non-zero)
        out.extend(p.grad.copy() for p in model.parameters())
        opt.step()
        opt.zero_grad()

    try:
        for change in ("first", "one image", "eval", "train, frozen"):
            if change == "one image":
                step(x[:1], labels[:1])
                record()
            elif change == "eval":
                model.eval()
            elif change == "train, frozen":
                model.train()
                model.conv1_1.weight.requires_grad = False
            step(x, labels)
            record()
        helper = step._split._helper
        frozen = [i for i, p in enumerate(model.parameters()) if not p.requires_grad]
        left = None if helper is None else [helper.grads[i].copy() for i in frozen]
        return out + [model.rng_state()], left
    finally:
        step.close()


def test_the_helper_follows_the_model_between_steps(monkeypatch):
    alone, _ = _changing_run(monkeypatch, 1)
    helped, frozen_grads = _changing_run(monkeypatch, 2)
    assert alone[-1] == helped[-1]
    for a, b in zip(alone[:-1], helped[:-1]):
        assert np.array_equal(a, b)
    assert frozen_grads and all(not np.any(g) for g in frozen_grads)  # not even computed
    last = alone[-40:-1]  # the last step's gradients (the mini FCN-8s has 39 parameters)
    assert not np.any(last[0]) and np.any(last[1])  # conv1_1: frozen weight, learning bias
