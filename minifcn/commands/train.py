"""Train an FCN: ``python -m minifcn.train`` (mini FCN-8s on the embedded shapes set).

    python -m minifcn.train                                  # minutes on a laptop CPU
    python -m minifcn.train --model fcn32s --out runs/fcn32s
    python -m minifcn.train --model fcn16s --init-from runs/fcn32s/best.npz   # staged
    python -m minifcn.train --dataset voc --data-root ~/data/VOCdevkit/VOC2012 \\
        --config paper --vgg16 vgg16_weights.npz --optimizer sgd --lr 1e-4 --device gpu
    python -m minifcn.train --out runs/fcn8s_shapes --resume   # continue exactly
    python -m minifcn.train --recipe paper --model fcn32s      # the paper's solver
    python -m minifcn.train --dataset folder --data-root my_data   # your own (docs/your-data.md)

The run folder gets metrics.csv / metrics.json (one row per epoch), best.npz and
last.npz, curves.png and predictions.png.

This module is the command: its flags and ``train(argv)``, which maps every
expected failure to one line. The training itself is ``minifcn/training/``:
``loop.py`` (the loop: read it first), ``setup.py`` (arguments, run folder, data,
model, optimiser), ``resume.py``, ``saving.py`` (checkpoints and metrics, each
save one commit of the run folder), ``report.py`` and ``state.py`` (``RunState``,
everything a checkpoint must carry to continue exactly).
"""

from __future__ import annotations

import argparse
import sys

from minifcn.accel.cpu import keep_freed_memory
from minifcn.commands.args import (
    bounded_int,
    check_fits,
    ensure_device,
    finite_float,
    fraction,
    nonnegative_int,
    positive_int,
    shapes_bytes,
)
from minifcn.data import DataError
from minifcn.data.registry import DATASETS, DEFAULT_VAL_FRACTION, datasets_help
from minifcn.distributed import DistributedError, SingleProcess, launched
from minifcn.models.checkpoint import NonFiniteWeights
from minifcn.training.loop import run_epochs
from minifcn.training.ranks import set_up_ranks, stop_line
from minifcn.training.recipe import RECIPES
from minifcn.training.report import describe, finish
from minifcn.training.runfolder import (
    RunFolderError,
    Stopped,
    best_row,
    is_better,
    signals_stop_the_run,
)
from minifcn.training.saving import kept_message
from minifcn.training.state import DEFAULT_EPOCHS, NonFiniteLoss, RunError, RunState

