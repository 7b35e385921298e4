"""Data-parallel training over several processes: MPI for NumPy arrays, NCCL for CuPy.

``mpiexec -n N python -m minifcn.train ...`` runs N ranks. Each takes its shard of
every global batch (``sharding``), computes gradients, and one allreduce over one
flat buffer (``flat``) makes them the global batch's mean on every rank, so every
rank applies the same update and the weights stay identical. Rank 0 alone writes
the run folder. ``launched`` (``job``) wraps a command so that every way a rank can
stop ends with one line on every rank and no hang. See docs/distributed.md.
"""

from .communicator import (
    CollectiveTimeout,
    MPICommunicator,
    PeerFailed,
    RanksDisagree,
    SingleProcess,
    from_environment,
    say,
)
from .fingerprint import code_digest, fingerprint
from .flat import FlatGradients
from .job import launched
from .launch import DistributedError, Placement, collective_timeout, placement
from .sharding import (
    GlobalBatchDraws,
    Rows,
    Shard,
    Sharding,
    check_ranks_fit,
    shard_bounds,
    sharded_evaluate,
)

__all__ = [
    "CollectiveTimeout",
    "DistributedError",
    "FlatGradients",
    "GlobalBatchDraws",
    "MPICommunicator",
    "PeerFailed",
    "Placement",
    "RanksDisagree",
    "Rows",
    "Shard",
    "Sharding",
    "SingleProcess",
    "check_ranks_fit",
    "code_digest",
    "collective_timeout",
    "fingerprint",
    "from_environment",
    "launched",
    "placement",
    "say",
    "shard_bounds",
    "sharded_evaluate",
]
