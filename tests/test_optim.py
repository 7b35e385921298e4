"""SGD, Adam and the learning-rate schedules, against updates worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minifcn.nn.parameter import Parameter
from minifcn.optim import SGD, Adam, ConstantLR, PolyLR, StepLR


def _weight_and_bias(value=1.0):
    """A (1, 1) weight (decayed) and a (1,) bias (not decayed), both float32."""
    return (
        Parameter(np.full((1, 1), value, dtype=np.float32)),
        Parameter(np.full((1,), value, dtype=np.float32)),
    )


def _set_grad(params, g):
    for p in params:
        p.grad[...] = g


def test_sgd_momentum_and_weight_decay_by_hand():
    w, b = _weight_and_bias(1.0)
    opt = SGD([w, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    _set_grad([w, b], 0.5)
    opt.step()
    # weight: d = 0.5 + 0.1 * 1.0 = 0.6, buf = 0.6, w = 1 - 0.1 * 0.6 = 0.94
    # bias:   d = 0.5 (no decay),      buf = 0.5, b = 1 - 0.05 = 0.95
    assert w.data[0, 0] == pytest.approx(0.94, abs=1e-6)
    assert b.data[0] == pytest.approx(0.95, abs=1e-6)
    opt.step()
    # weight: d = 0.5 + 0.1 * 0.94 = 0.594, buf = 0.9 * 0.6 + 0.594 = 1.134, w = 0.94 - 0.1134
    # bias:   buf = 0.9 * 0.5 + 0.5 = 0.95, b = 0.95 - 0.095
    assert w.data[0, 0] == pytest.approx(0.8266, abs=1e-6)
    assert b.data[0] == pytest.approx(0.855, abs=1e-6)
    assert w.data.dtype == np.float32 and b.data.dtype == np.float32


def test_plain_sgd_is_gradient_step():
    w, _ = _weight_and_bias(2.0)
    opt = SGD([w], lr=0.5)
    _set_grad([w], 1.0)
    opt.step()
    assert w.data[0, 0] == pytest.approx(1.5)
    assert opt.state == {}  # no momentum buffer kept


def test_adam_two_steps_by_hand():
    w, b = _weight_and_bias(1.0)
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    opt = Adam([w, b], lr=lr, betas=(b1, b2), eps=eps)
    expected = 1.0
    m = v = 0.0
    for t, g in enumerate((0.5, -1.0), start=1):
        _set_grad([w, b], g)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected -= lr / (1 - b1**t) * m / (math.sqrt(v) / math.sqrt(1 - b2**t) + eps)
    # step 1 moves by lr against the gradient's sign; step 2 reverses: 0.9, then 0.93661
    assert expected == pytest.approx(0.936611, abs=1e-6)
    assert w.data[0, 0] == pytest.approx(expected, abs=1e-6)
    assert b.data[0] == pytest.approx(expected, abs=1e-6)
    assert opt.state[0]["step"] == 2 and w.data.dtype == np.float32


def test_adam_weight_decay_skips_biases():
    w, b = _weight_and_bias(1.0)
    opt = Adam([w, b], lr=0.1, weight_decay=1.0)
    _set_grad([w, b], -0.1)  # the decay term (+1.0) outweighs the gradient for w only
    opt.step()
    assert w.data[0, 0] < 1.0 < b.data[0]


def test_frozen_parameters_are_untouched():
    w, b = _weight_and_bias(1.0)
    w.requires_grad = False
    for opt in (SGD([w, b], lr=0.1, momentum=0.9, weight_decay=0.1), Adam([w, b], lr=0.1)):
        _set_grad([w, b], 1.0)
        opt.step()
        assert w.data[0, 0] == 1.0 and 0 not in opt.state
    assert b.data[0] < 1.0


def test_zero_grad_and_lr_is_settable():
    w, b = _weight_and_bias(1.0)
    opt = SGD([w, b], lr=0.1)
    _set_grad([w, b], 3.0)
    opt.zero_grad()
    assert w.grad[0, 0] == 0 and b.grad[0] == 0
    opt.lr = 0.5
    _set_grad([w, b], 1.0)
    opt.step()
    assert b.data[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda ps: Adam(ps, lr=0.01, weight_decay=1e-3),
    ],
)
def test_state_dict_round_trip_resumes_exactly(make):
    rng = np.random.default_rng(0)
    shapes = [(3, 2, 2, 2), (3,)]
    params = [Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    opt = make(params)
    for g in grads[:2]:
        for p, gi in zip(params, g, strict=True):
            p.grad[...] = gi
        opt.step()
    saved = opt.state_dict()
    for entries in saved["state"].values():
        for v in entries.values():
            assert isinstance(v, (np.ndarray, int, float))
    clones = [Parameter(p.data.copy()) for p in params]
    resumed = make(clones)
    resumed.lr = 123.0  # restored from the state dict
    resumed.load_state_dict(saved)
    assert resumed.lr == opt.lr
    for g in grads[2:]:
        for p, c, gi in zip(params, clones, g, strict=True):
            p.grad[...] = gi
            c.grad[...] = gi
        opt.step()
        resumed.step()
    for p, c in zip(params, clones, strict=True):
        np.testing.assert_array_equal(p.data, c.data)


def test_load_state_dict_rejects_wrong_shape():
    w, b = _weight_and_bias(1.0)
    opt = SGD([w, b], lr=0.1, momentum=0.9)
    bad = {"hyperparameters": {}, "state": {0: {"momentum_buffer": np.zeros((2, 2))}}}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)


def test_bad_arguments_are_refused():
    w, _ = _weight_and_bias()
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        SGD([w], lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam([w], betas=(1.0, 0.999))


def test_schedules():
    assert ConstantLR(0.1)(1000) == 0.1
    step = StepLR(1.0, step_size=10, gamma=0.5)
    assert [step(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    poly = PolyLR(1.0, max_iter=100, power=0.9)
    assert poly(0) == 1.0 and poly(100) == 0.0 and poly(500) == 0.0
    assert poly.lr_at(50) == pytest.approx(0.5**0.9)
