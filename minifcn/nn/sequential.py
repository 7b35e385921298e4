"""Sequential: layers applied one after another."""

from __future__ import annotations

from .module import Module


class Sequential(Module):
    """Like PyTorch's ``nn.Sequential``: sub-modules named "0", "1", ...

    ``forward`` runs them in order; ``backward`` runs their backward passes in
    reverse order, each feeding the next.
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __len__(self):
        return sum(1 for _ in self.children())

    def __getitem__(self, i):
        return getattr(self, str(i % len(self)))

    def __iter__(self):
        return (layer for _, layer in self.children())

    def forward(self, x):
        for layer in self:
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(list(self)):
            dy = layer.backward(dy)
        return dy
