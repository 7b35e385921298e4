"""A run's set-up: check the arguments, lock the run folder, check the data, build the
model and the optimiser, and (with ``--resume``) restore where the run stopped."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from tqdm import tqdm

from ..data import build_dataset, num_batches
from ..data.registry import dataset_kwargs, get_spec
from ..data.sizes import fit_sizes
from ..models import FCN8s, FCN16s, build_model
from ..models.checkpoint import load_model
from ..models.pretrained import load_vgg16_npz
from ..nn import SoftmaxCrossEntropy
from ..optim import SGD, Adam, ConstantLR, PolyLR, StepLR
from .recipe import apply_recipe, loss_reduction
from .resume import find_resume_point, merge_resume_args, resume
from .runfolder import RunFolder, RunFolderError
from .state import DEFAULT_EPOCHS, Run, RunError, RunState


def check_args(args) -> None:
    """Cross-flag checks argparse cannot express; RunError with every problem listed."""
    problems = []
    if args.resume:  # the run's own settings are checked; typed ones by merge_resume_args
        if args.out is None:
            raise RunError("--resume needs --out, the run folder to continue")
        return
    spec = get_spec(args.dataset)
    if not spec.on_disk and args.crop_size:
        problems.append(
            f"--crop-size is for data read from disk; {spec.name} images all have one size"
        )
    if not spec.own_classes:
        for flag in ("num_classes", "ignore_index", "val_fraction"):
            if getattr(args, flag, None) is not None:
                problems.append(
                    f"--{flag.replace('_', '-')} is for your own data (folder, labelme); "
                    f"{spec.name} has its own classes and split"
                )
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
    """The train and val splits, built from the registry's recipe for ``args.dataset``;
    prints the dataset's notes (where the split came from)."""
    settings = vars(args)
    train = build_dataset(
        args.dataset,
        "train",
        args.data_root,
        **dataset_kwargs(args.dataset, "train", settings, True),
    )
    val = build_dataset(
        args.dataset, "val", args.data_root, **dataset_kwargs(args.dataset, "val", settings)
    )
    for split, ds in (("train", train), ("val", val)):
        if len(ds) == 0:
            raise RunError(f"the {split} split of {args.dataset} is empty")
    for note in getattr(train, "notes", ()):
        print(note)
    return train, val


def fit_to_model(args, train_set, model, cfg_name: str) -> None:
    """Apply the backbone's size rules to the training images (``data.sizes``); print
    what that changes. RunError when no size works."""
    what = f"the {cfg_name} FCN-{model.name[3:]}"  # "the mini FCN-8s"
    try:
        notes = fit_sizes(train_set, model.supports, args.batch_size, args.crop_size, what)
    except ValueError as err:
        raise RunError(f"{args.dataset}: {err} for {what}") from None
    for note in notes:
        print(f"note: {note}")


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


def set_up(args, given: set, defaults) -> Run:
    """Run folder (locked), data, model, optimiser; a resumed run's state.

    ``args``: the parsed command line; ``given``: the flags actually typed;
    ``defaults``: every flag's default (a resumed run fills what it did not record).
    """
    check_args(args)
    folder = open_run_folder(args)
    try:
        return _set_up_in(folder, args, given, defaults)
    except BaseException:
        folder.close(remove_if_unused=True)
        raise


def _set_up_in(folder: RunFolder, args, given: set, defaults) -> Run:
    resume_from = None
    if args.resume:
        if given & {"init_from", "vgg16"}:
            raise RunError(
                "--init-from and --vgg16 start a new run; they cannot be used with --resume"
            )
        resume_from = find_resume_point(folder)
        _, _, meta, _ = resume_from
        args = merge_resume_args(args, given, meta["args"], defaults)
        cfg_name = meta["config_name"]
        state = RunState.from_dict(meta["state"])
        if args.epochs < state.epoch:
            raise RunError(
                f"the run already finished {state.epoch} epochs; --epochs {args.epochs} is fewer"
            )
    else:
        apply_recipe(args, given)
        args.epochs = args.epochs or DEFAULT_EPOCHS
        cfg_name = args.config or get_spec(args.dataset).config
        # Saved as the run's own values, so that --resume can compare typed flags with them.
        args.config = cfg_name
        if args.lr is None:
            args.lr = 3e-3 if args.optimizer == "adam" else 1e-4
        state = RunState(run_id=secrets.token_hex(6))
    try:
        train_set, val_set = make_datasets(args)
        on_terminal = getattr(sys.stderr, "isatty", lambda: False)()
        check_data((("train", train_set), ("val", val_set)), not args.no_progress and on_terminal)
        model = make_model(args, train_set.num_classes, cfg_name)
        fit_to_model(args, train_set, model, cfg_name)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(str(err)) from None
    run = assemble_run(args, folder, cfg_name, train_set, val_set, model, state)
    if resume_from is not None:
        resume(run, *resume_from)
    run.step_rng = model.rng_state()
    return run


def assemble_run(args, folder, cfg_name: str, train_set, val_set, model, state, **more) -> Run:
    """The ``Run`` around a built model: optimiser, schedule and loss for ``args``; the
    model moved to its device first (the optimiser state is restored onto it later)."""
    steps_per_epoch = num_batches(train_set, args.batch_size)
    opt, schedule = make_optimizer(args, model, steps_per_epoch * args.epochs)
    model.to(args.device)
    return Run(
        args=args,
        folder=folder,
        cfg_name=cfg_name,
        train_set=train_set,
        val_set=val_set,
        model=model,
        opt=opt,
        schedule=schedule,
        loss_fn=SoftmaxCrossEntropy(
            ignore_index=train_set.ignore_index, reduction=loss_reduction(args)
        ),
        steps_per_epoch=steps_per_epoch,
        state=state,
        **more,
    )
