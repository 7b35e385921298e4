"""Parameters, gradients and optimiser state packed into flat buffers (the fused GPU step).

On the GPU every array operation is a kernel launch costing microseconds however
small the array, and a network has dozens of parameters: a per-parameter Adam
step is a dozen launches each. Packed, the whole step is one kernel over one
flat buffer per quantity, and zeroing the gradients is one fill.

``Packing(params, state_names)`` makes every ``p.data`` and ``p.grad`` a view of
one flat buffer each, and each named state array (``exp_avg``, ...) a view of its
own flat buffer, copying the current values in. Code that replaces an array
instead of writing into it (``model.to``, ``load_state_dict`` of the optimiser)
leaves a parameter that is no longer a view: ``holds`` notices, and the optimiser
packs again. Segment ``j`` of every buffer is parameter ``j``; ``ends`` (on the
device) holds the segments' end offsets, which is how a kernel finds its segment.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module


class Packing:
    """Flat buffers whose segments are the parameters' values, gradients and state."""

    def __init__(self, params: list, state: dict, state_names: tuple[str, ...]):
        xp = get_array_module(params[0].data)
        dtype = params[0].data.dtype
        sizes = [int(p.data.size) for p in params]
        ends = np.cumsum(sizes, dtype=np.int64)
        self.starts = [int(e - s) for e, s in zip(ends, sizes)]
        self.sizes = sizes
        self.ends = xp.asarray(ends)
        total = int(ends[-1])
        self.data = xp.empty(total, dtype=dtype)
        self.grad = xp.empty(total, dtype=dtype)
        self.buffers = {name: xp.zeros(total, dtype=dtype) for name in state_names}
        self.data_views, self.grad_views = [], []
        self.state_views: dict[str, list] = {name: [] for name in state_names}
        for i, p in enumerate(params):
            data, grad = (
                self.segment(self.data, i, p.data.shape),
                self.segment(self.grad, i, p.shape),
            )
            data[...] = p.data
            grad[...] = p.grad
            p.data, p.grad = data, grad
            self.data_views.append(data)
            self.grad_views.append(grad)
            for name in state_names:
                view = self.segment(self.buffers[name], i, p.shape)
                saved = state.get(i, {}).get(name)
                if saved is not None:
                    view[...] = saved
                    state[i][name] = view
                self.state_views[name].append(view)

    def segment(self, flat, i: int, shape):
        start = self.starts[i]
        return flat[start : start + self.sizes[i]].reshape(shape)

    def holds(self, params: list, state: dict) -> bool:
        """Whether every parameter, gradient and state array is still its packed view."""
        if len(params) != len(self.data_views):
            return False
        for i, p in enumerate(params):
            if p.data is not self.data_views[i] or p.grad is not self.grad_views[i]:
                return False
            for name, views in self.state_views.items():
                saved = state.get(i, {}).get(name)
                if saved is not None and saved is not views[i]:
                    return False
        return True


def packable(params: list) -> bool:
    """Whether the parameters can share flat buffers: one device, one float dtype."""
    first = params[0].data
    xp = get_array_module(first)
    return all(
        get_array_module(p.data) is xp
        and p.data.dtype == first.dtype
        and p.grad.dtype == first.dtype
        and tuple(p.grad.shape) == tuple(p.data.shape)
        for p in params
    )
