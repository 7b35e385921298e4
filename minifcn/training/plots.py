"""The pictures a run leaves behind: learning curves and prediction grids (PNG)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from minifcn.data.palette import colorize
from minifcn.storage.atomic import write_atomic


def _save_atomic(fig, path: Path) -> None:
    """PNG to a hidden temporary file, fsync, rename (see ``checkpoint.write_atomic``)."""
    write_atomic(Path(path), lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def plot_curves(history: list[dict], path, title: str = "") -> None:
    """Training loss and validation mean IU per epoch, side by side."""
    epochs = [h["epoch"] for h in history]
    # A bare Figure (no pyplot): drawing files never touches the notebook's backend.
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if all("val_loss" in h for h in history):
        ax1.plot(epochs, [h["val_loss"] for h in history], "s--", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("softmax cross-entropy")
    ax1.set_title("loss")
    ax1.legend()
    ax2.plot(epochs, [h["mean_iu"] for h in history], "o-", color="tab:green", label="mean IU")
    ax2.plot(
        epochs,
        [h["pixel_accuracy"] for h in history],
        ".:",
        color="tab:gray",
        label="pixel accuracy",
    )
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_title("validation")
    ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    _save_atomic(fig, path)


def plot_predictions(
    images,
    labels,
    preds,
    path,
    ignore_index: int = 255,
    titles=("image", "ground truth", "prediction"),
) -> None:
    """A grid with one row per example: image | ground truth | prediction.

    images: uint8 (N, H, W, 3); labels, preds: int (N, H, W).
    """
    n = len(images)
    fig = Figure(figsize=(6, 2 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        panels = (images[i], colorize(labels[i], ignore_index), colorize(preds[i], ignore_index))
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel, interpolation="nearest")
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(titles[j])
    _save_atomic(fig, path)
