"""Train an FCN: ``python -m minifcn.train`` (mini FCN-8s on the embedded shapes set).

    python -m minifcn.train                                  # minutes on a laptop CPU
    python -m minifcn.train --model fcn32s --out runs/fcn32s
    python -m minifcn.train --model fcn16s --init-from runs/fcn32s/best.npz   # staged
    python -m minifcn.train --dataset voc --data-root ~/data/VOCdevkit/VOC2012 \\
        --config paper --vgg16 vgg16_weights.npz --optimizer sgd --lr 1e-4 --device gpu
    python -m minifcn.train --out runs/fcn8s_shapes --resume   # continue exactly

The run folder gets metrics.csv / metrics.json (one row per epoch), best.npz and
last.npz (written atomically), curves.png and predictions.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backend import to_device
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .cli import ensure_device
from .data import build_dataset, iterate_batches, num_batches
from .data.transforms import denormalize
from .engine import collapsed, evaluate, predict_labels
from .models import FCN8s, FCN16s, build_model
from .models.pretrained import load_vgg16_npz
from .nn import SoftmaxCrossEntropy
from .optim import SGD, Adam, ConstantLR, PolyLR, StepLR
from .plots import plot_curves, plot_predictions

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")


class NonFiniteLoss(RuntimeError):
    pass


def parse_args(argv=None):
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
    p.add_argument("--train-size", type=int, default=None, help="shapes: training images")
    p.add_argument("--val-size", type=int, default=None, help="shapes: validation images")
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="voc/ade20k: random training crops of this side (enables batches > 1)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default 8 (with --resume: the run's own; a different value changes "
        "the learning-rate schedule's length)",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float, default=None, help="default: 3e-3 (adam), 1e-4 (sgd)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="poly", choices=["poly", "step", "constant"])
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--grid", type=int, default=6, help="validation images in predictions.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- set-up
def choose_run_dir(args) -> Path:
    """The run folder. Never reuse one that holds a run unless --resume says so."""
    if args.resume:
        if args.out is None:
            raise SystemExit("error: --resume needs --out, the run folder to continue")
        out = Path(args.out)
        if not (out / "last.npz").is_file():
            raise SystemExit(f"error: cannot resume: {out / 'last.npz'} does not exist")
        return out
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise SystemExit(
                f"error: run folder {out} is not empty; pass --resume to continue that run "
                "or choose another --out (nothing was overwritten)"
            )
        return out
    base = Path("runs") / f"{args.model}_{args.dataset}"
    out, k = base, 2
    while out.exists() and any(out.iterdir()):
        out, k = Path(f"{base}_{k}"), k + 1
    return out


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
            raise SystemExit(f"error: the {split} split of {args.dataset} is empty")
    if args.batch_size > 1 and args.dataset != "shapes" and not args.crop_size:
        raise SystemExit("error: images differ in size: use --crop-size with --batch-size > 1")
    return train, val


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
    """Start ``model`` from a checkpoint: the same model, or the previous stage."""
    src, _ = load_model(path)
    if src.num_classes != model.num_classes or src.config != model.config:
        raise SystemExit(
            f"error: {path} holds a {src.name} with {src.num_classes} classes on the "
            f"{src.config.name!r} backbone; this run needs {model.num_classes} classes on "
            f"{model.config.name!r}"
        )
    kw = {"freeze_upsampling": model.freeze_upsampling, "rng": 0}
    if (src.name, model.name) == ("fcn32s", "fcn16s"):
        new = FCN16s.from_fcn32s(src, **kw)
    elif (src.name, model.name) == ("fcn16s", "fcn8s"):
        new = FCN8s.from_fcn16s(src, at_once=model.at_once, **kw)
    elif src.name == model.name:
        new = src
    else:
        raise SystemExit(
            f"error: cannot start {model.name} from a {src.name} checkpoint ({path}); stages go "
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


# ---------------------------------------------------------------- checkpoint state
def training_state(model, opt) -> tuple[dict, dict]:
    """(meta, extra arrays) that let --resume continue exactly."""
    opt_state = opt.state_dict()
    extra, scalars = {}, {}
    for i, entries in opt_state["state"].items():
        for k, v in entries.items():
            if hasattr(v, "shape"):
                extra[f"optim/{i}/{k}"] = v
            else:
                scalars[f"{i}/{k}"] = v
    meta = {
        "optimizer": type(opt).__name__.lower(),
        "optimizer_hyperparameters": opt_state["hyperparameters"],
        "optimizer_scalars": scalars,
        "dropout_rng": model.rng_state(),
    }
    return meta, extra


def restore_training_state(model, opt, meta: dict, extra: dict) -> None:
    state: dict = {}
    for key, v in extra.items():
        _, i, k = key.split("/", 2)
        state.setdefault(i, {})[k] = v
    for key, v in meta["optimizer_scalars"].items():
        i, k = key.split("/", 1)
        state.setdefault(i, {})[k] = v
    opt.load_state_dict({"hyperparameters": meta["optimizer_hyperparameters"], "state": state})
    model.set_rng_state(meta["dropout_rng"])


def write_history(out: Path, history: list[dict]) -> None:
    """metrics.json and metrics.csv, each replaced atomically."""
    _write_atomic(out / "metrics.json", json.dumps(history, indent=1))
    if not history:
        return
    keys = list(history[0].keys())
    lines = [",".join(keys)] + [",".join(_fmt(h.get(k)) for k in keys) for h in history]
    _write_atomic(out / "metrics.csv", "\n".join(lines) + "\n")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- the loop
def train(argv=None) -> dict:
    args = parse_args(argv)
    ensure_device(args.device)
    cfg_name = args.config or ("mini" if args.dataset == "shapes" else "paper")
    out = choose_run_dir(args)
    if not args.resume:
        args.epochs = args.epochs or 8

    if args.resume:
        _, meta, _ = load_checkpoint(out / "last.npz")
        saved = meta["args"]
        keep = {"device", "no_progress", "out", "resume"}
        epochs = args.epochs or saved["epochs"]
        args = argparse.Namespace(**{**saved, **{k: getattr(args, k) for k in keep}})
        args.epochs = epochs
        args.init_from = args.vgg16 = None  # the checkpoint already holds those weights
        cfg_name = meta["config_name"]

    try:
        train_set, val_set = make_datasets(args)
        model = make_model(args, train_set.num_classes, cfg_name)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = num_batches(train_set, args.batch_size, drop_last=False)
    opt, schedule = make_optimizer(args, model, steps_per_epoch * args.epochs)
    loss_fn = SoftmaxCrossEntropy(ignore_index=train_set.ignore_index)

    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "iteration": 0,
        "loss_sum": 0.0,
        "loss_count": 0,
        "best_mean_iu": -1.0,
        "best_epoch": None,
        "history": [],
        "wall_time": 0.0,
    }
    model.to(args.device)  # before the optimiser state is restored onto the parameters' device
    if args.resume:
        weights, meta, extra = load_checkpoint(out / "last.npz")
        model.load_state_dict(weights)
        restore_training_state(model, opt, meta, extra)
        state = meta["state"]
        print(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")

    step_rng = model.rng_state()  # dropout generators as they were after the last finished step

    def checkpoint(name: str, rng_state=None) -> None:
        meta, extra = training_state(model, opt)
        if rng_state is not None:
            meta["dropout_rng"] = rng_state
        meta.update(
            args=vars(args),
            config_name=cfg_name,
            state=state,
            dataset=args.dataset,
            class_names=list(train_set.class_names),
        )
        save_checkpoint(out / name, model, meta=meta, extra=extra)

    print(f"run folder: {out}")
    n_params = sum(p.data.size for p in model.parameters())
    print(
        f"{type(model).__name__} ({cfg_name} backbone, {n_params:,} parameters), "
        f"crop offsets {model.crop_offsets}"
    )
    print(
        f"{args.dataset}: {len(train_set)} train / {len(val_set)} val images, "
        f"{train_set.num_classes} classes; {args.optimizer} lr {schedule(0):g}, "
        f"batch {args.batch_size}, {args.epochs} epochs, device {args.device}"
    )

    t_start = time.perf_counter() - state["wall_time"]
    warned = False
    try:
        while state["epoch"] < args.epochs:
            epoch = state["epoch"]
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            model.train()
            order_rng = np.random.default_rng([args.seed, epoch])
            batches = iterate_batches(train_set, args.batch_size, shuffle=True, rng=order_rng)
            bar = tqdm(
                total=steps_per_epoch,
                initial=state["step_in_epoch"],
                desc=f"epoch {epoch + 1}/{args.epochs}",
                leave=False,
                disable=args.no_progress,
                dynamic_ncols=True,
            )
            t_epoch, seen = time.perf_counter(), 0
            for step, (images, labels) in enumerate(batches):
                if step < state["step_in_epoch"]:
                    continue  # --resume in the middle of an epoch: same order, skip what was done
                opt.lr = schedule(state["iteration"])
                scores = model(to_device(images, args.device))
                loss = loss_fn(scores, to_device(labels, args.device))
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1} "
                        f"(lr {opt.lr:g}); try a lower --lr. The last good checkpoint "
                        f"{out / 'last.npz'} was kept."
                    )
                model.zero_grad()
                model.backward(loss_fn.backward())
                opt.step()
                state["iteration"] += 1
                step_rng = model.rng_state()
                state["step_in_epoch"] = step + 1
                state["loss_sum"] += loss * len(images)
                state["loss_count"] += len(images)
                seen += len(images)
                rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.1f}")
                bar.update(1)
            bar.close()
            train_rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
            result = evaluate(
                model,
                val_set,
                batch_size=args.batch_size if args.dataset == "shapes" else 1,
                device=args.device,
            )
            row = {
                "epoch": epoch + 1,
                "train_loss": state["loss_sum"] / max(state["loss_count"], 1),
                **{k: float(result[k]) for k in METRIC_KEYS},
                "lr": float(opt.lr),
                "images_per_s": train_rate,
                "wall_time": time.perf_counter() - t_start,
            }
            state["history"].append(row)
            state.update(
                epoch=epoch + 1,
                step_in_epoch=0,
                loss_sum=0.0,
                loss_count=0,
                wall_time=row["wall_time"],
            )
            # Ties go to the later epoch: with equal mean IU, the longer-trained weights.
            improved = row["mean_iu"] >= state["best_mean_iu"]
            if improved:
                state["best_mean_iu"], state["best_epoch"] = row["mean_iu"], epoch + 1
            checkpoint("last.npz")
            if improved:
                checkpoint("best.npz")
            write_history(out, state["history"])
            plot_curves(
                state["history"], out / "curves.png", title=f"{model.name} on {args.dataset}"
            )
            print(
                f"epoch {epoch + 1}/{args.epochs}  loss {row['train_loss']:.4f}  "
                f"pixel acc {row['pixel_accuracy']:.3f}  mean acc {row['mean_accuracy']:.3f}  "
                f"mean IU {row['mean_iu']:.3f}  fw IU {row['fw_iu']:.3f}  "
                f"({train_rate:.1f} img/s, {row['wall_time']:.0f}s)" + ("  *" if improved else "")
            )
            if collapsed(result["pred_counts"]):
                share = result["pred_counts"] / result["pred_counts"].sum()
                c = int(share.argmax())
                # The per-class table the first time and at the end; one line in between.
                table = not warned or state["epoch"] == args.epochs
                print(
                    f"warning: predictions collapsed onto class {c} "
                    f"({train_set.class_names[c]}, {share[c]:.1%} of pixels)"
                    + (". Per-class IU:\n" + result["metrics"].format_table() if table else ""),
                    file=sys.stderr,
                )
                warned = True
    except KeyboardInterrupt:
        # The unfinished step is dropped: weights are those after the last finished
        # step, and the dropout generators are rewound to where that step began.
        checkpoint("last.npz", rng_state=step_rng)
        print(
            f"\ninterrupted: saved {out / 'last.npz'} at epoch {state['epoch'] + 1}, "
            f"step {state['step_in_epoch']}; continue with "
            f"python -m minifcn.train --out {out} --resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except NonFiniteLoss as err:
        raise SystemExit(f"error: {err}") from None

    save_prediction_grid(model, val_set, out / "predictions.png", args.grid, args.device)
    summary = {
        "best_mean_iu": state["best_mean_iu"],
        "best_epoch": state["best_epoch"],
        "wall_time": state["wall_time"],
        "run_dir": str(out),
        "final": state["history"][-1] if state["history"] else None,
    }
    print(
        f"best validation mean IU {state['best_mean_iu']:.4f} (epoch {state['best_epoch']}), "
        f"{state['wall_time']:.0f}s; run folder {out}"
    )
    return summary


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
    train(argv)


if __name__ == "__main__":
    main()
