"""Stochastic gradient descent with momentum (the optimiser FCN was trained with)."""

from __future__ import annotations

from ..accel.cuda_kernels import sgd_gpu
from .optimizer import Optimizer


class SGD(Optimizer):
    """SGD with optional momentum and weight decay, as PyTorch's ``torch.optim.SGD``.

    For each trainable parameter w with gradient g (plus ``weight_decay * w`` for weights):

        buf = momentum * buf + g      (buf starts at 0; skipped when momentum == 0)
        w  -= lr * buf

    The update happens in place on ``p.data``, with the array's own module
    (NumPy or CuPy) and dtype.
    """

    hyperparameters = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not momentum >= 0 or momentum == float("inf"):
            raise ValueError(f"momentum must be finite and >= 0, got {momentum}")
        self.momentum = float(momentum)

    @property
    def state_arrays(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def step(self) -> None:
        packing = self.packing()
        if packing is not None:
            self._fused_step(packing)
            return
        for i, p in self.trainable():
            g = self.gradient(p)
            if self.momentum:
                state = self.state.setdefault(i, {})
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.copy()  # = momentum * 0 + g
                else:
                    buf = state["momentum_buffer"]
                    buf *= self.momentum
                    buf += g
                g = state["momentum_buffer"]
            p.data -= self.lr * g

    def _fused_step(self, packing) -> None:
        """The same update for every parameter in one kernel (``minifcn_sgd``); each
        parameter's row: active, lr, decay, momentum, whether its buffer holds a value."""
        rows = []
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                rows.append([0.0] * 5)
                continue
            started = 0.0
            if self.momentum:
                state = self.state.setdefault(i, {})
                started = float("momentum_buffer" in state)
                state["momentum_buffer"] = packing.state_views["momentum_buffer"][i]
            decay = self.weight_decay if p.data.ndim > 1 else 0.0
            rows.append([1.0, self.lr, decay, self.momentum, started])
        hyper = self.hyper_table(rows, packing.data.dtype)
        buffer = packing.buffers["momentum_buffer"] if self.momentum else packing.grad
        sgd_gpu(packing.data, packing.grad, buffer, packing.ends, hyper)
