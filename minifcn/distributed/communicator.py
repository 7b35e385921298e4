"""The communicator: rank, size and the few collectives data-parallel training needs.

Two kinds, one interface:

- ``SingleProcess``: rank 0 of 1. Every collective returns its input unchanged, so
  a training loop written against the interface behaves exactly as before.
- ``MPICommunicator``: one process per rank under ``mpiexec``, through ``mpi4py``.
  Host (NumPy) arrays are summed by MPI; device (CuPy) gradients by NCCL, one GPU
  per rank (the NCCL communicator is set up at the first device allreduce, its
  unique id sent from rank 0 over MPI).

No collective waits forever. Each is started non-blocking and polled until it
completes, a deadline passes (``CollectiveTimeout``: a rank died, hung or is far
slower), or another rank's alarm arrives (``PeerFailed``: a rank that stops with an
error tells every other rank why, on a separate control channel, so they stop at
their next collective with the same reason instead of waiting out the timeout).
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time

import numpy as np

from .. import backend
from .flat import FlatGradients
from .launch import (
    MPI_INSTALL_HINT,
    DistributedError,
    Placement,
    collective_timeout,
    placement,
)

ALARM_TAG = 77
ALARM_BYTES = 4096


class CollectiveTimeout(DistributedError):
    """A collective did not complete in time on this rank."""


class PeerFailed(DistributedError):
    """Another rank stopped with an error; the message is its reason."""


class RanksDisagree(DistributedError):
    """The ranks were not started as one job (different arguments or code)."""


# ------------------------------------------------------------------ one process
class SingleProcess:
    """Rank 0 of 1: the collectives are the identity; nothing is sent anywhere."""

    rank, size, local_rank = 0, 1, 0
    is_root = True
    failure: str | None = None

    def allreduce_grads(self, model, loss: float, weight: float = 1.0, reduction="mean") -> float:
        """Gradients are already the batch's; returns ``loss`` unchanged."""
        return loss

    def allreduce_sum(self, array, what: str = ""):
        return array

    def broadcast_object(self, obj, what: str = ""):
        return obj

    def allgather_object(self, obj, what: str = "") -> list:
        return [obj]

    def broadcast_arrays(self, arrays: dict, what: str = "") -> dict:
        return arrays

    def broadcast_parameters(self, model) -> None:
        pass

    def select_device(self, device: str) -> None:
        pass

    def agree(self, problem: str | None, what: str = "") -> None:
        if problem:
            raise DistributedError(problem)

    def check_same_job(self, fingerprint: dict) -> None:
        pass

    def check_in_sync(self, model, what: str = "") -> None:
        pass

    def raise_alarm(self, message: str) -> None:
        pass

    def barrier(self, what: str = "", timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------- MPI
class MPICommunicator:
    """One rank of an ``mpiexec`` job (see the module docstring).

    Args:
        place: this rank's ``Placement`` (from the launcher's variables); checked
            against what MPI itself reports.
        timeout: seconds any one collective may take before ``CollectiveTimeout``.
    """

    def __init__(self, place: Placement, timeout: float):
        try:
            from mpi4py import MPI
        except ImportError:
            raise DistributedError(
                f"started as rank {place.rank} of {place.size} ({place.source}) but mpi4py "
                f"is not installed; {MPI_INSTALL_HINT}"
            ) from None
        world = MPI.COMM_WORLD
        if world.Get_size() != place.size or world.Get_rank() != place.rank:
            raise DistributedError(
                f"the launcher says rank {place.rank} of {place.size} but MPI sees rank "
                f"{world.Get_rank()} of {world.Get_size()}: mpi4py is linked against another "
                "MPI than the mpiexec that started this job (use the mpiexec of the same "
                "installation, e.g. the one the mpich wheel puts beside python)"
            )
        self.MPI = MPI
        self.rank, self.size, self.local_rank = place.rank, place.size, place.local_rank
        self.is_root = self.rank == 0
        self.timeout = float(timeout)
        self.failure: str | None = None  # set once this rank knows the job is failing
        self._told = False  # an alarm was received or sent: the others know
        self._comm = world.Dup()  # the collectives of training
        self._control = world.Dup()  # alarms and the final barrier, never mixed with them
        for c in (self._comm, self._control):
            c.Set_errhandler(MPI.ERRORS_RETURN)
        self._alarm_buffer = bytearray(ALARM_BYTES)
        self._alarm_status = MPI.Status()
        self._alarm = self._control.Irecv(
            [self._alarm_buffer, MPI.BYTE], source=MPI.ANY_SOURCE, tag=ALARM_TAG
        )
        self._sent: list = []
        self._flat: FlatGradients | None = None
        self._flat_key: tuple = ()
        self._nccl = None

    # ------------------------------------------------------------ waiting
    def _wait(self, request, what: str, timeout: float | None = None) -> None:
        """Poll ``request`` (an MPI request or a callable that returns True when done)
        until it completes; CollectiveTimeout or PeerFailed instead of waiting forever."""
        test = request if callable(request) else request.Test
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        spins = 0
        try:
            while True:
                self._check_alarm()  # first: a stale partner may complete the request at once
                if test():
                    return
                spins += 1
                if spins % 64 == 0:  # the clock is read less often than MPI is polled
                    if time.monotonic() > deadline:
                        self.failure = f"timed out after {limit:g} s {what}"
                        raise CollectiveTimeout(
                            f"rank {self.rank}: no answer from every rank within {limit:g} s "
                            f"while {what}: a rank died, hung or is far slower (raise the "
                            "limit with MINIFCN_DIST_TIMEOUT=<seconds>)"
                        )
                    if spins > 4096:
                        time.sleep(0.0002)  # long waits (a rank saving a checkpoint) yield
        except self.MPI.Exception as err:
            self.failure = f"MPI error {what}"
            raise DistributedError(
                f"rank {self.rank}: MPI failed while {what}: {err.Get_error_string()}"
            ) from None

    def _check_alarm(self) -> None:
        if not self._told and self._alarm.Test(self._alarm_status):
            n = self._alarm_status.Get_count(self.MPI.BYTE)
            text = bytes(self._alarm_buffer[:n]).decode(errors="replace")
            source = self._alarm_status.Get_source()
            self.failure, self._told = f"rank {source} stopped: {text}", True
            raise PeerFailed(self.failure)

    def raise_alarm(self, message: str) -> None:
        """Tell every other rank that this one stops, and why (sent once, not waited for)."""
        if self._told:
            return  # the job already knows: this rank is following another's stop
        self._told = True
        self.failure = self.failure or "this rank stopped"
        data = message.encode()[:ALARM_BYTES]
        for r in range(self.size):
            if r != self.rank:
                self._sent.append(self._control.Isend([data, self.MPI.BYTE], dest=r, tag=ALARM_TAG))

    def barrier(self, what: str = "at the end of the run", timeout: float | None = None) -> bool:
        """Wait until every rank got here (on the control channel); False on timeout or
        when a peer failed, so the stopping ranks all leave, dead peers or not."""
        request = self._control.Ibarrier()
        try:
            self._wait(request, what, timeout)
        except DistributedError:
            return False
        return True

    # -------------------------------------------------------- collectives
    def allreduce_sum(self, array, what: str = "summing arrays"):
        """Sum a NumPy array over the ranks, in place; returns it."""
        if not (isinstance(array, np.ndarray) and array.flags.c_contiguous):
            raise TypeError("allreduce_sum takes a C-contiguous NumPy array")
        self._wait(self._comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what)
        return array

    def allreduce_grads(self, model, loss: float, weight: float = 1.0, reduction="mean") -> float:
        """Make every trainable gradient the global batch's; one allreduce.

        ``reduction="mean"``: ``loss`` and the gradients are this rank's means over its
        shard, ``weight`` the number of pixels they were averaged over (0 for a rank with
        nothing to add); they become the means over every pixel of the global batch.
        ``"sum"`` (the paper's summed loss): they are sums and are added up; ``weight``
        only says whether the rank adds anything (0: nothing). Returns the global
        batch's loss, the same number on every rank.
        """
        params = list(model.parameters()) if hasattr(model, "parameters") else list(model)
        key = tuple(id(p.grad) for p in params if p.requires_grad)
        if self._flat is None or key != self._flat_key:
            self._flat, self._flat_key = FlatGradients(params), key
        flat = self._flat
        if reduction == "sum":
            flat.pack(loss, 1.0 if weight else 0.0, summed=True)
        else:
            flat.pack(loss, weight)
        if flat.xp is np:
            self.allreduce_sum(flat.buffer, "averaging gradients")
        else:
            self._nccl_engine().allreduce_sum(flat.buffer, "averaging gradients (NCCL)")
        mean_loss, _ = flat.unpack()
        return mean_loss

    def _bcast_bytes(self, data: bytes | None, what: str) -> bytes:
        length = np.array([len(data) if self.is_root else 0], dtype=np.int64)
        self._wait(self._comm.Ibcast(length, root=0), what)
        buffer = bytearray(data) if self.is_root else bytearray(int(length[0]))
        if length[0]:
            self._wait(self._comm.Ibcast([buffer, self.MPI.BYTE], root=0), what)
        return bytes(buffer)

    def broadcast_object(self, obj, what: str = "receiving rank 0's state"):
        """Rank 0's ``obj`` (picklable) on every rank."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.is_root else None
        received = self._bcast_bytes(data, what)
        return obj if self.is_root else pickle.loads(received)

    def allgather_object(self, obj, what: str = "exchanging start-up checks") -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        lengths = np.zeros(self.size, dtype=np.int64)
        mine = np.array([data.size], dtype=np.int64)
        self._wait(self._comm.Iallgather(mine, lengths), what)
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._wait(self._comm.Iallgatherv(data, [out, lengths, offsets, self.MPI.BYTE]), what)
        return [pickle.loads(out[o : o + n].tobytes()) for o, n in zip(offsets, lengths)]

    def broadcast_arrays(self, arrays: dict | None, what: str = "receiving arrays") -> dict:
        """Rank 0's dict of NumPy arrays on every rank (one broadcast per array)."""
        spec = {k: (v.shape, v.dtype.str) for k, v in arrays.items()} if self.is_root else None
        spec = self.broadcast_object(spec, what)
        out = {}
        for name, (shape, dtype) in spec.items():
            if self.is_root:
                out[name] = np.ascontiguousarray(arrays[name])
            else:
                out[name] = np.empty(shape, dtype=dtype)
            if out[name].size:
                self._wait(self._comm.Ibcast(out[name], root=0), what)
        return out

    def select_device(self, device: str) -> None:
        """With ``device == "gpu"``: this rank's GPU, by its rank on the node."""
        if device == "gpu":
            backend.use_gpu(self.local_rank)

    def broadcast_parameters(self, model) -> None:
        """Every rank takes rank 0's parameter values (one flat broadcast, via the host)."""
        params = list(model.parameters())
        host = np.concatenate([backend.as_numpy(p.data).ravel() for p in params])
        self._wait(self._comm.Ibcast(host, root=0), "receiving rank 0's weights")
        start = 0
        for p in params:
            part = host[start : start + p.data.size].reshape(p.data.shape)
            p.data[...] = backend.to_device(part, backend.device_of(p.data))
            start += p.data.size

    # ------------------------------------------------------------- checks
    def agree(self, problem: str | None, what: str = "starting") -> None:
        """Every rank says whether it can go on; all stop with the first problem if one can't."""
        problems = self.allgather_object(problem, what)
        for r, p in enumerate(problems):
            if p:
                if r == self.rank:
                    raise DistributedError(p)
                raise PeerFailed(f"rank {r} stopped: {p}")

    def check_same_job(self, fingerprint: dict) -> None:
        """RanksDisagree, on every rank, unless all ranks have the same fingerprint
        (see ``minifcn.distributed.fingerprint``)."""
        prints = self.allgather_object(fingerprint, "comparing the ranks' arguments and code")
        first = prints[0]
        for r, other in enumerate(prints):
            differ = sorted(k for k in set(other) | set(first) if other.get(k) != first.get(k))
            if differ:
                hashes = ", ".join(f"{k} {other.get(k)} vs {first.get(k)}" for k in differ)
                raise RanksDisagree(
                    f"the ranks were started with different {' and '.join(differ)}: rank {r} "
                    f"differs from rank 0 ({hashes}); start every rank with the same command "
                    "from the same minifcn checkout"
                )

    def check_in_sync(self, model, what: str = "comparing the ranks' weights") -> None:
        """DistributedError unless every rank holds bit-identical parameters."""
        digest = hashlib.sha256()
        for p in model.parameters():
            digest.update(np.ascontiguousarray(backend.as_numpy(p.data)).tobytes())
        digests = self.allgather_object(digest.hexdigest()[:16], what)
        if len(set(digests)) != 1:
            raise DistributedError(
                "the ranks' weights have drifted apart (digests "
                + ", ".join(f"rank {r} {d}" for r, d in enumerate(digests))
                + "); the ranks did not apply the same updates"
            )

    # -------------------------------------------------------------- NCCL
    def _nccl_engine(self):
        if self._nccl is None:
            self._nccl = NcclEngine(self)
        return self._nccl

    def close(self) -> None:
        """Free the communicators after a clean run (every rank calls it)."""
        if self._nccl is not None:
            self._nccl.close()
        if self.failure is None:
            self._alarm.Cancel()
            self._alarm.Wait()
            for c in (self._comm, self._control):
                c.Free()


class NcclEngine:
    """Sums device arrays with NCCL, one GPU per rank; set up collectively on first use."""

    def __init__(self, comm: MPICommunicator):
        nccl = backend.nccl_module()
        problem = (
            None
            if nccl is not None
            else (
                "--device gpu on several ranks averages gradients with NCCL, and CuPy cannot load "
                "it; install it for your CUDA (e.g. pip install nvidia-nccl-cu12) and check "
                "python -c 'from cupy.cuda import nccl'"
            )
        )
        comm.agree(problem, "checking that every rank has NCCL")
        self.comm, self.nccl = comm, nccl
        uid = nccl.get_unique_id() if comm.is_root else None
        uid = comm.broadcast_object(uid, "sharing the NCCL id")
        self.nccl_comm = nccl.NcclCommunicator(comm.size, uid, comm.rank)
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def allreduce_sum(self, buffer, what: str) -> None:
        """Sum a contiguous device array over the ranks, in place; waits, with the timeout."""
        ptr = backend.device_pointer(buffer)
        self.nccl_comm.allReduce(
            ptr, ptr, buffer.size, self.types[str(buffer.dtype)], self.nccl.NCCL_SUM,
            backend.current_stream_pointer(),
        )  # fmt: skip
        marker = backend.stream_marker()
        try:
            self.comm._wait(lambda: marker.done, what)
        except DistributedError:
            self.nccl_comm.abort()  # frees the GPU from a collective that will never finish
            self.nccl_comm = None
            raise

    def close(self) -> None:
        if self.nccl_comm is not None:
            self.nccl_comm.destroy()
            self.nccl_comm = None


# ------------------------------------------------------------------- choosing
def from_environment(environ=None):
    """``SingleProcess`` for a plain process (or ``mpiexec -n 1``), else this rank's
    ``MPICommunicator``. DistributedError (one line) when the job cannot run."""
    place = placement(environ)
    if place.size == 1:
        return SingleProcess()
    return MPICommunicator(place, collective_timeout(environ))


def say(comm, message: str, file=None) -> None:
    """Print one line, prefixed with the rank in a job of several."""
    prefix = f"[rank {comm.rank}/{comm.size}] " if comm.size > 1 else ""
    out = file or sys.stderr
    out.write(prefix + message + "\n")  # one write: the launcher does not split it
    out.flush()
