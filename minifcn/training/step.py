"""One training step's forward, loss and backward: the one function the training loop and
``bench`` run, so that what ``bench`` times is what ``python -m minifcn.train`` does."""

from __future__ import annotations

from ..accel.split import BatchSplit, splits


class TrainStep:
    """``step(x, labels) -> loss``: forward, loss and backward of one batch.

    The gradients ADD into the parameters' ``.grad`` (zero them first, as before a
    ``backward``) and the batch's loss is returned, as ``loss_fn(model(x), labels)``
    then ``model.backward(loss_fn.backward(), input_grad=False)`` would give it. On
    the accelerated CPU path a batch of two or more images runs as two fixed halves,
    the second in a helper process when a second core is idle
    (``minifcn.accel.split``: the same bits with or without it); elsewhere (the GPU,
    the plain path, ``split=False``: the ranks of ``mpiexec``) the batch runs whole.
    ``loss_fn`` keeps no cache of the halves: call ``step`` again rather than
    ``loss_fn.backward``.
    """

    def __init__(self, model, loss_fn, split: bool = True):
        self.model, self.loss_fn, self.split = model, loss_fn, split
        self._split = BatchSplit()

    def __call__(self, x, labels) -> float:
        if self.split and splits(x):
            return self._split.step(self.model, self.loss_fn, x, labels)
        loss = self.loss_fn(self.model(x), labels)
        self.model.backward(self.loss_fn.backward(), input_grad=False)  # no image gradient
        return loss

    @property
    def helper_pid(self) -> int | None:
        """The process id of the batch split's helper, while one runs."""
        return self._split.helper_pid

    def close(self) -> None:
        """End the helper process, if one runs (it also ends with this process)."""
        self._split.close()
