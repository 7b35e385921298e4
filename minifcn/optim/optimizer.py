"""What every optimiser shares: the parameter list, zero_grad, and state dicts."""

from __future__ import annotations

import math

import numpy as np

from ..backend import as_numpy, cuda_kernels_enabled, get_array_module
from .packed import Packing, packable


class Optimizer:
    """Base class. Subclasses implement ``step()`` and keep per-parameter state in
    ``self.state[i]`` (a dict of arrays on the parameter's device and Python scalars),
    where ``i`` is the parameter's position in ``self.params``.

    Two ways to step, with the same arithmetic: on NumPy (and with
    ``MINIFCN_CUDA_KERNELS=0``) a loop over the parameters, a few array operations
    each, the code to read; on the GPU one fused kernel over flat buffers (see
    ``packed.py``): every parameter, gradient and state array becomes a view of one
    buffer, ``step`` is one launch and ``zero_grad`` one fill, whatever the number of
    parameters. Subclasses name their state arrays in ``state_arrays``.

    Args:
        params: an iterable of ``Parameter`` (e.g. ``model.parameters()``).
        lr: learning rate; a plain attribute, so a schedule may set ``opt.lr`` each step.
        weight_decay: L2 penalty coefficient, applied only to parameters with
            ``data.ndim > 1`` (weights; biases are not decayed).

    Parameters with ``requires_grad == False`` are frozen: ``step`` leaves them alone.
    """

    hyperparameters: tuple[str, ...] = ("lr", "weight_decay")
    state_arrays: tuple[str, ...] = ()  # the per-parameter state arrays the fused step packs

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for p in self.params:
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise ValueError(f"{type(self).__name__} expects Parameters, got {type(p)}")
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"learning rate must be finite and >= 0, got {lr}")
        if not math.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.state: dict[int, dict] = {}
        self._packing: Packing | None = None

    def packing(self) -> Packing | None:
        """The flat buffers of the fused GPU step, packed on first use and again when
        an array was replaced; None for the per-parameter loop (NumPy arrays, the
        plain path, or parameters of mixed dtypes)."""
        first = self.params[0].data
        if get_array_module(first) is np or not cuda_kernels_enabled():
            self._packing = None
        elif not packable(self.params):
            self._packing = None
        elif (
            self._packing is None
            or set(self._packing.buffers) != set(self.state_arrays)
            or not self._packing.holds(self.params, self.state)
        ):
            self._packing = Packing(self.params, self.state, self.state_arrays)
        return self._packing

    def hyper_table(self, rows: list, dtype):
        """The per-parameter values a fused kernel reads, as one device array (one copy
        to the device a step: nothing that changes per step is a kernel argument)."""
        xp = get_array_module(self.params[0].data)
        return xp.asarray(np.asarray(rows, dtype=np.float64).astype(dtype))

    def trainable(self):
        """(index, parameter) for every parameter that is not frozen."""
        for i, p in enumerate(self.params):
            if p.requires_grad:
                yield i, p

    def gradient(self, p):
        """The gradient to use for ``p``: ``p.grad`` plus weight decay for weights."""
        if self.weight_decay and p.data.ndim > 1:
            return p.grad + self.weight_decay * p.data
        return p.grad

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0 (one fill of the packed buffer on the GPU)."""
        packing = self.packing()
        if packing is not None:
            packing.grad.fill(0)
            return
        for p in self.params:
            p.grad[...] = 0

    def state_dict(self) -> dict:
        """Hyperparameters and per-parameter state as NumPy arrays and Python scalars.

        ``{"hyperparameters": {...}, "state": {index: {name: array or scalar}}}``.
        """
        return {
            "hyperparameters": {k: getattr(self, k) for k in self.hyperparameters},
            "state": {
                i: {k: as_numpy(v).copy() if hasattr(v, "shape") else v for k, v in s.items()}
                for i, s in self.state.items()
            },
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict`` returned, onto each parameter's device and dtype."""
        for k, v in state_dict["hyperparameters"].items():
            if k not in self.hyperparameters:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {k!r}")
            setattr(self, k, v)
        state = {}
        for key, entries in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(self.params):
                raise ValueError(
                    f"optimiser state for parameter {i}, but there are {len(self.params)}"
                )
            p = self.params[i]
            xp = get_array_module(p.data)
            state[i] = {}
            for k, v in entries.items():
                if getattr(v, "ndim", None) == 0:  # a scalar saved as a 0-d array (np.savez)
                    v = v.item()
                if hasattr(v, "shape"):
                    if tuple(v.shape) != tuple(p.data.shape):
                        raise ValueError(
                            f"optimiser state {k!r} of parameter {i} has shape {tuple(v.shape)}, "
                            f"parameter has {tuple(p.data.shape)}"
                        )
                    v = xp.asarray(as_numpy(v), dtype=p.data.dtype).copy()
                state[i][k] = v
        self.state = state

    def checkpoint_state(self) -> tuple[dict, dict]:
        """The state as (JSON-able meta, NumPy arrays), the form a checkpoint stores.

        meta: ``{"optimizer": "adam", "optimizer_hyperparameters": {...},
        "optimizer_scalars": {"<i>/<name>": scalar}}``; arrays: ``{"optim/<i>/<name>":
        array}``, copied to the host. ``load_checkpoint_state`` is the inverse.
        """
        sd = self.state_dict()
        arrays, scalars = {}, {}
        for i, entries in sd["state"].items():
            for k, v in entries.items():
                if hasattr(v, "shape"):
                    arrays[f"optim/{i}/{k}"] = v
                else:
                    scalars[f"{i}/{k}"] = v
        meta = {
            "optimizer": type(self).__name__.lower(),
            "optimizer_hyperparameters": sd["hyperparameters"],
            "optimizer_scalars": scalars,
        }
        return meta, arrays

    def load_checkpoint_state(self, meta: dict, arrays: dict) -> None:
        """Restore what ``checkpoint_state`` returned, onto each parameter's device.

        ValueError when the state belongs to another optimiser or another model.
        """
        saved = meta.get("optimizer")
        if saved is not None and saved != type(self).__name__.lower():
            raise ValueError(
                f"the saved optimiser state is {saved}'s, this run uses "
                f"{type(self).__name__.lower()}"
            )
        state: dict = {}
        for key, v in arrays.items():
            prefix, i, k = key.split("/", 2)
            if prefix == "optim":
                state.setdefault(i, {})[k] = v
        for key, v in meta.get("optimizer_scalars", {}).items():
            i, k = key.split("/", 1)
            state.setdefault(i, {})[k] = v
        self.load_state_dict(
            {"hyperparameters": meta.get("optimizer_hyperparameters", {}), "state": state}
        )

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyperparameters)
        return f"{type(self).__name__}({len(self.params)} parameters, {hp})"
