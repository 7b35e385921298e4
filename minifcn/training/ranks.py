"""Training on several ranks (``mpiexec -n N python -m minifcn.train``): set-up and stops.

Rank 0 sets the run up exactly as one process does (locks the run folder, checks
the data, builds or resumes the model and optimiser), then sends the result to
the other ranks: the run's resolved arguments and state, the weights, the
optimiser's state. The other ranks build the same model and optimiser from those
arguments and take the values, so no rank but 0 reads a checkpoint or touches
the run folder; their ``FollowerFolder`` has the folder's path and writes nothing.

``--batch-size`` is the global batch (see ``minifcn.distributed.sharding``), so a run
is the same run on any number of ranks, and ``--resume`` continues it on another N.

With one process, ``set_up_ranks`` is ``set_up`` and nothing else changes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from ..distributed import DistributedError, Sharding, check_ranks_fit
from .runfolder import RunFolderError
from .saving import save_interrupted
from .setup import assemble_run, fit_to_model, make_datasets, make_model, set_up
from .state import Run, RunError, RunState
from .step import TrainStep


class FollowerFolder:
    """The run folder as a rank other than 0 sees it: the same path, never written.

    The loop's saves go through ``commit``; on these ranks it does nothing, so
    every rank runs the same loop and rank 0 alone writes.
    """

    created = False

    def __init__(self, path):
        self.path = Path(path)

    def commit(self, files: dict) -> None:
        pass

    def run_files(self) -> list[str]:
        return []

    def close(self, remove_if_unused: bool = False) -> None:
        pass


def set_up_ranks(comm, args, given: set, defaults) -> Run:
    """``set_up`` on rank 0, then the same ``Run`` on every rank (see the module)."""
    if comm.size == 1:
        return set_up(args, given, defaults)
    run = None
    if comm.is_root:
        try:
            run = set_up(args, given, defaults)
            check_ranks_fit(run.args.batch_size, comm.size)
        except (RunError, RunFolderError, DistributedError) as err:
            if run is not None:
                run.folder.close(remove_if_unused=True)
            comm.agree(str(err), "setting up the run")  # raises, on every rank
        comm.agree(None, "setting up the run")
    else:
        comm.agree(None, "waiting for rank 0 to set up the run")
    try:
        run = _share(comm, run)
    except BaseException:
        if comm.is_root:
            run.folder.close(remove_if_unused=True)
        raise
    run.comm, run.sharding = comm, Sharding(comm.rank, comm.size)
    # A rank's shard runs whole: the ranks already use the cores, and a rank has no helper
    # for the batch split (its dropout layers draw the global batch's masks)
    run.step = TrainStep(run.model, run.loss_fn, split=comm.size == 1)
    run.sharding.install_dropout(run.model)
    return run


def _share(comm, run: Run | None) -> Run:
    """Rank 0's run on every rank: the arguments and state, then weights and optimiser."""
    head = None
    if comm.is_root:
        head = {
            "args": vars(run.args),
            "cfg_name": run.cfg_name,
            "out": str(run.out),
            "state": run.state.to_dict(),
            "step_rng": run.step_rng,
            "on_disk": run.on_disk,
            "names": [name for name, _ in run.model.named_parameters()],
        }
    head = comm.broadcast_object(head, "receiving the run from rank 0")
    problem = None
    if not comm.is_root:
        try:
            run = _follower_run(head)
        except (RunError, DistributedError, ValueError, FileNotFoundError) as err:
            problem = f"cannot set up the run like rank 0: {err}"
    comm.agree(problem, "building the model on every rank")
    comm.broadcast_parameters(run.model)
    opt_meta, opt_arrays = run.opt.checkpoint_state() if comm.is_root else (None, None)
    opt_meta = comm.broadcast_object(opt_meta, "receiving the optimiser state")
    opt_arrays = comm.broadcast_arrays(opt_arrays, "receiving the optimiser state")
    if not comm.is_root:
        run.opt.load_checkpoint_state(opt_meta, opt_arrays)
        run.model.set_rng_state(head["step_rng"])
    return run


def _follower_run(head: dict) -> Run:
    """Rank 0's run rebuilt from its arguments, quietly (rank 0 has said it all)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return _build_follower_run(head)


def _build_follower_run(head: dict) -> Run:
    args = argparse.Namespace(**head["args"])
    train_set, val_set = make_datasets(args)
    # The weights come from rank 0: no pretrained or staged file is read here.
    no_files = argparse.Namespace(**{**head["args"], "vgg16": None, "init_from": None})
    model = make_model(no_files, train_set.num_classes, head["cfg_name"])
    fit_to_model(args, train_set, model, head["cfg_name"])  # the same size rules as rank 0
    names = [name for name, _ in model.named_parameters()]
    if names != head["names"]:
        raise RunError(f"the model has parameters {names[:3]}..., rank 0's {head['names'][:3]}...")
    state = RunState.from_dict(head["state"])
    folder = FollowerFolder(head["out"])
    return assemble_run(
        args, folder, head["cfg_name"], train_set, val_set, model, state,
        step_rng=head["step_rng"], on_disk=head["on_disk"],
    )  # fmt: skip


def stop_line(run: Run, text: str, sep: str = ". ") -> str:
    """``text`` and what ``save_interrupted`` saved, on rank 0; ``text`` alone on the
    other ranks (they save nothing, and their line is the reason the others get)."""
    if run.comm.is_root:
        return f"{text}{sep}{save_interrupted(run)}"
    return text
