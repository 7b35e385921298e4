"""The base class of every layer and network: parameters, modes, devices, state dicts."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backend import as_numpy, get_array_module, to_device
from .parameter import Parameter


class Module:
    """Base class. Subclasses implement ``forward(...)`` and ``backward(...)``.

    Parameters and sub-modules are found from the object's attributes, in the
    order they were assigned, so names read like PyTorch's: a network with an
    attribute ``conv1_1`` holding a ``Conv2d`` has parameters ``conv1_1.weight``
    and ``conv1_1.bias``.

    ``backward`` returns the gradient with respect to the input(s) and adds the
    parameter gradients into each ``Parameter.grad``.
    """

    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *args, **kwargs):
        raise NotImplementedError

    def cached(self):
        """What the last ``forward`` kept for ``backward`` (the layer's ``_cache``).

        Every layer with state keeps it in one attribute, ``_cache``, set to None
        in ``__init__`` and to a small named tuple by ``forward``; calling
        ``backward`` before any ``forward`` raises ``RuntimeError`` here.
        """
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return cache

    def coord_map(self):
        """Where this layer's output pixels sit in its input: a ``coords.CoordMap``.

        Layers that keep, shift or resample a spatial grid define it; one that has
        none (Flatten, Linear, or a new layer type not yet given one) raises here,
        so the geometry never assumes the identity for a layer it does not know.
        """
        raise TypeError(
            f"{type(self).__name__} has no coordinate map; define {type(self).__name__}"
            ".coord_map() to use it in a network whose geometry is computed"
        )

    # ----------------------------------------------------------------- traversal
    def children(self):
        """(name, module) pairs of direct sub-modules, in assignment order."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def modules(self):
        """This module and every sub-module, depth first."""
        yield self
        for _, child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) pairs, e.g. ("conv1_1.weight", p)."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    # --------------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        """Training mode (dropout active). Returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity). Returns self."""
        return self.train(False)

    # -------------------------------------------------------------- device/dtype
    def to(self, device: str):
        """Move every parameter (value and gradient) to "cpu" or "gpu". Returns self."""
        for p in self.parameters():
            p.data = to_device(p.data, device)
            p.grad = to_device(p.grad, device)
        return self

    def astype(self, dtype):
        """Cast every parameter to ``dtype`` (float64 for gradient checks). Returns self."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        return self

    @property
    def device(self) -> str:
        for p in self.parameters():
            return "cpu" if get_array_module(p.data) is np else "gpu"
        return "cpu"

    # ---------------------------------------------------------------- state dict
    def state_dict(self) -> OrderedDict:
        """Name -> NumPy copy of each parameter, in PyTorch's layouts."""
        return OrderedDict((name, as_numpy(p.data).copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state) -> None:
        """Copy values from ``state`` (name -> array) into the parameters.

        The keys must be exactly this module's parameter names and every shape
        must match; otherwise ``ValueError`` names the offending keys. Values
        keep each parameter's device and dtype.
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(unexpected)}")
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(parts))
        for name, p in own.items():
            value = np.asarray(as_numpy(state[name]))
            if value.shape != tuple(p.data.shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: shape mismatch for {name!r}: "
                    f"checkpoint has {value.shape}, model expects {tuple(p.data.shape)}"
                )
        for name, p in own.items():
            xp = get_array_module(p.data)
            p.data[...] = xp.asarray(as_numpy(state[name]), dtype=p.data.dtype)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = list(self.children())
        for name, child in kids:
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + (")" if not kids else "\n" + "\n".join(lines[1:]) + "\n)")
