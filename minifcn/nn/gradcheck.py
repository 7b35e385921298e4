"""Numerical gradient checks: proof that a hand-written backward pass is right.

The analytic gradient from ``backward`` is compared with central differences

    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h),   L = sum(f(x) * dout),

where ``dout`` is a fixed random upstream gradient (for a layer whose output is
not a scalar). Use float64: in float32 the rounding error of the differences
swamps the comparison. Agreement to ~1e-7 or better means the backward pass is
right.
"""

from __future__ import annotations

import numpy as np

from minifcn.backend import as_numpy, get_array_module


def rel_error(a, b) -> float:
    """max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|)  (0 means identical)."""
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def _weighted_sum(out, dout) -> float:
    if dout is None:
        return float(out)
    return float((out * dout).sum())


def numerical_gradient(f, x, dout=None, h: float = 1e-5, indices=None):
    """Central-difference gradient of ``sum(f() * dout)`` with respect to array ``x``.

    ``f`` takes no arguments and reads ``x`` (modified in place here and
    restored). ``indices`` (flat positions) limits the check to a sample;
    entries not sampled are returned as NaN. Returns an array like ``x``.
    """
    if x.dtype != np.float64:
        raise ValueError(f"numerical_gradient needs float64 arrays, got {x.dtype}")
    grad = np.full(x.shape, np.nan)
    flat = x.reshape(-1)  # a view: writes go into x
    for i in range(flat.size) if indices is None else indices:
        old = float(flat[i])
        flat[i] = old + h
        plus = _weighted_sum(f(), dout)
        flat[i] = old - h
        minus = _weighted_sum(f(), dout)
        flat[i] = old
        grad.reshape(-1)[i] = (plus - minus) / (2 * h)
    return grad


def _sample(size, max_checks, rng):
    if max_checks is None or size <= max_checks:
        return None
    return rng.choice(size, max_checks, replace=False)


def gradcheck(
    module,
    *inputs,
    forward_kwargs=None,
    seed: int = 0,
    h: float = 1e-5,
    max_checks: int | None = None,
    before_forward=None,
) -> dict:
    """Check ``module.backward`` against central differences.

    Args:
        module: a Module whose parameters are float64 (``module.astype(np.float64)``).
        inputs: the float64 arrays passed to ``forward``; non-float inputs (labels)
            are passed through and not checked.
        max_checks: check at most this many randomly chosen entries per array
            (whole networks); None checks every entry.
        before_forward: called before every forward (e.g. to reset a dropout
            generator so every evaluation uses the same mask).
    Returns:
        {name: relative error} for "input0", "input1", ... and every parameter
        that requires a gradient, by its dotted name. Use ``max(result.values())``.
    """
    forward_kwargs = forward_kwargs or {}
    rng = np.random.default_rng(seed)

    def run():
        if before_forward is not None:
            before_forward()
        return module.forward(*inputs, **forward_kwargs)

    out = run()
    xp = get_array_module(out) if not np.isscalar(out) else np
    dout = None if np.isscalar(out) else xp.asarray(rng.standard_normal(out.shape))
    module.zero_grad()
    grads_in = module.backward() if dout is None else module.backward(dout)
    if not isinstance(grads_in, tuple):
        grads_in = (grads_in,)

    def f():
        return run()

    errors = {}
    float_inputs = [x for x in inputs if getattr(x, "dtype", np.dtype(int)).kind == "f"]
    for k, (x, g) in enumerate(zip(float_inputs, grads_in)):
        idx = _sample(x.size, max_checks, rng)
        num = numerical_gradient(f, x, dout, h, idx)
        errors[f"input{k}"] = _compare(g, num)
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        analytic = p.grad.copy()
        idx = _sample(p.data.size, max_checks, rng)
        num = numerical_gradient(f, p.data, dout, h, idx)
        errors[name] = _compare(analytic, num)
    return errors


def _compare(analytic, numeric) -> float:
    analytic = as_numpy(analytic)
    checked = ~np.isnan(numeric)
    return rel_error(analytic[checked], numeric[checked])
