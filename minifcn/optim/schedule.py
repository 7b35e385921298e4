"""Learning-rate schedules: ``schedule(iteration) -> lr``; set ``optimizer.lr`` from it."""

from __future__ import annotations


class ConstantLR:
    """lr(it) = base_lr (the FCN paper's schedule: fixed rate, momentum 0.99)."""

    def __init__(self, base_lr: float):
        self.base_lr = float(base_lr)

    def __call__(self, iteration: int) -> float:
        return self.base_lr

    def lr_at(self, iteration: int) -> float:
        """The same as calling the schedule."""
        return self(iteration)

    def __repr__(self) -> str:
        return f"ConstantLR(base_lr={self.base_lr})"


class StepLR(ConstantLR):
    """lr(it) = base_lr * gamma ** (it // step_size)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1):
        super().__init__(base_lr)
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def __call__(self, iteration: int) -> float:
        return self.base_lr * self.gamma ** (max(0, int(iteration)) // self.step_size)

    def __repr__(self) -> str:
        return f"StepLR(base_lr={self.base_lr}, step_size={self.step_size}, gamma={self.gamma})"


class PolyLR(ConstantLR):
    """lr(it) = base_lr * (1 - it / max_iter) ** power, reaching 0 at ``max_iter``."""

    def __init__(self, base_lr: float, max_iter: int, power: float = 0.9):
        super().__init__(base_lr)
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.max_iter = int(max_iter)
        self.power = float(power)

    def __call__(self, iteration: int) -> float:
        progress = min(max(int(iteration), 0), self.max_iter) / self.max_iter
        return self.base_lr * (1.0 - progress) ** self.power

    def __repr__(self) -> str:
        return f"PolyLR(base_lr={self.base_lr}, max_iter={self.max_iter}, power={self.power})"
