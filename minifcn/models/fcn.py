"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, 2015).

The three networks share the VGG16 backbone and differ in how they turn the
coarse ``score_fr`` map (stride 32) back into a full-size prediction:

* FCN-32s upsamples it 32x in one step (``upscore``, 64/32).
* FCN-16s upsamples it 2x (``upscore2``), adds scores predicted from pool4
  (``score_pool4``, cropped to align: ``score_pool4c``), then upsamples 16x.
* FCN-8s does the same once more with pool3 before a final 8x upsampling.

Forward and backward are written out by hand, reading like the paper's figure;
``graph`` lists the same connections once more as data, from which the crop
offsets and the sizes each blob will have are computed (see ``geometry.py``).
"""

from __future__ import annotations

from ..nn import Conv2d, ConvTranspose2d, Crop, Fuse, Module, Scale
from ..nn.init import as_generator
from .config import get_config
from .geometry import CoordMap, crop_offset, layer_map
from .vgg import add_vgg16


class FCN(Module):
    """Shared machinery. Subclasses add their head in ``_add_head`` and write
    ``forward``/``backward``/``_head_graph``.

    Args:
        num_classes: number of output channels (21 for PASCAL VOC).
        config: "paper" (VGG16, the default), "mini", or a ``VGGConfig``.
        freeze_upsampling: keep the bilinear upsampling weights fixed, as the
            reference code does (they are learnable by default).
        rng: seed or ``numpy.random.Generator`` for the initial weights and dropout.

    ``forward(x (N, 3, H, W)) -> scores (N, num_classes, H, W)``;
    ``backward(dscores) -> dx (N, 3, H, W)``, adding into every parameter's grad.
    """

    name = "fcn"

    def __init__(self, num_classes: int, config="paper", freeze_upsampling: bool = False, rng=0):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.config = get_config(config)
        self.freeze_upsampling = freeze_upsampling
        rng = as_generator(rng)
        self._backbone = add_vgg16(self, self.config, rng)
        self._add_head(rng)
        self.crop_offsets = self._walk_geometry()[1]
        for name, offset in self.crop_offsets.items():
            getattr(self, name).offset = (offset, offset)

    # ------------------------------------------------------------ construction
    def _add_head(self, rng):
        raise NotImplementedError

    def _score(self, in_channels: int, rng) -> Conv2d:
        """A 1x1 scoring conv, zero-initialised as in the reference (score_fr and the skips):
        a new skip then adds nothing until training gives it weight."""
        conv = Conv2d(in_channels, self.num_classes, 1, rng=rng)
        conv.weight.data[...] = 0
        return conv

    def _upsample(self, kernel: int, stride: int) -> ConvTranspose2d:
        c = self.num_classes
        return ConvTranspose2d(c, c, kernel, stride, bias=False, freeze=self.freeze_upsampling)

    def spec(self) -> dict:
        """What is needed to rebuild this model (stored in checkpoints)."""
        return {
            "model": self.name,
            "num_classes": self.num_classes,
            "config": self.config.to_dict(),
            "freeze_upsampling": self.freeze_upsampling,
        }

    # ------------------------------------------------------------------ backbone
    def _forward_backbone(self, x):
        """x (N, 3, H, W) -> (fc7 output, {"pool3": ..., "pool4": ...})."""
        skips = {}
        for name in self._backbone:
            x = getattr(self, name)(x)
            if name in ("pool3", "pool4"):
                skips[name] = x
        return x, skips

    def _backward_backbone(self, dy, skip_grads: dict):
        """Backward through the backbone; ``skip_grads`` ({"pool4": g, ...}) are
        the skip branches' gradients, added where their blob left the backbone."""
        for name in reversed(self._backbone):
            if name in skip_grads:
                dy = dy + skip_grads[name]
            dy = getattr(self, name).backward(dy)
        return dy

    # ------------------------------------------------------------------ geometry
    def graph(self) -> list:
        """Every connection as (output blob, layer name, input blob[, reference blob]).

        Blobs are named after the layer that makes them; the image is "data".
        A Crop step has a reference blob, whose size and position it copies; a
        Fuse step names its second summand there.
        """
        steps, prev = [], "data"
        for name in self._backbone:
            steps.append((name, name, prev))
            prev = name
        return steps + self._head_graph()

    def _head_graph(self) -> list:
        raise NotImplementedError

    def coordinate_maps(self) -> dict:
        """{blob: CoordMap} mapping each blob's pixel coordinates to image coordinates."""
        return self._walk_geometry()[0]

    def _walk_geometry(self):
        """Compose the layers' coordinate maps along ``graph``; returns (maps, crop offsets)."""
        maps, offsets = {"data": CoordMap()}, {}
        for out, layer, src, *ref in self.graph():
            module = getattr(self, layer)
            if isinstance(module, Crop):
                offsets[layer] = crop_offset(maps[src], maps[ref[0]], layer)
                maps[out] = maps[ref[0]]
            elif isinstance(module, Fuse) and maps[src] != maps[ref[0]]:
                raise ValueError(f"{layer}: summands are not aligned ({maps[src]}, {maps[ref[0]]})")
            else:
                maps[out] = maps[src].then(layer_map(module))  # identity for Fuse, ReLU...
        return maps, offsets

    def _walk_sizes(self, size: int) -> dict:
        """{blob: spatial length} along one axis, or ValueError(reason) if impossible."""
        sizes = {"data": size}
        for out, layer, src, *ref in self.graph():
            module = getattr(self, layer)
            n = sizes[src]
            if isinstance(module, Crop):
                need = module.offset[0] + sizes[ref[0]]
                if need > n:
                    raise ValueError(f"{layer} needs {need} pixels of {src} but it has {n}")
                n = sizes[ref[0]]
            elif hasattr(module, "output_size"):  # Conv2d, MaxPool2d, ConvTranspose2d
                n = module.output_size(n)
            if n < 1:
                raise ValueError(f"blob {out} would be empty")
            sizes[out] = n
        return sizes

    def blob_sizes(self, size: int) -> dict:
        """{blob: spatial length} along one axis for an input side of ``size`` pixels.

        Raises ValueError, naming the blob and the supported sizes, when some
        layer would get an empty input or a crop does not fit.
        """
        try:
            return self._walk_sizes(size)
        except ValueError as err:
            raise ValueError(
                f"{type(self).__name__} with the {self.config.name!r} backbone cannot segment an "
                f"image side of {size} pixels: {err}. {self.size_hint()}"
            ) from None

    def supported_sizes(self, up_to: int = 512) -> list:
        """Input side lengths in 1..up_to this network can segment."""
        ok = []
        for s in range(1, up_to + 1):
            try:
                self._walk_sizes(s)
                ok.append(s)
            except ValueError:
                pass
        return ok

    def size_hint(self) -> str:
        ok = self.supported_sizes(256)
        if len(ok) == 256:
            return "Any size works for this configuration."
        return f"Supported sides up to 256: {_ranges(ok)}."

    def check_input(self, x) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}: expected images of shape (N, 3, H, W), got "
                f"{tuple(x.shape)}"
            )
        for side in x.shape[2:]:
            self.blob_sizes(int(side))

    # ------------------------------------------------------------- dropout state
    def rng_state(self) -> dict:
        """The dropout generators' states (saved in checkpoints for exact resume)."""
        return {n: m.rng.bit_generator.state for n, m in self.children() if hasattr(m, "rng")}

    def set_rng_state(self, state: dict) -> None:
        for name, s in state.items():
            getattr(self, name).rng.bit_generator.state = s

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, config={self.config.name!r}"


