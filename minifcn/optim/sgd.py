"""Stochastic gradient descent with momentum (the optimiser FCN was trained with)."""

from __future__ import annotations

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

    def step(self) -> None:
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
