"""Segment images: ``python -m minifcn.predict --checkpoint best.npz IMAGES... -o OUT``.

    python -m minifcn.predict --checkpoint best.npz photo.jpg -o mask.png    # one image
    python -m minifcn.predict --checkpoint best.npz photos/ -o predictions/  # a folder
    python -m minifcn.predict --checkpoint best.npz "photos/*.jpg" -o out/   # a glob

One image and an ``-o`` ending in .png (or no ``-o``: ``<image>_mask.png``):
writes the mask there and the mask over the image beside it (``mask_overlay.png``).
Otherwise (a folder, a glob, several images) ``-o`` is a folder (default ``predictions``) that gets
``<name>_mask.png`` and ``<name>_overlay.png`` for every image. A mask is a
palette PNG: its pixel values are the class ids, shown in colour. Every input
is checked, and no output file may exist (unless ``--force``), before anything
is segmented or written.
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import numpy as np
from PIL import Image

from minifcn.api import Segmenter, as_rgb
from minifcn.commands.args import ensure_device, memory_gib, positive_int, write_failed
from minifcn.data.files import DataError, image_header
from minifcn.data.folder import image_suffixes
from minifcn.data.palette import mask_image
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_atomic, write_new_atomic

DEFAULT_FOLDER = "predictions"
MASK_SUFFIX = ".png"  # masks are class ids: a lossless format, never JPEG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.predict",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    p.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns")
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="the mask PNG for one image (default <image>_mask.png), else the output folder "
        f"(default {DEFAULT_FOLDER}/)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument(
        "--max-memory",
        type=memory_gib,
        default=2.0,
        help="GiB the forward pass may use; a larger image is segmented in tiles",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        help="segment in tiles of this side (default: only when the image needs more than "
        "--max-memory)",
    )
    return p


def find_images(inputs) -> tuple[list[Path], list[str], bool]:
    """(image files, problems, whether the inputs name a set rather than one file).

    A folder gives its image files (by suffix, sorted, not its subfolders); a pattern
    with * ? or [ that is not an existing file is expanded as a glob."""
    suffixes = image_suffixes()
    images, problems, many = [], [], len(inputs) > 1
    for text in inputs:
        path = Path(text)
        if path.is_file():
            images.append(path)
        elif path.is_dir():
            many = True
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
            )  # fmt: skip
            if not found:
                problems.append(f"folder {path} holds no image files")
            images += found
        elif any(c in text for c in "*?["):
            many = True
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                problems.append(f"no file matches {text!r}")
            images += found
        else:
            problems.append(f"image file not found: {path}")
    return list(dict.fromkeys(images)), problems, many


def plan_outputs(images, output, many: bool) -> tuple[list[tuple[Path, Path, Path]], list[str]]:
    """[(image, mask path, overlay path)] and the problems (two images of one name)."""
    if not many and (output is None or Path(output).suffix):
        image = images[0]
        out = Path(output) if output else image.with_name(image.stem + "_mask.png")
        if out.suffix.lower() != MASK_SUFFIX:
            return [], [
                f"-o {out}: masks are written as PNG (lossless class ids); give a name ending "
                "in .png, or a folder"
            ]
        return [(image, out, out.with_name(out.stem + "_overlay" + out.suffix))], []
    folder = Path(output or DEFAULT_FOLDER)
    plan, seen, problems = [], {}, []
    if folder.exists() and not folder.is_dir():
        return [], [f"-o {folder} is a file; give the folder to write the masks into"]
    for image in images:
        if image.stem in seen:
            problems.append(
                f"{seen[image.stem]} and {image} would both write {folder / image.stem}_mask.png"
            )
            continue
        seen[image.stem] = image
        plan.append(
            (image, folder / f"{image.stem}_mask.png", folder / f"{image.stem}_overlay.png")
        )
    return plan, problems


def check_plan(plan, force: bool) -> list[str]:
    """Problems found before any work: unreadable images, outputs that exist."""
    problems = []
    for image, mask, over in plan:
        try:
            image_header(image)
        except DataError as err:
            problems.append(str(err))
        for path in (mask, over):
            if path.is_dir():
                problems.append(f"{path} is a folder; give -o a file name")
            elif not force and os.path.lexists(path):
                problems.append(f"{path} exists; pass --force to overwrite it")
    return problems


def save_pair(paths, pictures, force: bool) -> None:
    """Write the mask and the overlay, each atomically; without ``force`` never over an
    existing file, and a failure takes back the half written here (OSError raised)."""
    place = write_atomic if force else write_new_atomic
    written = []
    try:
        for path, picture in zip(paths, pictures):
            place(path, lambda f, im=picture: im.save(f, format="PNG"))
            written.append((path, os.lstat(path).st_ino))
    except OSError:
        if not force:  # the mask without its overlay is half an output
            for done, inode in written:
                if os.lstat(done).st_ino == inode:  # still the file this command made
                    done.unlink()
        raise


def main(argv=None) -> list[Path]:
    args = _parser().parse_args(argv)
    ensure_device(args.device)
    images, problems, many = find_images(args.images)
    plan, more = plan_outputs(images, args.output, many) if images else ([], [])
    problems += more + check_plan(plan, args.force)
    if problems:
        if len(problems) == 1:
            raise SystemExit(f"error: {problems[0]}")
        raise SystemExit(
            f"error: {len(problems)} problems, nothing was written:\n"
            + "\n".join(f"error: {p}" for p in problems)
        )
    try:
        model, meta = load_model(args.checkpoint)
        segmenter = Segmenter(model, meta, args.device, args.max_memory)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    names = segmenter.class_names
    written = []
    for image_path, mask_path, over_path in plan:
        try:
            image = as_rgb(image_path)
            pred = segmenter.segment(image, tile=args.tile)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        if segmenter.note:
            print(f"{image_path}: {segmenter.note}")
        pictures = (mask_image(pred), Image.fromarray(segmenter.overlay(image, pred)))
        try:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            save_pair((mask_path, over_path), pictures, args.force)
        except OSError as err:
            raise write_failed(mask_path, err) from None
        counts = np.bincount(pred.ravel(), minlength=segmenter.num_classes)
        shares = ", ".join(
            f"{names[c]} {counts[c] / pred.size:.1%}" for c in np.flatnonzero(counts)
        )
        print(f"{image_path} ({image.shape[1]}x{image.shape[0]}): {shares}")
        written.append(mask_path)
    if len(plan) == 1:
        print(f"wrote {plan[0][1]} and {plan[0][2]}")
    else:
        print(f"wrote {len(plan)} masks and {len(plan)} overlays into {plan[0][1].parent}")
    return written


if __name__ == "__main__":
    main()
