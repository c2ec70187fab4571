"""Several processes, one job: torchrun's environment, the process group, sharding and small collectives.

medseg scales with PyTorch's own machinery: ``torchrun`` (``torch.distributed.run``) starts one process per
GPU (or several on the CPU) and tells each its place through the environment variables ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; :func:`launch_environment` is the one place in medseg
that reads them (they are torchrun's interface, not medseg switches). :func:`distributed_session` opens the
default process group (NCCL for CUDA devices, gloo for the CPU, :func:`backend_for_device`) with a timeout,
so that a process whose peers stopped answering fails instead of waiting forever, and yields a
:class:`DistributedContext`, which the pipelines take as an argument (``None``: one process).

The context offers what training and segmentation need and nothing more: the rank's share of a list
(:meth:`DistributedContext.shard`, rank ``r`` of ``N`` takes items ``r, r + N, ...``) and its inverse
(:func:`interleave`), sums of a few numbers, a gather of JSON-able values (no pickle travels between
processes), a barrier, and :meth:`DistributedContext.global_batch_sum` for losses that sum over the whole
global batch. See ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from medseg.errors import ConfigError, unknown_choice

BACKENDS: tuple[str, ...] = ("gloo", "nccl")
#: Seconds a process waits in a collective for its peers before the job fails (training).
DEFAULT_TIMEOUT_S = 600.0
#: torchrun's variables: rank in the job, number of processes, rank on this node, processes on this node.
LAUNCH_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")

T = TypeVar("T")


@dataclass(frozen=True)
class LaunchEnvironment:
    """Where torchrun placed this process.

    Attributes:
        rank: the process's rank in the job, ``0 <= rank < world_size``.
        world_size: number of processes in the job.
        local_rank: rank on this machine (the GPU index it should use).
        local_world_size: processes on this machine.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in an initialised process group, with the collectives the pipelines use.

    Every collective method must be called by every rank, in the same order.

    Attributes:
        rank: the process's rank, ``0 <= rank < world_size``; rank 0 logs and writes.
        world_size: number of processes.
        local_rank: rank on this machine.
        local_world_size: processes on this machine.
        backend: ``"nccl"`` (tensors of collectives live on ``cuda:local_rank``) or ``"gloo"`` (on the CPU).
    """

    rank: int
    world_size: int
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that prints, shows progress and writes run files."""
        return self.rank == 0

    @property
    def collective_device(self) -> torch.device:
        """Where tensors handed to the backend must be: ``cuda:local_rank`` for NCCL, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: items ``rank, rank + world_size, ...`` (possibly none).

        Args:
            items: the full list, identical on every rank.

        Returns:
            The items of this rank, in their original order.
        """
        return list(items[self.rank :: self.world_size])

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sum a few numbers over all ranks (float64); NaN or infinity on any rank propagates.

        Args:
            values: this rank's numbers (the same count on every rank).

        Returns:
            The sums, on every rank.
        """
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def all_gather_json(self, value: Any) -> list[Any]:
        """Gather a JSON-able value from every rank (as UTF-8 JSON bytes: nothing is unpickled).

        Floats survive exactly (JSON writes their shortest repr), NaN and infinity included.

        Args:
            value: this rank's value: dicts with string keys, lists, strings, numbers, booleans, ``None``.

        Returns:
            The values of ranks ``0 .. world_size - 1``, on every rank.
        """
        import torch.distributed as dist

        device = self.collective_device
        payload = torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8).to(device)
        size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(s) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[: payload.numel()] = payload
        chunks = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(chunks, padded)
        return [
            json.loads(bytes(chunk[: int(n)].cpu().numpy().tobytes()).decode("utf-8"))
            for chunk, n in zip(chunks, sizes)
        ]

    def barrier(self) -> None:
        """Wait until every rank has arrived here."""
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def global_batch_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over ranks, differentiable for DistributedDataParallel training.

        The value is the plain sum over ranks. The gradient flows to this rank's ``tensor`` only, scaled by
        ``world_size``: DistributedDataParallel then averages the gradients of the ranks, so the result is the
        gradient of a loss computed on the whole global batch at once (no collective runs in the backward
        pass). Used for batch Dice, whose ratio needs the sums of every rank's samples.

        Args:
            tensor: this rank's partial sums, e.g. ``(C,)`` per-channel intersections.

        Returns:
            A tensor of the same shape whose value is the sum over all ranks.
        """
        import torch.distributed as dist

        total = tensor.detach().to(self.collective_device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total = total.to(tensor.device)
        return total + self.world_size * (tensor - tensor.detach())


def interleave(shards: Sequence[Sequence[T]]) -> list[T]:
    """Rebuild the full list from the shards of :meth:`DistributedContext.shard`, in the original order.

    Args:
        shards: the shards of ranks ``0 .. N - 1`` (shard ``r`` holds items ``r, r + N, ...``).

    Returns:
        The items in their original order.

    Raises:
        ValueError: the shard lengths cannot come from :meth:`DistributedContext.shard`.
    """
    n = len(shards)
    total = sum(len(s) for s in shards)
    expected = [len(range(r, total, n)) for r in range(n)]
    if [len(s) for s in shards] != expected:
        raise ValueError(f"shard lengths {[len(s) for s in shards]} do not come from sharding {total} items")
    return [shards[i % n][i // n] for i in range(total)]


def launch_environment(environ: Mapping[str, str] | None = None) -> LaunchEnvironment | None:
    """This process's place in a torchrun job, or ``None`` when it was not started by torchrun.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The launch environment, or ``None`` without ``WORLD_SIZE``.

    Raises:
        ConfigError: the variables are present but not consistent integers.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    try:
        world_size = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    except ValueError as exc:
        shown = {name: environ.get(name) for name in LAUNCH_VARIABLES}
        raise ConfigError(f"torchrun's process variables are not integers: {shown}") from exc
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank < max(local_world_size, 1)):
        shown = {name: environ.get(name) for name in LAUNCH_VARIABLES}
        raise ConfigError(f"inconsistent torchrun process variables: {shown}")
    return LaunchEnvironment(rank, world_size, local_rank, local_world_size)


def backend_for_device(device: str) -> str:
    """The process-group backend for a device name: NCCL for CUDA, gloo for the CPU.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``"nccl"`` or ``"gloo"``.
    """
    if device == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def distributed_session(
    backend: str, timeout_s: float = DEFAULT_TIMEOUT_S, launch: LaunchEnvironment | None = None
) -> Iterator[DistributedContext | None]:
    """Join the process group of a torchrun job for the block; yield ``None`` outside one (or with one process).

    The group is initialised from torchrun's rendezvous variables (``MASTER_ADDR``, ``MASTER_PORT``) with
    ``timeout_s``: a collective that waits longer for a peer raises, so a job whose process died or hangs
    ends instead of waiting forever. With NCCL, each process uses GPU ``LOCAL_RANK``; with gloo on a machine
    with GPUs, GPU ``LOCAL_RANK % device_count`` becomes the current one. The group is destroyed when the
    block ends normally (after an exception the process is expected to exit).

    Args:
        backend: ``"nccl"`` or ``"gloo"`` (:func:`backend_for_device`).
        timeout_s: seconds a collective may wait for the other processes.
        launch: the launch environment; default :func:`launch_environment`.

    Yields:
        A :class:`DistributedContext`, or ``None`` for a single process.

    Raises:
        ConfigError: unknown backend, a non-positive timeout, NCCL without enough GPUs, or a process group
            that is already initialised.
    """
    import torch.distributed as dist

    if backend not in BACKENDS:
        raise unknown_choice("process-group backend", backend, BACKENDS)
    if not timeout_s > 0:
        raise ConfigError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
    launch = launch if launch is not None else launch_environment()
    if launch is None or launch.world_size == 1:
        yield None
        return
    if dist.is_initialized():
        raise ConfigError("a torch.distributed process group is already initialised in this process")
    if backend == "nccl":
        count = torch.cuda.device_count()
        if launch.local_rank >= count:
            raise ConfigError(
                f"NCCL needs one GPU per process: local rank {launch.local_rank} but {count} GPU(s) visible; "
                "start at most that many processes per node (--nproc-per-node) or train on the CPU (--device cpu)"
            )
        torch.cuda.set_device(launch.local_rank)
    elif torch.cuda.is_available():
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=datetime.timedelta(seconds=float(timeout_s)),
    )
    context = DistributedContext(
        rank=launch.rank,
        world_size=launch.world_size,
        local_rank=launch.local_rank,
        local_world_size=launch.local_world_size,
        backend=backend,
    )
    yield context
    dist.destroy_process_group()
