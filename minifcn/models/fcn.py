"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, 2015).

The three networks share the VGG16 backbone and differ in how they turn the
coarse ``score_fr`` map (stride 32) back into a full-size prediction:

* FCN-32s upsamples it 32x in one step (``upscore``, 64/32).
* FCN-16s upsamples it 2x (``upscore2``), adds scores predicted from pool4
  (``score_pool4``, cropped to align: ``score_pool4c``), then upsamples 16x.
* FCN-8s does the same once more with pool3 before a final 8x upsampling.

Each network is written down once, as a list of steps ``(layer, input blob[,
reference blob])`` that reads like the paper's figure (see ``FCN8s.head``). That
list is the only description of the connections: ``forward`` runs it, ``backward``
runs it in reverse, and the coordinate maps, crop offsets and blob sizes are all
computed from it (see ``geometry.py``). A ``Crop`` in a head is given as the class
itself; the builder creates it with the offset the geometry requires.
"""

from __future__ import annotations

from ..nn import Conv2d, ConvTranspose2d, Crop, Fuse, Module, Scale
from ..nn.init import as_generator
from .config import get_config
from .geometry import CoordMap, crop_offset, layer_map
from .vgg import vgg16_layers


class FCN(Module):
    """A network built from one list of steps. Subclasses write ``head``.

    Args:
        num_classes: number of output channels (21 for PASCAL VOC).
        config: "paper" (VGG16, the default), "mini", or a ``VGGConfig``.
        freeze_upsampling: keep the bilinear upsampling weights fixed, as the
            reference code does (they are learnable by default).
        rng: seed or ``numpy.random.Generator`` for the initial weights and dropout.

    ``forward(x (N, 3, H, W)) -> scores (N, num_classes, H, W)``;
    ``backward(dscores) -> dx (N, 3, H, W)``, adding into every parameter's grad.

    Attributes:
        crop_offsets: {crop layer: offset}, computed from the coordinate maps.
        backbone: the backbone's layer names, in order (conv1_1 ... drop7).
    """

    name = "fcn"

    def __init__(self, num_classes: int, config="paper", freeze_upsampling: bool = False, rng=0):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.config = get_config(config)
        self.freeze_upsampling = freeze_upsampling
        rng = as_generator(rng)
        self._steps = []  # (blob, layer name, input blob[, reference blob]); blob == layer name
        self._maps = {"data": CoordMap()}
        self.crop_offsets = {}
        self._out_shape = None
        prev = "data"
        for layer_name, layer in vgg16_layers(self.config, rng):
            self._add_step(layer_name, layer, prev)
            prev = layer_name
        self.backbone = [name for name, *_ in self._steps]
        for step in self.head(rng):
            self._add_step(*step)
        self._last_use = {}  # blob -> index of the last step that reads it (forward frees it then)
        readers = {}
        for i, (_, _, src, *ref) in enumerate(self._steps):
            for blob in (src, *ref):
                self._last_use[blob] = i
                readers[blob] = readers.get(blob, 0) + 1
        # crop steps that cut the output of the transposed convolution just before them,
        # its only reader: forward computes just the window the crop keeps (upscore8)
        self._windowed = {
            i
            for i, (_, layer, src, *_) in enumerate(self._steps)
            if i > 0 and isinstance(getattr(self, layer), Crop) and src == self._steps[i - 1][0]
            and isinstance(getattr(self, self._steps[i - 1][1]), ConvTranspose2d)
            and readers[src] == 1
        }  # fmt: skip

    # ------------------------------------------------------------ construction
    def head(self, rng) -> list:
        """The steps after the backbone: (layer name, layer, input blob[, reference blob]).

        The blob a step makes is named after its layer; the image is "data" and
        the backbone's blobs are named after its layers (pool4, drop7, ...).
        ``Crop`` (the class) as a layer: crop the input to the reference's size at
        the offset the geometry gives. ``Fuse()``: add the input and the reference.
        """
        raise NotImplementedError

    def _add_step(self, name: str, layer, src: str, ref: str | None = None) -> None:
        """Append one step: check its blobs exist, compute its coordinate map, set the layer."""
        for blob in (src, ref):
            if blob is not None and blob not in self._maps:
                raise ValueError(f"{name}: reads blob {blob!r}, which no earlier step makes")
        if name in self._maps:
            raise ValueError(f"{name}: a blob of that name already exists")
        if layer is Crop:  # the offset is computed, never typed in
            if ref is None:
                raise ValueError(f"{name}: a crop needs a reference blob")
            offset = crop_offset(self._maps[src], self._maps[ref], name)
            layer = Crop(offset)  # its map takes src onto ref's map
            self.crop_offsets[name] = offset
        elif isinstance(layer, Fuse):
            if ref is None or self._maps[src] != self._maps[ref]:
                raise ValueError(
                    f"{name}: summands are not aligned ({self._maps[src]}, {self._maps.get(ref)})"
                )
        elif ref is not None:
            raise ValueError(f"{name}: only Crop and Fuse take a reference blob")
        self._maps[name] = self._maps[src].then(layer_map(layer))
        setattr(self, name, layer)
        self._steps.append((name, name, src) if ref is None else (name, name, src, ref))

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

    # ---------------------------------------------------------- forward/backward
    def forward(self, x):
        """Run the steps in order. Each blob is dropped after its last reader.

        A transposed convolution whose output only the crop after it reads (upscore8)
        runs with that crop: it computes just the window the crop keeps
        (``ConvTranspose2d.forward``'s ``window``), the same values as the whole output
        cut.
        """
        self.check_input(x)
        blobs = {"data": x}
        for i, (out, layer, src, *ref) in enumerate(self._steps):
            if i + 1 in self._windowed:  # made with the crop after it
                continue
            module = getattr(self, layer)
            if i in self._windowed:  # the crop: the transposed convolution's window
                _, upsample, src, *_ = self._steps[i - 1]
                h, w = blobs[ref[0]].shape[-2:]
                window = (*module.offset, h, w)
                blobs[out] = getattr(self, upsample)(blobs[src], window=window)
            else:
                blobs[out] = module(blobs[src], *(blobs[r] for r in ref))
            for blob in (src, *ref):
                if self._last_use[blob] <= i:
                    blobs.pop(blob, None)
        scores = blobs[self._steps[-1][0]]
        self._out_shape = tuple(scores.shape)
        return scores

    def backward(self, dscores, input_grad: bool = True):
        """Run the steps in reverse. A blob read by several steps (pool4 feeds pool5
        and score_pool4) gets the sum of their gradients; a crop's reference gets none.

        Returns the image's gradient dx (N, 3, H, W). Training does not need it:
        with ``input_grad=False`` only the gradients that lead to a trainable
        parameter are computed (conv1_1 skips its input gradient, a convolution on
        the largest map) and None is returned.
        """
        if self._out_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        shape = tuple(getattr(dscores, "shape", ()))
        if shape != self._out_shape:
            raise ValueError(
                f"{type(self).__name__}.backward: the gradient has shape {shape}, but the last "
                f"forward returned scores of shape {self._out_shape}"
            )
        wanted = self._wanted_grads(input_grad)
        grads = {self._steps[-1][0]: dscores}
        for i in reversed(range(len(self._steps))):
            out, layer, src, *ref = self._steps[i]
            g = grads.pop(out, None)
            if g is None:  # nothing downstream used this blob
                continue
            if i in self._windowed:  # the transposed convolution before takes the window's
                if wanted[src]:
                    grads[src] = g
                continue
            module, inputs = getattr(self, layer), (src, *ref)
            if not any(wanted[blob] for blob in inputs):
                if isinstance(module, Conv2d):  # parameter gradients only
                    module.backward(g, input_grad=False)
                elif any(p.requires_grad for p in module.parameters()):
                    module.backward(g)  # for its parameters; dx is dropped
                continue
            d = module.backward(g)
            for blob, db in zip(inputs, d if isinstance(d, tuple) else (d,)):
                grads[blob] = db if blob not in grads else grads[blob] + db
        return grads.get("data")

    def _wanted_grads(self, input_grad: bool) -> dict:
        """{blob: whether backward needs its gradient}: it does when the blob depends
        on a trainable parameter, or on the image when ``input_grad``."""
        wanted = {"data": input_grad}
        for out, layer, src, *ref in self._steps:
            trainable = any(p.requires_grad for p in getattr(self, layer).parameters())
            wanted[out] = trainable or any(wanted[blob] for blob in (src, *ref))
        return wanted

    # ------------------------------------------------------------------ geometry
    def graph(self) -> list:
        """Every connection as (output blob, layer name, input blob[, reference blob]).

        Blobs are named after the layer that makes them; the image is "data".
        A Crop step has a reference blob, whose size and position it copies; a
        Fuse step names its second summand there. ``forward`` runs exactly this list (the
        last upsampling for just the window its crop keeps, see ``forward``).
        """
        return list(self._steps)

    def coordinate_maps(self) -> dict:
        """{blob: CoordMap} mapping each blob's pixel coordinates to image coordinates."""
        return dict(self._maps)

    def _sizes(self, size: int) -> dict:
        """{blob: spatial length} along one axis, or ValueError(short reason) if impossible."""
        sizes = {"data": size}
        for out, layer, src, *ref in self._steps:
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

    def supports(self, side: int) -> bool:
        """Whether an image side of ``side`` pixels goes through (every blob non-empty,
        every crop fits)."""
        try:
            self._sizes(side)
        except ValueError:
            return False
        return True

    def blob_sizes(self, size: int) -> dict:
        """{blob: spatial length} along one axis for an input side of ``size`` pixels.

        Raises ValueError, naming the blob and the supported sizes, when some
        layer would get an empty input or a crop does not fit.
        """
        try:
            return self._sizes(size)
        except ValueError as err:
            raise ValueError(
                f"{type(self).__name__} with the {self.config.name!r} backbone cannot segment an "
                f"image side of {size} pixels: {err}. {self.size_hint()}"
            ) from None

    def supported_sizes(self, up_to: int = 512) -> list:
        """Input side lengths in 1..up_to this network can segment."""
        return [s for s in range(1, up_to + 1) if self.supports(s)]

    def size_hint(self) -> str:
        ok = self.supported_sizes(256)
        if len(ok) == 256:
            return "Any size works for this configuration."
        return f"Supported sides up to 256: {_ranges(ok)}."

    def check_input(self, x) -> None:
        name = type(self).__name__
        if not all(hasattr(x, a) for a in ("shape", "ndim", "dtype")):
            raise TypeError(
                f"{name}: expected a NumPy or CuPy array of shape (N, 3, H, W), got "
                f"{type(x).__name__}; convert it first, e.g. numpy.asarray(x, dtype='float32')"
            )
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{name}: expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: got an empty batch (N = 0), shape {tuple(x.shape)}")
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

    def head(self, rng):
        return [
            ("score_fr", self._score(self.config.fc_channels, rng), "drop7"),
            ("upscore", self._upsample(64, 32), "score_fr"),
            ("score", Crop, "upscore", "data"),
        ]


class FCN16s(FCN):
    """FCN-16s: 2x upsampling of score_fr fused with pool4's scores, then 16x."""

    name = "fcn16s"

    def head(self, rng):
        fc, pool4 = self.config.fc_channels, self.config.widths[3]
        return [
            ("score_fr", self._score(fc, rng), "drop7"),
            ("upscore2", self._upsample(4, 2), "score_fr"),
            ("score_pool4", self._score(pool4, rng), "pool4"),
            ("score_pool4c", Crop, "score_pool4", "upscore2"),
            ("fuse_pool4", Fuse(), "upscore2", "score_pool4c"),
            ("upscore16", self._upsample(32, 16), "fuse_pool4"),
            ("score", Crop, "upscore16", "data"),
        ]

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

    def head(self, rng):
        fc, pool3, pool4 = self.config.fc_channels, self.config.widths[2], self.config.widths[3]
        return [
            ("score_fr", self._score(fc, rng), "drop7"),
            ("upscore2", self._upsample(4, 2), "score_fr"),
            ("scale_pool4", Scale(0.01 if self.at_once else 1.0), "pool4"),
            ("score_pool4", self._score(pool4, rng), "scale_pool4"),
            ("score_pool4c", Crop, "score_pool4", "upscore2"),
            ("fuse_pool4", Fuse(), "upscore2", "score_pool4c"),
            ("upscore_pool4", self._upsample(4, 2), "fuse_pool4"),
            ("scale_pool3", Scale(0.0001 if self.at_once else 1.0), "pool3"),
            ("score_pool3", self._score(pool3, rng), "scale_pool3"),
            ("score_pool3c", Crop, "score_pool3", "upscore_pool4"),
            ("fuse_pool3", Fuse(), "upscore_pool4", "score_pool3c"),
            ("upscore8", self._upsample(16, 8), "fuse_pool3"),
            ("score", Crop, "upscore8", "data"),
        ]

    def spec(self) -> dict:
        return {**super().spec(), "at_once": self.at_once}

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
