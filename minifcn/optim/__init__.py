"""Optimisers (SGD with momentum, Adam) and learning-rate schedules."""

from .adam import Adam
from .optimizer import Optimizer
from .schedule import ConstantLR, PolyLR, StepLR
from .sgd import SGD

__all__ = ["SGD", "Adam", "ConstantLR", "Optimizer", "PolyLR", "StepLR"]
