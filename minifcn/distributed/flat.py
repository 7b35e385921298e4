"""Every trainable gradient in one contiguous buffer, so a step needs one allreduce.

The buffer is ``[g_1 ... g_k, loss * w, w]``: each rank's gradients and loss are the
means over its own shard, scaled by ``w``, the number of pixels the loss counted
there. After the buffer is summed over the ranks, dividing by the summed ``w``
gives exactly the mean over the whole global batch, the quantity one process
with the whole batch computes (a plain average of the ranks' means would weigh
a shard with many "ignore" pixels as much as a full one).
"""

from __future__ import annotations

from ..backend import as_numpy, get_array_module


class FlatGradients:
    """The gradient buffer of ``params`` (frozen ones are left out), allocated once."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatGradients: no trainable parameters")
        dtypes = {p.grad.dtype for p in self.params}
        if len(dtypes) != 1:
            names = sorted(map(str, dtypes))
            raise ValueError(f"FlatGradients: parameters of several dtypes {names}")
        self.xp = get_array_module(self.params[0].grad)
        self.dtype = dtypes.pop()
        self.count = sum(int(p.grad.size) for p in self.params)  # gradient elements
        self.buffer = self.xp.empty(self.count + 2, dtype=self.dtype)
        self.views, start = [], 0
        for p in self.params:
            self.views.append(self.buffer[start : start + p.grad.size])
            start += p.grad.size

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def pack(self, loss: float, weight: float, summed: bool = False) -> None:
        """Copy ``weight`` x every gradient into the buffer, then ``loss * weight, weight``.

        A rank with ``weight == 0`` (nothing of the batch to count) sends zeros,
        whatever its gradients hold. ``summed``: the loss is a sum over pixels (the
        paper's recipe), so the sums are added and not divided: the weight slot
        then carries -1, which ``unpack`` reads as "divide by nothing".
        """
        xp, w = self.xp, self.dtype.type(weight)
        for p, view in zip(self.params, self.views):
            if weight:
                xp.multiply(p.grad.reshape(-1), w, out=view)
            else:
                view.fill(0)
        self.buffer[self.count] = float(loss) * float(weight) if weight else 0.0
        self.buffer[self.count + 1] = -1.0 if summed else float(weight)

    def unpack(self) -> tuple[float, float]:
        """Write sum / total weight back into every ``grad``; returns (mean loss, total weight)
        (with ``summed`` packing: the sums themselves, and the loss summed).

        One copy of two numbers to the host (the loss and the weight).
        """
        loss_sum, total = (float(v) for v in as_numpy(self.buffer[self.count :]))
        if total < 0:  # summed: -1 from every rank
            for p, view in zip(self.params, self.views):
                p.grad[...] = view.reshape(p.grad.shape)
            return loss_sum, total
        scale = self.dtype.type(1.0 / total) if total > 0 else self.dtype.type(0.0)
        for p, view in zip(self.params, self.views):
            self.xp.multiply(view.reshape(p.grad.shape), scale, out=p.grad)
        return (loss_sum / total if total > 0 else 0.0), total
