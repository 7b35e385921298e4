"""Train an FCN: ``python -m minifcn.train`` (mini FCN-8s on the embedded shapes set).

    python -m minifcn.train                                  # minutes on a laptop CPU
    python -m minifcn.train --model fcn32s --out runs/fcn32s
    python -m minifcn.train --model fcn16s --init-from runs/fcn32s/best.npz   # staged
    python -m minifcn.train --dataset voc --data-root ~/data/VOCdevkit/VOC2012 \\
        --config paper --vgg16 vgg16_weights.npz --optimizer sgd --lr 1e-4 --device gpu
    python -m minifcn.train --out runs/fcn8s_shapes --resume   # continue exactly

The run folder gets metrics.csv / metrics.json (one row per epoch), best.npz and
last.npz, curves.png and predictions.png.

A run's life, one function each: ``set_up`` (check the arguments, lock the run
folder, check the data, build model and optimiser; ``resume`` when continuing),
then per epoch ``train_epoch``, ``validate`` and ``save_epoch`` (one commit of
last.npz, best.npz and the metrics), and ``finish``. Everything a checkpoint
must carry to continue exactly is the ``RunState``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minifcn.accel.cpu import keep_freed_memory
from minifcn.commands.args import ensure_device, finite_float, nonnegative_int, positive_int
from minifcn.data import DataError, build_dataset, iterate_batches, num_batches
from minifcn.data.transforms import denormalize
from minifcn.inference.engine import (
    batch_to_device,
    collapsed,
    evaluate,
    predict_labels,
    predict_scores,
)
from minifcn.models import FCN8s, FCN16s, build_model
from minifcn.models.checkpoint import (
    RUN_FORMAT,
    NonFiniteWeights,
    NotARunCheckpoint,
    checkpoint_writer,
    load_model,
    load_run_checkpoint,
)
from minifcn.models.pretrained import load_vgg16_npz
from minifcn.nn import SoftmaxCrossEntropy
from minifcn.optim import SGD, Adam, ConstantLR, PolyLR, StepLR
from minifcn.storage.npz import nonfinite_arrays
from minifcn.training.plots import plot_curves, plot_predictions
from minifcn.training.runfolder import (
    RunFolder,
    RunFolderError,
    best_row,
    interrupts_deferred,
    is_better,
)

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")
DEFAULT_EPOCHS = 5

# Flags --resume may change; every other flag is part of the run's definition.
RESUME_CHANGEABLE = ("device", "no_progress", "out", "resume", "epochs", "grid", "data_root")

__all__ = ["RunState", "best_row", "is_better", "main", "parse_args", "train"]


class NonFiniteLoss(RuntimeError):
    pass


class RunError(Exception):
    """Stops the run with one line (the message); nothing inconsistent is left behind."""


# ------------------------------------------------------------------------ arguments
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
        help="backbone (default: mini for shapes, paper for voc/ade20k)",
    )
    p.add_argument("--dataset", default="shapes", choices=["shapes", "voc", "ade20k"])
    p.add_argument("--data-root", default=None, help="VOCdevkit/VOC2012 or ADEChallengeData2016")
    p.add_argument("--train-size", type=positive_int, default=None, help="shapes: training images")
    p.add_argument("--val-size", type=positive_int, default=None, help="shapes: validation images")
    p.add_argument(
        "--crop-size",
        type=positive_int,
        default=None,
        help="voc/ade20k: random training crops of this side (enables batches > 1)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default {DEFAULT_EPOCHS} (with --resume: the run's own; a different value "
        "changes the learning-rate schedule's length)",
    )
    p.add_argument("--batch-size", type=positive_int, default=2)
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
        "--grid", type=nonnegative_int, default=6, help="validation images in predictions.png"
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


# ------------------------------------------------------------------------ run state
@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint (``meta["state"]``)."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps of epoch ``epoch + 1`` finished
    iteration: int = 0  # steps finished in all
    loss_sum: float = 0.0  # training loss of this epoch so far, summed over images
    loss_count: int = 0
    best_mean_iu: float | None = None
    best_epoch: int | None = None
    history: list = field(default_factory=list)  # one row per finished epoch
    wall_time: float = 0.0
    run_id: str = ""  # the same in every checkpoint of one run

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunState:
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in known})
        if state.best_epoch is None:
            state.best_mean_iu = None  # older checkpoints stored -1.0
        return state

    def where(self) -> str:
        """'end of epoch 2' or 'epoch 3, step 5' (what a checkpoint of this state holds)."""
        if self.step_in_epoch == 0:
            return f"end of epoch {self.epoch}" if self.epoch else "before the first step"
        return f"epoch {self.epoch + 1}, step {self.step_in_epoch}"


@dataclass
class Run:
    """Everything a running training needs, built by ``set_up``."""

    args: argparse.Namespace
    folder: RunFolder
    cfg_name: str
    train_set: object
    val_set: object
    model: object
    opt: object
    schedule: object
    loss_fn: object
    steps_per_epoch: int
    state: RunState
    step_rng: dict = field(default_factory=dict)  # dropout state after the last finished step
    saved: str | None = None  # what last.npz on disk holds ("end of epoch 2"), if any
    warned_collapse: bool = False

    @property
    def out(self) -> Path:
        return self.folder.path


# ------------------------------------------------------------------------ set-up
def check_args(args) -> None:
    """Cross-flag checks argparse cannot express; RunError with every problem listed."""
    problems = []
    if args.resume:  # the run's own settings are checked; typed ones by merge_resume_args
        if args.out is None:
            raise RunError("--resume needs --out, the run folder to continue")
        return
    if args.dataset == "shapes" and args.crop_size:
        problems.append("--crop-size is for voc/ade20k; shapes images are all the same size")
    if args.dataset != "shapes":
        if args.batch_size > 1 and not args.crop_size:
            problems.append("images differ in size: use --crop-size with --batch-size > 1")
    if args.at_once and args.model != "fcn8s":
        problems.append("--at-once is for --model fcn8s")
    if problems:
        raise RunError("; ".join(problems))
    if args.lr is not None and args.lr > 1:
        print(
            f"warning: --lr {args.lr:g} is far above the usual range (1e-5 to 1e-2); "
            "training will most likely diverge",
            file=sys.stderr,
        )


def open_run_folder(args) -> RunFolder:
    """The run folder, locked for this run. Never one that holds a run unless --resume."""
    if args.resume:
        out = Path(args.out)
        if not out.is_dir():
            raise RunError(f"cannot resume: run folder {out} does not exist")
        folder = RunFolder.open(out, create=False)
        return folder
    if args.out is not None:
        folder = RunFolder.open(args.out)
        if folder.run_files():
            folder.close()
            raise RunError(
                f"run folder {args.out} is not empty; pass --resume to continue that run "
                "or choose another --out (nothing was overwritten)"
            )
        return folder
    base = Path("runs") / f"{args.model}_{args.dataset}"
    out, k = base, 2
    while True:
        try:
            folder = RunFolder.open(out)
        except RunFolderError as err:
            if "in use" not in str(err):
                raise
        else:
            if not folder.run_files():
                return folder
            folder.close()
        out, k = Path(f"{base}_{k}"), k + 1


def make_datasets(args):
    kw_train, kw_val = {}, {}
    if args.dataset == "shapes":
        if args.train_size:
            kw_train["size"] = args.train_size
        if args.val_size:
            kw_val["size"] = args.val_size
        kw_train["seed"] = kw_val["seed"] = args.seed
        kw_train["augment"] = True  # random quarter turns and flips, new each epoch
    else:
        kw_train.update(
            crop_size=args.crop_size,
            flip=True,
            seed=args.seed,
            scale_range=(0.75, 1.25) if args.crop_size else None,
        )
    train = build_dataset(args.dataset, "train", args.data_root, **kw_train)
    val = build_dataset(args.dataset, "val", args.data_root, **kw_val)
    for split, ds in (("train", train), ("val", val)):
        if len(ds) == 0:
            raise RunError(f"the {split} split of {args.dataset} is empty")
    return train, val


def check_data(datasets, show_progress: bool) -> None:
    """Open every file's header before training; RunError listing each problem."""
    problems = []
    for name, ds in datasets:
        check = getattr(ds, "check_files", None)
        if check is None:
            continue  # generated in memory
        bar = (
            (lambda it, n=name: tqdm(it, desc=f"checking {n} files", leave=False))
            if (show_progress)
            else None
        )
        problems += check(progress=bar)
    problems = list(dict.fromkeys(problems))  # a file listed in both splits counts once
    if problems:
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RunError(
            f"{len(problems)} data problem(s) found before training:\n"
            + "\n".join(f"error: {p}" for p in shown)
            + more
        )


