"""``--resume``: find the checkpoint to continue from, merge the typed flags with the
run's own, restore the state and repair a folder a crash left half-saved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.checkpoint import NotARunCheckpoint, load_run_checkpoint
from .runfolder import RunFolder
from .saving import history_writers
from .state import DEFAULT_EPOCHS, Run, RunError, RunState

# Flags --resume may change; every other flag is part of the run's definition.
RESUME_CHANGEABLE = ("device", "no_progress", "out", "resume", "epochs", "grid", "data_root")


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


def merge_resume_args(args, given: set, saved: dict, defaults):
    """The resumed run's arguments: the saved ones, plus the flags that may change.

    RunError listing every typed flag that conflicts with the run's own value.
    """
    conflicts, notes = [], []
    for name in sorted(given):
        if name in RESUME_CHANGEABLE:
            continue
        value, was = getattr(args, name), saved.get(name)
        flag = "--" + name.replace("_", "-")
        if name not in saved:  # a run from before the flag existed: it cannot be applied
            conflicts.append(f"{flag} {value} (the run did not record this setting)")
        elif value != was:  # None: the run used the default, which the flag would change
            conflicts.append(f"{flag} {value} (the run's: {'the default' if was is None else was})")
    if conflicts:
        raise RunError(
            "--resume continues a run with its own settings; these flags differ from it: "
            + "; ".join(conflicts)
            + ". Drop them, or start a new run from its weights with --init-from "
            f"{Path(args.out) / 'last.npz'}"
        )
    merged = argparse.Namespace(**{**vars(defaults), **saved})
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
    run.on_disk = s.where()
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
