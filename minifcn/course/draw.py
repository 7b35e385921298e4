"""Drawings for the notebooks: the networks as figures, and the score map at every stage.

Everything here is derived from a model's ``graph()`` (its list of steps), its layers
and its coordinate maps, so a drawing cannot drift from the code: change a head and
the figure changes with it.

* ``layout(model)``: the nodes (blobs) and edges of the figure, as data (tested).
* ``draw_network(model, ax)``: one network in the spirit of the paper's Figure 3: the
  backbone's pooling stages left to right, each at the height of its stride, and the
  head's score, upsampling, crop and fuse steps after it.
* ``stage_blobs(model, x)``: every blob of one forward pass (walking ``graph()``).
* ``draw_score_maps(model, image, x, stages)``: each stage's class scores as images,
  placed in image coordinates by the blob's coordinate map, so that the maps line up
  with the image and with each other.
"""

from __future__ import annotations

import math

import numpy as np

SCORE_STAGES = (
    "score_fr",
    "upscore2",
    "score_pool4c",
    "fuse_pool4",
    "upscore_pool4",
    "score_pool3c",
    "fuse_pool3",
    "upscore8",
)

_KIND_COLOURS = {
    "image": "0.55",
    "backbone": "0.75",
    "score": "tab:orange",
    "upsample": "tab:blue",
    "crop": "tab:green",
    "fuse": "tab:red",
    "scale": "0.9",
}


def _kind(layer) -> str:
    from minifcn.nn import Conv2d, ConvTranspose2d, Crop, Fuse, Scale

    if isinstance(layer, ConvTranspose2d):
        return "upsample"
    if isinstance(layer, Crop):
        return "crop"
    if isinstance(layer, Fuse):
        return "fuse"
    if isinstance(layer, Scale):
        return "scale"
    if isinstance(layer, Conv2d):
        return "score"
    return "backbone"


def _label(name: str, layer) -> str:
    from minifcn.nn import Conv2d, ConvTranspose2d, Crop, Scale

    if isinstance(layer, ConvTranspose2d):
        return f"{name}\n{layer.kernel_size}/{layer.stride} up x{layer.stride}"
    if isinstance(layer, Crop):
        return f"{name}\ncrop {layer.offset[0]}"
    if isinstance(layer, Scale):
        return f"{name}\nx{layer.factor:g}"
    if isinstance(layer, Conv2d):
        return f"{name}\n{layer.kernel_size}x{layer.kernel_size} conv"
    return name


def layout(model) -> dict:
    """The figure of ``model`` as data, from ``model.graph()``.

    Returns {"nodes": {blob: {"x", "level", "kind", "label"}}, "edges": [(src, dst, what)]},
    ``what`` being "data" (the values flow) or "size" (a crop's reference: only its size
    and position are read).
    Shown are the image, each backbone blob that ends a stride (the pools, and fc7's
    ``drop7`` as "fc6-fc7"), and every step of the head; the backbone steps between two
    shown blobs become one edge. ``level`` is log2 of the blob's stride in image pixels.
    """
    maps = model.coordinate_maps()
    steps = model.graph()
    backbone = set(model.backbone)
    shown = ["data"]
    for out, _, _, *_ in steps:
        if out in backbone and (out.startswith("pool") or out == model.backbone[-1]):
            shown.append(out)
    nodes = {}
    for i, blob in enumerate(shown):
        label = "image" if blob == "data" else ("fc6-fc7" if blob == model.backbone[-1] else blob)
        nodes[blob] = {
            "x": i,
            "level": math.log2(maps[blob].scale),
            "kind": "image" if blob == "data" else "backbone",
            "label": label,
        }
    edges = [(a, b, "data") for a, b in zip(shown, shown[1:])]
    alias = {}  # a Scale by 1 (FCN-8s's scale_pool4/3 outside the at-once variant) is not drawn
    x = len(shown)
    for out, layer_name, src, *ref in steps:
        if out in backbone:
            continue
        layer = getattr(model, layer_name)
        src = alias.get(src, src)
        if _kind(layer) == "scale" and layer.factor == 1.0:
            alias[out] = src
            continue
        nodes[out] = {
            "x": x,
            "level": math.log2(maps[out].scale),
            "kind": _kind(layer),
            "label": _label(out, layer),
        }
        x += 1
        edges.append((src, out, "data"))
        if ref:  # a crop's reference gives only a size and a position; a fuse's is a summand
            edges.append(
                (alias.get(ref[0], ref[0]), out, "size" if _kind(layer) == "crop" else "data")
            )
    return {"nodes": nodes, "edges": edges}