def _ranges(values) -> str:
    """[1,2,3,7,8] -> "1-3, 7-8"."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ", ".join(out) if out else "none"


class FCN32s(FCN):
    """FCN-32s: score_fr (1x1) then one 32x upsampling (64/32) and a crop."""

    name = "fcn32s"

    def _add_head(self, rng):
        self.score_fr = self._score(self.config.fc_channels, rng)
        self.upscore = self._upsample(64, 32)
        self.score = Crop(0)

    def _head_graph(self):
        return [
            ("score_fr", "score_fr", "drop7"),
            ("upscore", "upscore", "score_fr"),
            ("score", "score", "upscore", "data"),
        ]

    def forward(self, x):
        self.check_input(x)
        h, _ = self._forward_backbone(x)
        return self.score(self.upscore(self.score_fr(h)), x)

    def backward(self, dscores):
        d = self.upscore.backward(self.score.backward(dscores))
        return self._backward_backbone(self.score_fr.backward(d), {})


class FCN16s(FCN):
    """FCN-16s: 2x upsampling of score_fr fused with pool4's scores, then 16x."""

    name = "fcn16s"

    def _add_head(self, rng):
        self.score_fr = self._score(self.config.fc_channels, rng)
        self.upscore2 = self._upsample(4, 2)
        self.score_pool4 = self._score(self.config.widths[3], rng)
        self.score_pool4c = Crop(0)
        self.fuse_pool4 = Fuse()
        self.upscore16 = self._upsample(32, 16)
        self.score = Crop(0)

    def _head_graph(self):
        return [
            ("score_fr", "score_fr", "drop7"),
            ("upscore2", "upscore2", "score_fr"),
            ("score_pool4", "score_pool4", "pool4"),
            ("score_pool4c", "score_pool4c", "score_pool4", "upscore2"),
            ("fuse_pool4", "fuse_pool4", "upscore2", "score_pool4c"),
            ("upscore16", "upscore16", "fuse_pool4"),
            ("score", "score", "upscore16", "data"),
        ]

    def forward(self, x):
        self.check_input(x)
        h, skips = self._forward_backbone(x)
        upscore2 = self.upscore2(self.score_fr(h))
        score_pool4c = self.score_pool4c(self.score_pool4(skips["pool4"]), upscore2)
        fuse_pool4 = self.fuse_pool4(upscore2, score_pool4c)
        return self.score(self.upscore16(fuse_pool4), x)

    def backward(self, dscores):
        d = self.upscore16.backward(self.score.backward(dscores))
        d_upscore2, d_pool4c = self.fuse_pool4.backward(d)
        d_pool4 = self.score_pool4.backward(self.score_pool4c.backward(d_pool4c))
        d = self.score_fr.backward(self.upscore2.backward(d_upscore2))
        return self._backward_backbone(d, {"pool4": d_pool4})

    @classmethod
    def from_fcn32s(cls, fcn32s: FCN32s, **kw) -> FCN16s:
        """Staged training: start FCN-16s from a trained FCN-32s.

        Copies the backbone and score_fr; score_pool4 stays zero so the new
        network initially predicts what FCN-32s did (up to the upsampling).
        """
        return _copy_shared(fcn32s, cls(fcn32s.num_classes, fcn32s.config, **kw))