def make_model(args, num_classes: int, cfg_name: str):
    kw = {"freeze_upsampling": args.freeze_upsampling, "rng": args.seed}
    if args.model == "fcn8s":
        kw["at_once"] = args.at_once
    model = build_model(args.model, num_classes, cfg_name, **kw)
    if args.vgg16:
        load_vgg16_npz(model, args.vgg16)
        print(f"loaded ImageNet VGG16 weights from {args.vgg16}")
    if args.init_from:
        model = init_from(model, args.init_from)
    return model


def init_from(model, path):
    """Start ``model`` from a checkpoint: the same model, or the previous stage.

    The new model keeps this run's own options (``--at-once``,
    ``--freeze-upsampling``); only weights come from the checkpoint.
    """
    src, _ = load_model(path)
    if src.num_classes != model.num_classes or src.config != model.config:
        raise RunError(
            f"{path} holds a {src.name} with {src.num_classes} classes on the "
            f"{src.config.name!r} backbone; this run needs {model.num_classes} classes on "
            f"{model.config.name!r}"
        )
    kw = {"freeze_upsampling": model.freeze_upsampling, "rng": 0}
    if (src.name, model.name) == ("fcn32s", "fcn16s"):
        new = FCN16s.from_fcn32s(src, **kw)
    elif (src.name, model.name) == ("fcn16s", "fcn8s"):
        new = FCN8s.from_fcn16s(src, at_once=model.at_once, **kw)
    elif src.name == model.name:
        model.load_state_dict(src.state_dict())
        new = model
    else:
        raise RunError(
            f"cannot start {model.name} from a {src.name} checkpoint ({path}); stages go "
            "fcn32s -> fcn16s -> fcn8s"
        )
    print(f"initialised {model.name} from {src.name} checkpoint {path}")
    return new