__all__ = ["RunState", "best_row", "is_better", "main", "parse_args", "train"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.train",
        description="Train FCN-32s/16s/8s with hand-written NumPy/CuPy layers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="fcn8s", choices=["fcn32s", "fcn16s", "fcn8s"])
    p.add_argument(
        "--at-once",
        action="store_true",
        help="FCN-8s trained in one stage: pool4 x0.01, pool3 x0.0001",
    )
    p.add_argument(
        "--config",
        default=None,
        choices=["mini", "paper"],
        help="backbone (default: the dataset's: "
        + ", ".join(f"{s.config} for {s.name}" for s in DATASETS.values())
        + ")",
    )
    p.add_argument("--dataset", default="shapes", choices=list(DATASETS), help=datasets_help())
    p.add_argument(
        "--data-root",
        default=None,
        help="; ".join(f"{s.name}: {s.root_hint}" for s in DATASETS.values() if s.on_disk),
    )
    p.add_argument("--train-size", type=positive_int, default=None, help="shapes: training images")
    p.add_argument("--val-size", type=positive_int, default=None, help="shapes: validation images")
    p.add_argument(
        "--crop-size",
        type=bounded_int(1, 8192),
        default=None,
        help="data read from disk: random training crops of this side (default: whole images, "
        "padded to a size the network takes; random crops when sizes differ and "
        "--batch-size > 1)",
    )
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="folder/labelme without classes.txt: the number of classes (ids 0..N-1)",
    )
    p.add_argument(
        "--ignore-index",
        type=nonnegative_int,
        default=None,
        help="folder/labelme: the mask value that marks pixels to ignore (default 255)",
    )
    p.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help="folder/labelme without a split: the share of images validated on "
        f"(default {DEFAULT_VAL_FRACTION:g}, a fixed seeded draw)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument(
        "--epochs",
        type=bounded_int(1, 100_000),
        default=None,
        help=f"default {DEFAULT_EPOCHS} (with --resume: the run's own; a different value "
        "changes the learning-rate schedule's length)",
    )
    p.add_argument(
        "--recipe",
        default="default",
        choices=list(RECIPES),
        help="paper: the reference solver (summed loss; SGD, lr 1e-10/1e-12/1e-14 for "
        "fcn32s/16s/8s, momentum 0.99, weight decay 5e-4, batch 1, fixed bilinear "
        "upsampling); typed flags win. See minifcn/training/recipe.py",
    )
    p.add_argument("--batch-size", type=bounded_int(1, 100_000), default=2)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=finite_float, default=None, help="default: 3e-3 (adam), 1e-4 (sgd)")
    p.add_argument("--momentum", type=finite_float, default=0.9)
    p.add_argument("--weight-decay", type=finite_float, default=5e-4)
    p.add_argument("--schedule", default="poly", choices=["poly", "step", "constant"])
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="run folder (default: runs/<model>_<dataset>)")
    p.add_argument(
        "--init-from",
        default=None,
        help="checkpoint to start from (staged training: fcn32s -> fcn16s -> fcn8s)",
    )
    p.add_argument("--vgg16", default=None, help="ImageNet VGG16 weights (.npz) for the backbone")
    p.add_argument(
        "--freeze-upsampling",
        action="store_true",
        help="keep the bilinear upsampling fixed, as the reference code does",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument(
        "--grid", type=bounded_int(0, 100), default=6, help="validation images in predictions.png"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None):
    return _parser().parse_args(argv)


def given_flags(argv) -> set[str]:
    """The destinations of the flags actually typed in ``argv`` (not defaults)."""
    p = _parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def train(argv=None, comm=None) -> dict | None:
    """``python -m minifcn.train ...`` as a function; returns the run's summary.

    Every expected failure ends in SystemExit with one line "error: ..." (130 for Ctrl-C).
    ``comm``: this rank's communicator under ``mpiexec`` (``main`` passes it; rank 0
    returns the summary, the other ranks None); one process by default.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    for flag, size in (("--train-size", args.train_size), ("--val-size", args.val_size)):
        if size:  # shapes are generated in memory: refuse what cannot fit, before anything
            check_fits(shapes_bytes(size), f"{flag} {size}")
    comm = SingleProcess() if comm is None else comm
    with signals_stop_the_run():  # SIGTERM and SIGHUP end a run as Ctrl-C does
        return _train(args, argv, comm)


def _stop_code(err: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the run, exit status): 130 for Ctrl-C, 128 + n for signal n."""
    if isinstance(err, Stopped):
        return f"stopped by {err.name}", 128 + err.signum
    return "interrupted", 130


def _train(args, argv, comm) -> dict | None:
    try:
        comm.select_device(args.device)  # one GPU per rank
        ensure_device(args.device)
        run = set_up_ranks(comm, args, given_flags(argv), parse_args([]))
    except (RunError, RunFolderError, DistributedError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt as err:  # before the first step: nothing to save
        what, code = _stop_code(err)
        print(f"\n{what} before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(code) from None
    try:
        if comm.is_root:
            describe(run)
        run_epochs(run)
        return finish(run) if comm.is_root else None
    except KeyboardInterrupt as err:
        what, code = _stop_code(err)
        print("\n" + stop_line(run, what, ": "), file=sys.stderr)
        raise SystemExit(code) from None
    except DistributedError as err:  # another rank stopped, or a collective timed out
        raise SystemExit(stop_line(run, f"error: {err}")) from None
    except NonFiniteLoss as err:
        raise SystemExit(f"error: {err}") from None
    except NonFiniteWeights as err:
        raise SystemExit(
            f"error: {err} during epoch {run.state.epoch + 1} (lr {run.opt.lr:g}); try a "
            f"lower --lr. {kept_message(run)}"
        ) from None
    except (DataError, FileNotFoundError) as err:
        raise SystemExit(stop_line(run, f"error: {err}")) from None
    except (RunError, RunFolderError) as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        run.folder.close(remove_if_unused=True)


def main(argv=None) -> None:
    keep_freed_memory()  # fewer page faults per step (minifcn.accel.cpu)
    with launched(argv) as comm:  # one process, or one rank of an mpiexec job
        train(argv, comm)


if __name__ == "__main__":
    main()