class FCN8s(FCN):
    """FCN-8s: like FCN-16s, then one more 2x step fused with pool3, then 8x.

    Args:
        at_once: the paper's "at-once" variant, trained in one stage: pool4 is
            scaled by 0.01 and pool3 by 0.0001 before their score layers.
    """

    name = "fcn8s"

    def __init__(
        self, num_classes, config="paper", freeze_upsampling=False, rng=0, at_once: bool = False
    ):
        self.at_once = at_once
        super().__init__(num_classes, config, freeze_upsampling, rng)

    def _add_head(self, rng):
        self.score_fr = self._score(self.config.fc_channels, rng)
        self.upscore2 = self._upsample(4, 2)
        self.scale_pool4 = Scale(0.01 if self.at_once else 1.0)
        self.score_pool4 = self._score(self.config.widths[3], rng)
        self.score_pool4c = Crop(0)
        self.fuse_pool4 = Fuse()
        self.upscore_pool4 = self._upsample(4, 2)
        self.scale_pool3 = Scale(0.0001 if self.at_once else 1.0)
        self.score_pool3 = self._score(self.config.widths[2], rng)
        self.score_pool3c = Crop(0)
        self.fuse_pool3 = Fuse()
        self.upscore8 = self._upsample(16, 8)
        self.score = Crop(0)

    def spec(self) -> dict:
        return {**super().spec(), "at_once": self.at_once}

    def _head_graph(self):
        return [
            ("score_fr", "score_fr", "drop7"),
            ("upscore2", "upscore2", "score_fr"),
            ("scale_pool4", "scale_pool4", "pool4"),
            ("score_pool4", "score_pool4", "scale_pool4"),
            ("score_pool4c", "score_pool4c", "score_pool4", "upscore2"),
            ("fuse_pool4", "fuse_pool4", "upscore2", "score_pool4c"),
            ("upscore_pool4", "upscore_pool4", "fuse_pool4"),
            ("scale_pool3", "scale_pool3", "pool3"),
            ("score_pool3", "score_pool3", "scale_pool3"),
            ("score_pool3c", "score_pool3c", "score_pool3", "upscore_pool4"),
            ("fuse_pool3", "fuse_pool3", "upscore_pool4", "score_pool3c"),
            ("upscore8", "upscore8", "fuse_pool3"),
            ("score", "score", "upscore8", "data"),
        ]

    def forward(self, x):
        self.check_input(x)
        h, skips = self._forward_backbone(x)
        upscore2 = self.upscore2(self.score_fr(h))
        score_pool4 = self.score_pool4(self.scale_pool4(skips["pool4"]))
        fuse_pool4 = self.fuse_pool4(upscore2, self.score_pool4c(score_pool4, upscore2))
        upscore_pool4 = self.upscore_pool4(fuse_pool4)
        score_pool3 = self.score_pool3(self.scale_pool3(skips["pool3"]))
        fuse_pool3 = self.fuse_pool3(upscore_pool4, self.score_pool3c(score_pool3, upscore_pool4))
        return self.score(self.upscore8(fuse_pool3), x)

    def backward(self, dscores):
        d = self.upscore8.backward(self.score.backward(dscores))
        d_up_pool4, d_pool3c = self.fuse_pool3.backward(d)
        d_pool3 = self.score_pool3.backward(self.score_pool3c.backward(d_pool3c))
        d_pool3 = self.scale_pool3.backward(d_pool3)
        d = self.upscore_pool4.backward(d_up_pool4)
        d_upscore2, d_pool4c = self.fuse_pool4.backward(d)
        d_pool4 = self.score_pool4.backward(self.score_pool4c.backward(d_pool4c))
        d_pool4 = self.scale_pool4.backward(d_pool4)
        d = self.score_fr.backward(self.upscore2.backward(d_upscore2))
        return self._backward_backbone(d, {"pool4": d_pool4, "pool3": d_pool3})

    @classmethod
    def from_fcn16s(cls, fcn16s: FCN16s, **kw) -> FCN8s:
        """Staged training: start FCN-8s from a trained FCN-16s.

        Copies the backbone, score_fr, upscore2 and score_pool4; score_pool3
        stays zero. (upscore16 has no counterpart and is dropped.)
        """
        return _copy_shared(fcn16s, cls(fcn16s.num_classes, fcn16s.config, **kw))


def _copy_shared(src: FCN, dst: FCN) -> FCN:
    """Copy every parameter ``src`` and ``dst`` share by name and shape."""
    dst.to(src.device)  # first, so that both sides live on the same device
    theirs = dict(src.named_parameters())
    for name, p in dst.named_parameters():
        if name in theirs and theirs[name].data.shape == p.data.shape:
            p.data[...] = theirs[name].data
    return dst


MODELS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}


def build_model(name: str, num_classes: int, config="paper", **kw) -> FCN:
    """``build_model("fcn8s", 21, "paper")``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_classes, config, **kw)


def model_from_spec(spec: dict, rng=0) -> FCN:
    """Rebuild a model from ``FCN.spec()`` (as stored in a checkpoint)."""
    kw = {"freeze_upsampling": spec.get("freeze_upsampling", False), "rng": rng}
    if spec["model"] == "fcn8s":
        kw["at_once"] = spec.get("at_once", False)
    return build_model(spec["model"], spec["num_classes"], spec["config"], **kw)


__all__ = ["FCN", "FCN32s", "FCN16s", "FCN8s", "build_model", "model_from_spec"]
