"""Who am I in the job? Rank, size and local rank from the launcher's environment.

``mpiexec`` (MPICH's Hydra, Open MPI's mpirun) starts every rank with
variables that say its place in the job before any MPI library is loaded, so a
process can tell that it is one of several, and refuse with one line when
``mpi4py`` is missing, instead of training alone N times into one folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# (size, rank, local rank) variable names, in the order they are tried.
LAUNCHERS = (
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # MPICH / Intel MPI (Hydra)
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
)
# Slurm's own SLURM_NTASKS / SLURM_PROCID are not read: a batch script's plain process
# has them too. Start the ranks with mpiexec, inside an allocation as well.

MPI_INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py and the MPICH wheel that provides mpiexec)'

TIMEOUT_VARIABLE = "MINIFCN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class DistributedError(RuntimeError):
    """The job cannot run as launched; the message says why in one line."""


@dataclass(frozen=True)
class Placement:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    source: str = ""  # the variable that gave the size, "" for a plain process


def placement(environ=None) -> Placement:
    """This process's place in the job, from the launcher's variables (a plain process
    is rank 0 of 1). DistributedError for values that make no sense."""
    env = os.environ if environ is None else environ
    for size_var, rank_var, local_var in LAUNCHERS:
        if size_var not in env:
            continue
        try:
            size = int(env[size_var])
            rank = int(env.get(rank_var, "0"))
            local = int(env.get(local_var, str(rank)))
        except ValueError:
            raise DistributedError(
                f"the launcher's {size_var}={env[size_var]!r} / {rank_var}="
                f"{env.get(rank_var)!r} are not integers"
            ) from None
        if size < 1 or not 0 <= rank < size:
            raise DistributedError(f"the launcher says rank {rank} of {size} ({size_var})")
        return Placement(size, rank, local, size_var)
    return Placement()


def collective_timeout(environ=None) -> float:
    """Seconds a rank waits in one collective before it gives up (MINIFCN_DIST_TIMEOUT)."""
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds")
    return value
