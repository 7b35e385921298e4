"""Adam (Kingma & Ba, 2015): per-coordinate steps from running gradient moments."""

from __future__ import annotations

import math

from ..accel.cuda_kernels import adam_gpu
from ..backend import get_array_module
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam with bias correction, as PyTorch's ``torch.optim.Adam``.

    For each trainable parameter w with gradient g (plus ``weight_decay * w``
    for weights, an L2 penalty, not AdamW's decoupled decay), at its t-th step:

        m  = beta1 * m + (1 - beta1) * g
        v  = beta2 * v + (1 - beta2) * g**2
        w -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    state_arrays = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)

    def step(self) -> None:
        packing = self.packing()
        if packing is not None:
            self._fused_step(packing)
            return
        b1, b2 = self.betas
        for i, p in self.trainable():
            g = self.gradient(p)
            xp = get_array_module(p.data)
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {
                    "step": 0,
                    "exp_avg": xp.zeros_like(p.data),
                    "exp_avg_sq": xp.zeros_like(p.data),
                }
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = xp.sqrt(v) / math.sqrt(1.0 - b2**t) + self.eps
            p.data -= (self.lr / (1.0 - b1**t)) * (m / denom)

    def _fused_step(self, packing) -> None:
        """The same update for every parameter in one kernel (``minifcn_adam``).

        Each parameter's row of the table holds what the loop above computes on the
        host in double precision: its step size lr / (1 - beta1^t), sqrt(1 - beta2^t)
        and decay, so the kernel's float arithmetic is the loop's, operation for
        operation.
        """
        b1, b2 = self.betas
        rows = []
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                rows.append([0.0] * 9)
                continue
            state = self.state.get(i)
            if state is None:  # a zero segment of the packed buffers
                state = self.state[i] = {
                    "step": 0,
                    "exp_avg": packing.state_views["exp_avg"][i],
                    "exp_avg_sq": packing.state_views["exp_avg_sq"][i],
                }
            state["step"] += 1
            t = state["step"]
            decay = self.weight_decay if p.data.ndim > 1 else 0.0
            step_size, correction2 = self.lr / (1.0 - b1**t), math.sqrt(1.0 - b2**t)
            rows.append([1.0, step_size, correction2, decay, b1, 1.0 - b1, b2, 1.0 - b2, self.eps])
        hyper = self.hyper_table(rows, packing.data.dtype)
        m, v = packing.buffers["exp_avg"], packing.buffers["exp_avg_sq"]
        adam_gpu(packing.data, packing.grad, m, v, packing.ends, hyper)