def draw_network(model, ax, title: str | None = None) -> dict:
    """Draw ``layout(model)`` on ``ax``; returns the layout."""
    from matplotlib.patches import FancyBboxPatch

    lay = layout(model)
    nodes = lay["nodes"]
    for src, dst, what in lay["edges"]:
        a, b = nodes[src], nodes[dst]
        ax.annotate(
            "",
            xy=(b["x"], -b["level"]),
            xytext=(a["x"], -a["level"]),
            arrowprops={
                "arrowstyle": "->",
                "color": "0.35" if what == "data" else "tab:green",
                "lw": 1,
                "ls": "-" if what == "data" else ":",
                "shrinkA": 14,
                "shrinkB": 14,
                "connectionstyle": "arc3,rad=0.15" if abs(b["x"] - a["x"]) > 1 else "arc3",
            },
        )
    for node in nodes.values():
        height = 0.75 * 2 ** (-node["level"] / 2.5)  # finer blobs drawn taller
        ax.add_patch(
            FancyBboxPatch(
                (node["x"] - 0.42, -node["level"] - height / 2),
                0.84,
                height,
                boxstyle="round,pad=0.02",
                fc=_KIND_COLOURS[node["kind"]],
                ec="0.2",
                alpha=0.85,
            )
        )
        ax.text(node["x"], -node["level"], node["label"], ha="center", va="center", fontsize=6.5)
    levels = sorted({n["level"] for n in nodes.values()})
    ax.set_yticks([-lv for lv in levels], [f"stride {2**lv:g}" for lv in levels], fontsize=7)
    ax.set_xticks([])
    ax.set_xlim(-0.6, max(n["x"] for n in nodes.values()) + 0.6)
    ax.set_ylim(-max(levels) - 0.7, 0.7)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or type(model).__name__, fontsize=10, loc="left")
    return lay


def draw_networks(models, figsize=(13, 9)):
    """One panel per model (e.g. FCN-32s, FCN-16s, FCN-8s), with a legend of the kinds."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(models), 1, figsize=figsize, squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        draw_network(model, ax)
    handles = [
        Patch(fc=c, ec="0.2", label=k) for k, c in _KIND_COLOURS.items() if k not in ("scale",)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def stage_blobs(model, x) -> dict:
    """{blob: array} for one forward pass of ``model`` on ``x``, walking ``graph()``.

    Run it on a model in eval mode (dropout off) to see what it predicts.
    """
    blobs = {"data": x}
    for out, layer, src, *ref in model.graph():
        module = getattr(model, layer)
        blobs[out] = module(blobs[src], blobs[ref[0]]) if ref else module(blobs[src])
    return blobs


def image_extent(cmap, rows: int, cols: int) -> tuple:
    """(left, right, bottom, top) of a blob's pixels in image coordinates, for imshow."""
    s, b = float(cmap.scale), float(cmap.shift)
    return (b - s / 2, b + s * (cols - 0.5), b + s * (rows - 0.5), b - s / 2)


def draw_score_maps(model, image, x, stages=SCORE_STAGES, class_index=None, figsize=None):
    """Each stage's scores for one image, every map placed where it lies on the image.

    Top row: the stage's arg-max class (colours of ``minifcn.data.colorize``). Bottom
    row: the score of ``class_index`` (default: the most frequent non-background class of
    the final prediction), one colour scale per map. The grey frame is the image.
    Returns (figure, blobs).
    """
    import matplotlib.pyplot as plt

    from minifcn.backend import as_numpy
    from minifcn.data import colorize

    blobs = stage_blobs(model, x)
    maps = model.coordinate_maps()
    final = as_numpy(blobs[model.graph()[-1][0]])[0]
    if class_index is None:
        counts = np.bincount(final.argmax(axis=0).ravel(), minlength=final.shape[0])
        counts[0] = 0
        class_index = int(counts.argmax()) if counts.any() else 1
    stages = [s for s in stages if s in blobs]
    side = image.shape[0]
    fig, axes = plt.subplots(
        2, len(stages) + 1, figsize=figsize or (2.0 * (len(stages) + 1), 4.6), squeeze=False
    )
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=8)
    axes[1, 0].imshow(image)
    axes[1, 0].set_title(f"class {class_index}", fontsize=8)
    for k, stage in enumerate(stages, 1):
        scores = as_numpy(blobs[stage])[0]
        rows, cols = scores.shape[1:]
        extent = image_extent(maps[stage], rows, cols)
        axes[0, k].imshow(colorize(scores.argmax(axis=0)), extent=extent, interpolation="nearest")
        axes[1, k].imshow(scores[class_index], extent=extent, cmap="magma", interpolation="nearest")
        axes[0, k].set_title(f"{stage}\n{rows}x{cols}, stride {maps[stage].scale}", fontsize=8)
        for ax in axes[:, k]:
            ax.add_patch(plt.Rectangle((-0.5, -0.5), side, side, fill=False, ec="0.6", lw=1))
    for ax in axes.ravel():
        ax.set_xlim(-0.5 - side * 0.15, side * 1.15 - 0.5)
        ax.set_ylim(side * 1.15 - 0.5, -0.5 - side * 0.15)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig, blobs
