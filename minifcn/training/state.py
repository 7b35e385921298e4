"""Where a training run stands (``RunState``, in every checkpoint), what it holds (``Run``)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..distributed import Sharding, SingleProcess
from .runfolder import RunFolder
from .step import TrainStep

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")
DEFAULT_EPOCHS = 5


class NonFiniteLoss(RuntimeError):
    pass


class RunError(Exception):
    """Stops the run with one line (the message); nothing inconsistent is left behind."""


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint (``meta["state"]``)."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps of epoch ``epoch + 1`` finished
    iteration: int = 0  # steps finished in all
    loss_sum: float = 0.0  # training loss of this epoch so far, summed over images
    loss_count: int = 0
    best_mean_iu: float | None = None
    best_epoch: int | None = None
    history: list = field(default_factory=list)  # one row per finished epoch
    wall_time: float = 0.0
    run_id: str = ""  # the same in every checkpoint of one run

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunState:
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in known})
        if state.best_epoch is None:
            state.best_mean_iu = None  # older checkpoints stored -1.0
        return state

    def where(self) -> str:
        """'end of epoch 2' or 'epoch 3, step 5' (what a checkpoint of this state holds)."""
        if self.step_in_epoch == 0:
            return f"end of epoch {self.epoch}" if self.epoch else "before the first step"
        return f"epoch {self.epoch + 1}, step {self.step_in_epoch}"


@dataclass
class Run:
    """Everything a running training needs, built by ``set_up``."""

    args: argparse.Namespace
    folder: RunFolder
    cfg_name: str
    train_set: object
    val_set: object
    model: object
    opt: object
    schedule: object
    loss_fn: object
    steps_per_epoch: int
    state: RunState
    step_rng: dict = field(default_factory=dict)  # dropout state after the last finished step
    on_disk: str | None = None  # where last.npz on disk stands ("end of epoch 2"), if any
    warned_collapse: bool = False
    # Data-parallel runs (minifcn.distributed): this rank's communicator and its share
    # of every batch; one process is rank 0 of 1 and its share is the whole batch.
    comm: object = field(default_factory=SingleProcess)
    sharding: object = field(default_factory=lambda: Sharding(0, 1))
    step: object = None  # TrainStep(model, loss_fn): forward, loss and backward of a batch

    def __post_init__(self):
        if self.step is None:
            self.step = TrainStep(self.model, self.loss_fn)

    @property
    def out(self) -> Path:
        return self.folder.path
