"""Image sizes the network takes: the backbone's size rules applied to a dataset for the user.

The paper backbone takes any image side (conv1_1 pads by 100). The mini one
pads by only 26, and its FCN-8s takes only some sides (31-46, 63-78, 95-110,
...: ``python -m minifcn.explain --config mini`` shows why), so a user's
125-pixel photo would stop the first training step. ``fit_sizes`` looks at the
training images' sizes (file headers only) before training and picks what
makes every batch go through:

1. ``crop_size`` given: random square crops of that side, raised to the next
   side the network takes.
2. every image the same size: whole images, each side padded at the bottom
   and right up to the next side the network takes.
3. sizes differ, batch 1: whole images, each padded the same way.
4. sizes differ, larger batches (which need one size): random square crops
   whose side is the smallest image side (at most ``MAX_AUTO_CROP``), moved
   down to a side the network takes.

Padding gets the ignore label, so it adds nothing to the loss or the metrics.
Every choice that changes what the network sees comes back as a note to print.
"""

from __future__ import annotations

from functools import partial

MAX_AUTO_CROP = 512  # largest crop side chosen without being asked
LARGE_IMAGE = 1024  # above this side, training on whole images gets a memory note


def next_side(supports, side: int, reach: int = 256) -> int:
    """The smallest side >= ``side`` for which ``supports(side)`` holds.

    ValueError when none lies within ``reach`` pixels."""
    for s in range(max(1, int(side)), int(side) + reach):
        if supports(s):
            return s
    raise ValueError(f"no image side from {side} to {side + reach - 1} pixels goes through")


def side_at_most(supports, side: int) -> int | None:
    """The largest side <= ``side`` for which ``supports`` holds, or None."""
    for s in range(int(side), 0, -1):
        if supports(s):
            return s
    return None


def _size_range(sizes) -> str:
    areas = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
    (h0, w0), (h1, w1) = areas[0], areas[-1]
    return f"from {w0}x{h0} to {w1}x{h1}"


def fit_sizes(dataset, supports, batch_size: int, crop_size=None, what="the network"):
    """Make every training batch of ``dataset`` a size ``supports`` accepts; returns notes.

    Args:
        dataset: a ``files.SegmentationFiles`` (anything with ``image_sizes()``,
            ``transform`` and ``fit_side``); a dataset without ``image_sizes`` (the
            generated shapes) is left as it is.
        supports: ``side -> bool`` (``model.supports``).
        batch_size: images per training batch.
        crop_size: the side asked for with ``--crop-size``, or None.
        what: the network, as the notes name it ("the mini FCN-8s").

    Sets ``dataset.transform.crop_size`` (cases 1 and 4) or ``dataset.fit_side``
    (cases 2 and 3); see the module docstring. Returns the lines to print.
    """
    if not hasattr(dataset, "image_sizes"):
        return []
    split = getattr(dataset, "split", "training")
    notes = []
    if crop_size is not None:
        side = next_side(supports, crop_size)
        if side != crop_size:
            notes.append(f"--crop-size {crop_size} raised to {side}, the next side {what} takes")
        dataset.transform.crop_size = side
        return notes
    sizes = dataset.image_sizes()
    if not sizes:
        return notes
    fit = partial(next_side, supports)
    if len(set(sizes)) == 1 or batch_size == 1:
        dataset.fit_side = fit
        changed = [(h, w) for h, w in sizes if (fit(h), fit(w)) != (h, w)]
        if len(set(sizes)) == 1 and changed:
            h, w = sizes[0]
            notes.append(
                f"{split} images are {w}x{h}; {what} takes {fit(w)}x{fit(h)}: each is padded "
                "at the bottom and right with the ignore label"
            )
        elif changed:
            notes.append(
                f"{split} images differ in size ({_size_range(sizes)}); {len(changed)} of the "
                f"{len(sizes)} are padded at the bottom and right, with the ignore label, up to "
                f"the next size {what} takes"
            )
        big = max(max(hw) for hw in sizes)
        if big > LARGE_IMAGE:
            notes.append(
                f"the largest {split} image has a side of {big} pixels; whole images that "
                f"large need much memory: --crop-size {MAX_AUTO_CROP} trains on crops instead"
            )
        return notes
    smallest = min(min(hw) for hw in sizes)
    side = side_at_most(supports, min(smallest, MAX_AUTO_CROP)) or next_side(supports, smallest)
    dataset.transform.crop_size = side
    notes.append(
        f"{split} images differ in size ({_size_range(sizes)}) and a batch of {batch_size} "
        f"needs one size: training on random {side}x{side} crops (the smallest image side, "
        f"at most {MAX_AUTO_CROP}, as a side {what} takes); pass --crop-size to choose, or "
        "--batch-size 1 for whole images"
    )
    return notes