def make_optimizer(args, model, steps_total: int):
    lr = args.lr if args.lr is not None else (3e-3 if args.optimizer == "adam" else 1e-4)
    if args.optimizer == "adam":
        opt = Adam(model.parameters(), lr=lr, weight_decay=0.0)
    else:
        opt = SGD(model.parameters(), lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.schedule == "poly":
        schedule = PolyLR(lr, max_iter=steps_total)
    elif args.schedule == "step":
        schedule = StepLR(lr, step_size=max(1, steps_total // 3), gamma=0.1)
    else:
        schedule = ConstantLR(lr)
    return opt, schedule


# ------------------------------------------------------------------------ resume
def find_resume_point(folder: RunFolder):
    """(file name, weights, meta, extra) to continue from: last.npz, or best.npz when
    last.npz is damaged. RunError when the folder holds no usable run state."""
    out = folder.path
    last, best = out / "last.npz", out / "best.npz"
    if not last.exists() and not best.exists():
        raise RunError(f"cannot resume: {last} does not exist")
    try:
        w, meta, extra = load_run_checkpoint(last)
    except NotARunCheckpoint as err:
        raise RunError(f"cannot resume: {err}") from None
    except (FileNotFoundError, ValueError) as err:
        problem = str(err)
    else:
        _check_agrees(folder, meta)
        return "last.npz", w, meta, extra
    try:  # last.npz is missing, damaged or non-finite: fall back to best.npz
        w, meta, extra = load_run_checkpoint(best)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(
            f"cannot resume: {problem}; and no usable fallback: {err}. Start a new run, "
            "e.g. with --init-from on a checkpoint you trust"
        ) from None
    state = RunState.from_dict(meta["state"])
    moved = last.exists()
    if moved:
        last.replace(out / "last.damaged.npz")
    print(
        f"warning: {problem}. Resuming from best.npz instead ({state.where()}); later "
        "epochs are trained again"
        + ("; the damaged file is kept as last.damaged.npz" if moved else ""),
        file=sys.stderr,
    )
    return "best.npz", w, meta, extra


def _check_agrees(folder: RunFolder, meta: dict) -> None:
    """RunError unless best.npz (if present) belongs to the same run as last.npz."""
    best = folder.path / "best.npz"
    if not best.exists():
        return
    try:
        _, bmeta, _ = load_run_checkpoint(best)
    except (FileNotFoundError, ValueError) as err:
        print(f"warning: {err}; it will be rewritten at the next best epoch", file=sys.stderr)
        return
    mine, theirs = meta["spec"], bmeta["spec"]
    rid, brid = meta["state"].get("run_id"), bmeta["state"].get("run_id")
    if mine != theirs or (rid and brid and rid != brid):
        describe = lambda s: f"{s.get('model')} ({s.get('config')}, {s.get('num_classes')} classes)"  # noqa: E731
        raise RunError(
            f"cannot resume: run folder {folder.path} does not agree with itself: last.npz "
            f"holds {describe(mine)}"
            + (", run " + rid if rid else "")
            + f", best.npz holds {describe(theirs)}"
            + (", run " + brid if brid else "")
            + "; nothing was changed. Was a checkpoint copied in from another run?"
        )


def merge_resume_args(args, given: set, saved: dict):
    """The resumed run's arguments: the saved ones, plus the flags that may change.

    RunError listing every typed flag that conflicts with the run's own value.
    """
    conflicts, notes = [], []
    for name in sorted(given):
        if name in RESUME_CHANGEABLE:
            continue
        value, was = getattr(args, name), saved.get(name)
        if value != was and was is not None:  # None: an older run that did not record it
            flag = "--" + name.replace("_", "-")
            conflicts.append(f"{flag} {value} (the run's: {was})")
    if conflicts:
        raise RunError(
            "--resume continues a run with its own settings; these flags differ from it: "
            + "; ".join(conflicts)
            + ". Drop them, or start a new run from its weights with --init-from "
            f"{Path(args.out) / 'last.npz'}"
        )
    merged = argparse.Namespace(**{**vars(parse_args([])), **saved})
    for name in RESUME_CHANGEABLE:
        if name in given or name in ("device", "no_progress", "out", "resume"):
            setattr(merged, name, getattr(args, name))
    if "data_root" in given and args.data_root != saved.get("data_root"):
        notes.append(f"data from {args.data_root} (the run used {saved.get('data_root')})")
    if "epochs" in given and args.epochs != saved.get("epochs"):
        notes.append(
            f"{args.epochs} epochs instead of {saved.get('epochs')}: the learning-rate "
            "schedule is stretched to match"
        )
    merged.epochs = merged.epochs or DEFAULT_EPOCHS
    merged.init_from = merged.vgg16 = None  # the checkpoint already holds those weights
    for note in notes:
        print(f"note: resuming with {note}")
    return merged


# ------------------------------------------------------------------------ set_up
def set_up(argv=None) -> Run:
    """Arguments, run folder (locked), data, model, optimiser; a resumed run's state."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    given = given_flags(argv)
    check_args(args)
    ensure_device(args.device)
    folder = open_run_folder(args)
    try:
        return _set_up_in(folder, args, given)
    except BaseException:
        folder.close(remove_if_unused=True)
        raise


def _set_up_in(folder: RunFolder, args, given: set) -> Run:
    resume_from = None
    if args.resume:
        if given & {"init_from", "vgg16"}:
            raise RunError(
                "--init-from and --vgg16 start a new run; they cannot be used with --resume"
            )
        resume_from = find_resume_point(folder)
        _, _, meta, _ = resume_from
        args = merge_resume_args(args, given, meta["args"])
        cfg_name = meta["config_name"]
        state = RunState.from_dict(meta["state"])
        if args.epochs < state.epoch:
            raise RunError(
                f"the run already finished {state.epoch} epochs; --epochs {args.epochs} is fewer"
            )
    else:
        args.epochs = args.epochs or DEFAULT_EPOCHS
        cfg_name = args.config or ("mini" if args.dataset == "shapes" else "paper")
        # Saved as the run's own values, so that --resume can compare typed flags with them.
        args.config = cfg_name
        if args.lr is None:
            args.lr = 3e-3 if args.optimizer == "adam" else 1e-4
        state = RunState(run_id=secrets.token_hex(6))
    try:
        train_set, val_set = make_datasets(args)
        check_data((("train", train_set), ("val", val_set)), not args.no_progress)
        model = make_model(args, train_set.num_classes, cfg_name)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(str(err)) from None
    steps_per_epoch = num_batches(train_set, args.batch_size)
    opt, schedule = make_optimizer(args, model, steps_per_epoch * args.epochs)
    model.to(args.device)  # before the optimiser state is restored onto the parameters' device
    run = Run(
        args=args,
        folder=folder,
        cfg_name=cfg_name,
        train_set=train_set,
        val_set=val_set,
        model=model,
        opt=opt,
        schedule=schedule,
        loss_fn=SoftmaxCrossEntropy(ignore_index=train_set.ignore_index),
        steps_per_epoch=steps_per_epoch,
        state=state,
    )
    if resume_from is not None:
        resume(run, *resume_from)
    run.step_rng = model.rng_state()
    return run


def resume(run: Run, name: str, weights: dict, meta: dict, extra: dict) -> None:
    """Load the saved weights, optimiser and dropout state; make the folder agree."""
    try:
        run.model.load_state_dict(weights)
        run.opt.load_checkpoint_state(meta, extra)
    except (ValueError, KeyError) as err:
        raise RunError(f"cannot resume from {run.out / name}: {err}") from None
    run.model.set_rng_state(meta["dropout_rng"])
    s = run.state
    if s.step_in_epoch >= run.steps_per_epoch and s.step_in_epoch:
        s.step_in_epoch = run.steps_per_epoch  # stopped at validation: only that is left
    run.saved = s.where()
    repair_folder(run, name)
    print(f"resuming {run.out} at {s.where()} (from {name})")


def repair_folder(run: Run, loaded: str) -> None:
    """After a crash between the renames of a save: rewrite what the state implies."""
    s, files = run.state, {}
    best = run.out / "best.npz"
    if s.best_epoch is not None and s.best_epoch == s.epoch and s.step_in_epoch == 0:
        try:
            best_epoch = load_run_checkpoint(best)[1]["state"]["epoch"]
        except (FileNotFoundError, ValueError):
            best_epoch = None
        if best_epoch != s.best_epoch:  # last.npz holds the best epoch's weights
            files["best.npz"] = lambda f: f.write((run.out / loaded).read_bytes())
    if loaded == "best.npz":
        files["last.npz"] = lambda f: f.write(best.read_bytes())
    files.update(history_writers(s.history))
    try:
        run.folder.commit(files)
    except OSError as err:
        raise RunError(f"cannot write to run folder {run.out}: {err.strerror or err}") from None


# ------------------------------------------------------------------------ checkpoints
def checkpoint_meta(run: Run, state: RunState, rng_state=None) -> tuple[dict, dict]:
    """(meta, extra arrays) of a run checkpoint: everything --resume needs."""
    opt_meta, extra = run.opt.checkpoint_state()
    meta = {
        "format": RUN_FORMAT,
        **opt_meta,
        "dropout_rng": rng_state if rng_state is not None else run.model.rng_state(),
        "args": {k: v for k, v in vars(run.args).items() if not k.startswith("_")},
        "config_name": run.cfg_name,
        "state": state.to_dict(),
        "dataset": run.args.dataset,
        "class_names": list(run.train_set.class_names),
    }
    return meta, extra


def history_writers(history: list[dict]) -> dict:
    """Writers of metrics.json and metrics.csv for ``RunFolder.commit``."""
    files = {"metrics.json": _text(json.dumps(history, indent=1))}
    if history:
        keys = list(history[0].keys())
        lines = [",".join(keys)] + [",".join(_fmt(h.get(k)) for k in keys) for h in history]
        files["metrics.csv"] = _text("\n".join(lines) + "\n")
    return files


def _text(text: str):
    return lambda f: f.write(text.encode())


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def weights_finite(model) -> bool:
    return not nonfinite_arrays(dict(model.state_dict()))


def kept_message(run: Run) -> str:
    if run.saved is None:
        return "Nothing was saved (no checkpoint was written before this)."
    return (
        f"The last good checkpoint {run.out / 'last.npz'} ({run.saved}, finite weights) was kept."
    )


# ------------------------------------------------------------------------ one epoch
def train_epoch(run: Run, bar) -> float:
    """The remaining steps of epoch ``state.epoch + 1``; returns training images/s."""
    args, s, model = run.args, run.state, run.model
    if hasattr(run.train_set, "set_epoch"):
        run.train_set.set_epoch(s.epoch)
    model.train()
    order_rng = np.random.default_rng([args.seed, s.epoch])
    batches = iterate_batches(
        run.train_set, args.batch_size, shuffle=True, rng=order_rng, start=s.step_in_epoch
    )
    t_epoch, seen = time.perf_counter(), 0
    for images, labels in batches:
        run.opt.lr = run.schedule(s.iteration)
        x, y = batch_to_device(
            images, labels, run.train_set.num_classes, run.train_set.ignore_index, args.device
        )
        loss = run.loss_fn(model(x), y)
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"loss became {loss} at epoch {s.epoch + 1}, step {s.step_in_epoch + 1} "
                f"(lr {run.opt.lr:g}); try a lower --lr. {kept_message(run)}"
            )
        model.zero_grad()
        model.backward(run.loss_fn.backward(), input_grad=False)  # no image gradient
        run.opt.step()
        s.iteration += 1
        run.step_rng = model.rng_state()
        s.step_in_epoch += 1
        s.loss_sum += loss * len(images)
        s.loss_count += len(images)
        seen += len(images)
        rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.1f}")
        bar.update(1)
    return seen / max(time.perf_counter() - t_epoch, 1e-9)


def validate(run: Run, train_rate: float, t_start: float) -> tuple[dict, dict]:
    """Validation metrics of the current weights as a history row (and the full result).

    NonFiniteWeights when the weights, or the scores they give, are not finite.
    """
    args, model = run.args, run.model
    batch = args.batch_size if args.dataset == "shapes" else 1
    if not weights_finite(model):
        raise NonFiniteWeights("the weights became NaN or infinite")
    probe = next(iterate_batches(run.val_set, batch))[0]
    model.eval()
    if not np.isfinite(predict_scores(model, probe, args.device)).all():
        raise NonFiniteWeights("the weights give NaN or infinite scores")
    result = evaluate(model, run.val_set, batch_size=batch, device=args.device)
    s = run.state
    row = {
        "epoch": s.epoch + 1,
        "train_loss": s.loss_sum / max(s.loss_count, 1),
        **{k: float(result[k]) for k in METRIC_KEYS},
        "lr": float(run.opt.lr),
        "images_per_s": train_rate,
        "wall_time": time.perf_counter() - t_start,
    }
    return row, result


def save_epoch(run: Run, row: dict) -> bool:
    """Commit the finished epoch: last.npz, best.npz when it is the best, the metrics.

    One unit: Ctrl-C waits until it is done; an error leaves the previous files.
    Returns whether the epoch is the new best.
    """
    s = run.state
    new = dataclasses.replace(s, history=[*s.history, row])
    new.epoch, new.step_in_epoch, new.loss_sum, new.loss_count = s.epoch + 1, 0, 0.0, 0
    new.wall_time = row["wall_time"]
    improved = is_better(row["mean_iu"], s.best_mean_iu)
    if improved:
        new.best_mean_iu, new.best_epoch = row["mean_iu"], new.epoch
    meta, extra = checkpoint_meta(run, new)
    ckpt = checkpoint_writer(run.model, meta, extra)
    files = {"last.npz": ckpt}
    if improved:
        files["best.npz"] = ckpt
    files.update(history_writers(new.history))
    with interrupts_deferred():
        try:
            run.folder.commit(files)
        except OSError as err:
            raise RunError(
                f"cannot save epoch {new.epoch} in {run.out}: {err.strerror or err}. "
                f"{kept_message(run)}"
            ) from None
        run.state, run.saved = new, new.where()
    return improved


def save_interrupted(run: Run) -> str:
    """Save last.npz mid-epoch (Ctrl-C, bad data); returns what to tell the user."""
    if not weights_finite(run.model):
        return f"the weights had become non-finite, so nothing was saved. {kept_message(run)}"
    # The unfinished step is dropped: weights are those after the last finished step,
    # and the dropout generators are rewound to where that step began.
    meta, extra = checkpoint_meta(run, run.state, rng_state=run.step_rng)
    with interrupts_deferred(reraise=False):
        run.folder.commit({"last.npz": checkpoint_writer(run.model, meta, extra)})
        run.saved = run.state.where()
    return (
        f"saved {run.out / 'last.npz'} at {run.saved}; continue with "
        f"python -m minifcn.train --out {run.out} --resume"
    )


def report_epoch(run: Run, row: dict, result: dict, improved: bool) -> None:
    args, s = run.args, run.state
    try:
        plot_curves(s.history, run.out / "curves.png", title=f"{run.model.name} on {args.dataset}")
    except OSError as err:
        print(f"warning: could not draw curves.png: {err}", file=sys.stderr)
    print(
        f"epoch {row['epoch']}/{args.epochs}  loss {row['train_loss']:.4f}  "
        f"pixel acc {row['pixel_accuracy']:.3f}  mean acc {row['mean_accuracy']:.3f}  "
        f"mean IU {row['mean_iu']:.3f}  fw IU {row['fw_iu']:.3f}  "
        f"({row['images_per_s']:.1f} img/s, {row['wall_time']:.0f}s)" + ("  *" if improved else "")
    )
    if collapsed(result["pred_counts"]):
        share = result["pred_counts"] / result["pred_counts"].sum()
        c = int(share.argmax())
        # The per-class table the first time and at the end; one line in between.
        table = not run.warned_collapse or s.epoch == args.epochs
        print(
            f"warning: predictions collapsed onto class {c} "
            f"({run.train_set.class_names[c]}, {share[c]:.1%} of pixels)"
            + (". Per-class IU:\n" + result["metrics"].format_table() if table else ""),
            file=sys.stderr,
        )
        run.warned_collapse = True


def describe(run: Run) -> None:
    args, model = run.args, run.model
    print(f"run folder: {run.out}")
    n_params = sum(p.data.size for p in model.parameters())
    print(
        f"{type(model).__name__} ({run.cfg_name} backbone, {n_params:,} parameters), "
        f"crop offsets {model.crop_offsets}"
    )
    print(
        f"{args.dataset}: {len(run.train_set)} train / {len(run.val_set)} val images, "
        f"{run.train_set.num_classes} classes; {args.optimizer} lr {run.schedule(0):g}, "
        f"batch {args.batch_size}, {args.epochs} epochs, device {args.device}"
    )


# ------------------------------------------------------------------------ the loop
def run_epochs(run: Run) -> None:
    args, s = run.args, run.state
    t_start = time.perf_counter() - s.wall_time
    while run.state.epoch < args.epochs:
        s = run.state
        bar = tqdm(
            total=run.steps_per_epoch,
            initial=s.step_in_epoch,
            desc=f"epoch {s.epoch + 1}/{args.epochs}",
            leave=False,
            disable=args.no_progress,
            dynamic_ncols=True,
        )
        # Overflow is expected when a run diverges: the guards below report it in one line.
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                rate = train_epoch(run, bar)
            finally:
                bar.close()
            row, result = validate(run, rate, t_start)
        improved = save_epoch(run, row)
        report_epoch(run, row, result, improved)


def finish(run: Run) -> dict:
    s = run.state
    try:
        save_prediction_grid(
            run.model, run.val_set, run.out / "predictions.png", run.args.grid, run.args.device
        )
    except (OSError, DataError) as err:
        print(f"warning: could not draw predictions.png: {err}", file=sys.stderr)
    summary = {
        "best_mean_iu": s.best_mean_iu,
        "best_epoch": s.best_epoch,
        "wall_time": s.wall_time,
        "run_dir": str(run.out),
        "final": s.history[-1] if s.history else None,
    }
    print(
        f"best validation mean IU {s.best_mean_iu or 0:.4f} (epoch {s.best_epoch}), "
        f"{s.wall_time:.0f}s; run folder {run.out}"
    )
    return summary


def train(argv=None) -> dict:
    """``python -m minifcn.train ...`` as a function; returns the run's summary.

    Every expected failure ends in SystemExit with one line "error: ..." (130 for Ctrl-C).
    """
    try:
        run = set_up(argv)
    except (RunError, RunFolderError) as err:
        raise SystemExit(f"error: {err}") from None
    try:
        describe(run)
        run_epochs(run)
        return finish(run)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {save_interrupted(run)}", file=sys.stderr)
        raise SystemExit(130) from None
    except NonFiniteLoss as err:
        raise SystemExit(f"error: {err}") from None
    except NonFiniteWeights as err:
        raise SystemExit(
            f"error: {err} during epoch {run.state.epoch + 1} (lr {run.opt.lr:g}); try a "
            f"lower --lr. {kept_message(run)}"
        ) from None
    except (DataError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}. {save_interrupted(run)}") from None
    except (RunError, RunFolderError) as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        run.folder.close(remove_if_unused=True)


def save_prediction_grid(model, dataset, path, n: int, device: str = "cpu") -> None:
    n = min(n, len(dataset))
    if n == 0:
        return
    items = [dataset[i] for i in range(n)]
    model.eval()
    images = [denormalize(x) for x, _ in items]
    labels = [y for _, y in items]
    preds = [predict_labels(model, x[None], device)[0] for x, _ in items]
    plot_predictions(images, labels, preds, path, ignore_index=dataset.ignore_index)


def main(argv=None) -> None:
    keep_freed_memory()  # fewer page faults per step (minifcn.accel.cpu)
    train(argv)


if __name__ == "__main__":
    main()
