"""A network's geometry, layer by layer: kernels, jumps, receptive fields, coordinate maps.

``python -m minifcn.explain`` prints it; tiling (``minifcn.inference``) reads its margins.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

from minifcn.nn import Conv2d, ConvTranspose2d, Crop, Fuse, MaxPool2d


def geometry_table(model, size: int | None = None) -> list[dict]:
    """One row per graph step: blob, layer, kernel/stride/padding, jump, receptive field, map."""
    maps = model.coordinate_maps()
    sizes = model.blob_sizes(size) if size else {}
    rf = {"data": Fraction(1)}
    rows = []
    for out, layer, src, *ref in model.graph():
        m = getattr(model, layer)
        jump_in = maps[src].scale
        if isinstance(m, (Conv2d, MaxPool2d)):
            k, s, p = m.kernel_size, m.stride, m.padding
            rf[out] = rf[src] + (k - 1) * jump_in
        elif isinstance(m, ConvTranspose2d):
            k, s, p = m.kernel_size, m.stride, m.padding
            rf[out] = rf[src] + (math.ceil(k / s) - 1) * jump_in
        elif not hasattr(m, "kernel_size") and m.coord_map().scale == 1:  # pointwise or a shift
            k = s = p = None
            rf[out] = max(rf[src], rf[ref[0]]) if isinstance(m, Fuse) else rf[src]
        else:
            raise TypeError(
                f"geometry_table: no receptive-field rule for {layer} ({type(m).__name__})"
            )
        kind = type(m).__name__
        if isinstance(m, Crop):
            kind = f"Crop to {ref[0]} at {m.offset[0]}"
        rows.append(
            {
                "blob": out,
                "layer": kind,
                "input": src,
                "k": k,
                "s": s,
                "p": p,
                "jump": maps[out].scale,
                "rf": rf[out],
                "map": str(maps[out]),
                "size": sizes.get(out),
            }
        )
    return rows


def explain(model, size: int | None = None) -> str:
    """The text ``python -m minifcn.explain`` prints."""
    cfg = model.config
    lines = [
        f"{type(model).__name__} on the {cfg.name!r} backbone "
        f"(conv1_1 padding {cfg.first_padding}, fc6 {cfg.fc6_kernel}x{cfg.fc6_kernel})",
        "",
        "Each conv/pool maps an output pixel to the centre of its input window:",
        "  x_in = stride * x_out + (kernel - 1)/2 - padding;  a transposed conv inverts that.",
        "Composing the maps from the image up gives each blob's 'x_img = jump*x + shift'.",
        "",
    ]
    header = f"{'blob':<15}{'layer':<34}{'k':>4}{'s':>4}{'p':>5}{'jump':>7}{'RF':>7}  map"
    if size:
        header += f"{'':<22}side@{size}"
    lines += [header, "-" * len(header)]
    for r in geometry_table(model, size):

        def f(v):
            return "" if v is None else (str(v) if not isinstance(v, Fraction) else _frac(v))

        row = (
            f"{r['blob']:<15}{r['layer']:<34}{f(r['k']):>4}{f(r['s']):>4}{f(r['p']):>5}"
            f"{f(r['jump']):>7}{f(r['rf']):>7}  {r['map']:<26}"
        )
        if size:
            row += f"{r['size']:>6}"
        lines.append(row.rstrip())
    lines += ["", "Crop offsets (computed, never typed in): (shift_ref - shift_big) / jump"]
    maps = model.coordinate_maps()
    for _, layer, src, *ref in model.graph():
        if isinstance(getattr(model, layer), Crop):
            b, r = maps[src], maps[ref[0]]
            lines.append(
                f"  {layer:<13} crop {src} ({b}) to {ref[0]} ({r}): "
                f"offset = ({_frac(r.shift)} - ({_frac(b.shift)})) / {_frac(b.scale)} = "
                f"{model.crop_offsets[layer]}"
            )
    lines += ["", f"crop_offsets = {model.crop_offsets}", model.size_hint()]
    lines += why_these_numbers(model, size)
    if cfg.first_padding == 100:
        lines += [
            "",
            "Why padding 100: fc6 needs a 7x7 pool5 map, i.e. an input of about 7*32 = 224",
            "pixels. Padding conv1_1 by 100 (198 extra pixels) makes even a 1-pixel image",
            "big enough, and leaves the upsampled scores larger than the image, so the",
            "final crop always fits. The price is the offset: the upsampled map starts",
            f"{model.crop_offsets['score']} pixels before the image's first pixel.",
        ]
    return "\n".join(lines)


def _probe(model, **changes):
    """The same network with a changed backbone config, at width 1 (geometry only), or the
    ValueError its construction raises."""
    cfg = dataclasses.replace(
        model.config, widths=(1,) * len(model.config.widths), fc_channels=1, **changes
    )
    kw = {"at_once": model.at_once} if hasattr(model, "at_once") else {}
    try:
        return type(model)(model.num_classes, cfg, **kw)
    except ValueError as err:
        return err


def why_these_numbers(model, size: int | None = None) -> list[str]:
    """How the offsets depend on conv1_1's padding and fc6, and (with ``size``) how many
    score cells the last upsampling gets: each figure computed by building variants."""
    from minifcn.analysis.oracle import model_grid

    cfg = model.config
    p = cfg.first_padding
    lines = ["", "Why these numbers (each computed by building the network with one change):"]
    other = _probe(model, first_padding=p + 1)
    moved = {k: other.crop_offsets[k] - v for k, v in model.crop_offsets.items()}
    only_final = all(v == 0 for k, v in moved.items() if k != "score")
    lines.append(
        f"  conv1_1 padding {p} -> {p + 1} changes the offsets by {moved}"
        + (": padding moves only the final crop" if only_final else "")
    )
    final = model.crop_offsets["score"]
    lines.append(
        f"  so the final offset is padding - {p - final}: conv1_1 needs padding >= {p - final} "
        "for the upsampled scores to start at or before the image's first pixel"
    )
    if cfg.fc6_kernel > 1:
        one = _probe(model, fc6_kernel=1)
        what = f"offsets {one.crop_offsets}" if not isinstance(one, Exception) else str(one)
        lines.append(
            f"  fc6 {cfg.fc6_kernel}x{cfg.fc6_kernel} without padding trims "
            f"{(cfg.fc6_kernel - 1) // 2} pool5 pixel(s) on each side; with a 1x1 fc6: {what}"
        )
    if size:
        stride, centres = model_grid(model, size)
        blob = [src for _, layer, src, *_ in model.graph() if layer.startswith("upscore")][-1]
        lines.append(
            f"  for a {size}-pixel side the last upsampling reads {blob}: {len(centres)} score "
            f"cells per side, stride {stride}, centred at image pixels "
            + ", ".join(f"{c:g}" for c in centres[:8])
            + (" ..." if len(centres) > 8 else "")
        )
    return lines


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{float(f):g}"
