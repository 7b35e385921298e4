"""Training recipes: this project's default, and the paper's reference solver.

``--recipe default``: the loss is the *mean* over the labelled pixels, the optimiser
Adam (lr 3e-3), batches of 2, the upsampling learned.

``--recipe paper`` (Long, Shelhamer & Darrell's reference solver): the loss is the
*sum* over the labelled pixels, SGD with momentum 0.99 and weight decay 5e-4, batch 1,
a fixed learning rate of 1e-10 / 1e-12 / 1e-14 for FCN-32s / 16s / 8s (``--model``),
and the upsampling fixed to bilinear. Flags typed on the command line win over the
recipe's values.

Why the two are the same kind of step: the summed loss is the mean loss times P, the
number of labelled pixels, so its gradient is P times larger. An SGD step with rate lr
on the sum is exactly a step with rate lr * P on the mean; with momentum mu the steady
step is a further 1 / (1 - mu) = 100 times larger. For a 500 x 500 PASCAL image
(P ~ 2.5e5), 1e-10 on the sum is about 2.5e-5 on the mean, 2.5e-3 with momentum: an
ordinary rate for an ImageNet-initialised VGG16 on 0..255 inputs. Adam divides each
gradient by its own running size, so multiplying the loss by P leaves its step
unchanged (up to its eps): for Adam, sum and mean are the same recipe. Rates like 1e-10
mean nothing without the summed loss and that image size: on small images P is
smaller, and the same rate is a smaller step.
"""

from __future__ import annotations

PAPER_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}
RECIPES = ("default", "paper")


def paper_settings(model: str) -> dict:
    """The flags ``--recipe paper`` sets for ``model``."""
    return {
        "optimizer": "sgd",
        "lr": PAPER_LR[model],
        "momentum": 0.99,
        "weight_decay": 5e-4,
        "batch_size": 1,
        "schedule": "constant",
        "freeze_upsampling": True,
    }


def apply_recipe(args, given: set) -> None:
    """Set the recipe's flags on ``args`` where the user did not type them."""
    if getattr(args, "recipe", "default") != "paper":
        return
    for name, value in paper_settings(args.model).items():
        if name not in given:
            setattr(args, name, value)


def loss_reduction(args) -> str:
    """ "sum" for the paper's recipe, "mean" for the default."""
    return "sum" if getattr(args, "recipe", "default") == "paper" else "mean"
