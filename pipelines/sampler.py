"""Which case and which random draws each training sample uses: a pure function of (seed, epoch, position).

Training draws ``steps_per_epoch * batch_size`` samples per epoch. Sample ``p`` of epoch ``e`` takes case
``permutation(seed, e, p // n)[p % n]`` of the ``n`` training cases (every case once per pass, in a fresh
order each pass), and its random augmentation is seeded with :func:`derive_seed` ``(seed, e, p)``. Nothing
depends on what ran before, so a run resumed at any step draws exactly what an uninterrupted run would,
whatever the number of data-loading workers.

Data-parallel training splits each step's global batch of ``batch_size`` positions into ``N`` equal,
consecutive blocks: process ``r`` of ``N`` takes positions ``step * batch_size + r * b + j``, ``j < b``, with
``b = batch_size / N`` (:meth:`PatchSampler.position`). The ranks' blocks put together are exactly the batch one
process would draw, so the number of processes changes neither the data nor its augmentation, and a run can
be resumed with a different number of processes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.errors import ConfigError

# Stream tags: separate derived seeds for separate purposes, so that no two uses share a random stream.
STREAM_ORDER = 1
STREAM_AUGMENT = 2
STREAM_STEP = 3
STREAM_INIT = 4


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that is a pure function of integers (via numpy's ``SeedSequence`` hashing).

    Args:
        *parts: non-negative integers, e.g. ``(seed, stream, epoch, position)``.

    Returns:
        An integer in ``[0, 2**32)`` (valid for numpy, MONAI ``set_random_state`` and torch).
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class PatchSampler:
    """The sampling plan of a run.

    Args:
        n_cases: number of training cases.
        batch_size: samples per step.
        steps_per_epoch: steps per epoch.
        seed: the run's seed.
    """

    n_cases: int
    batch_size: int
    steps_per_epoch: int
    seed: int

    @property
    def samples_per_epoch(self) -> int:
        """``steps_per_epoch * batch_size``."""
        return self.steps_per_epoch * self.batch_size

    def case_index(self, epoch: int, position: int) -> int:
        """The training case that sample ``position`` of ``epoch`` uses.

        Args:
            epoch: 0-based epoch.
            position: 0-based sample position within the epoch.
        """
        cycle, offset = divmod(position, self.n_cases)
        order = np.random.default_rng(derive_seed(self.seed, STREAM_ORDER, epoch, cycle)).permutation(self.n_cases)
        return int(order[offset])

    def local_batch_size(self, num_shards: int) -> int:
        """Samples per step of each of ``num_shards`` data-parallel processes: ``batch_size / num_shards``.

        Args:
            num_shards: number of processes sharing each step's batch.

        Raises:
            ConfigError: ``batch_size`` is not a multiple of ``num_shards``.
        """
        if num_shards < 1 or self.batch_size % num_shards:
            raise ConfigError(
                f"batch_size {self.batch_size} cannot be split evenly over {num_shards} processes; "
                f"use a multiple of {num_shards} (the batch size is global: {num_shards} processes with "
                f"batch_size / {num_shards} samples each compute what one process with batch_size computes)"
            )
        return self.batch_size // num_shards

    def position(self, step: int, index: int, shard: int = 0, num_shards: int = 1) -> int:
        """The position within its epoch of sample ``index`` of process ``shard`` at step ``step``.

        Args:
            step: 0-based step within the epoch.
            index: 0-based sample of this process's share of the step, ``< batch_size / num_shards``.
            shard: the process's rank.
            num_shards: number of processes sharing each step's batch.
        """
        local = self.local_batch_size(num_shards)
        return step * self.batch_size + shard * local + index

    def sample_seed(self, epoch: int, position: int) -> int:
        """The seed of the random augmentation of sample ``position`` of ``epoch``."""
        return derive_seed(self.seed, STREAM_AUGMENT, epoch, position)

    def step_seed(self, epoch: int, step: int, shard: int = 0) -> int:
        """The seed of torch's generator for the forward/backward pass of a step (dropout, drop-path).

        Args:
            epoch: 0-based epoch.
            step: 0-based step within the epoch.
            shard: the data-parallel process's rank; each draws its own masks (rank 0 those of one process).
        """
        if shard == 0:
            return derive_seed(self.seed, STREAM_STEP, epoch, step)
        return derive_seed(self.seed, STREAM_STEP, epoch, step, shard)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators.

    Args:
        seed: a 32-bit seed.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochSamples(Dataset):
    """One process's samples of one epoch from a start step on, as a map-style dataset (item ``k`` = one sample).

    Items come in step order, ``batch_size / num_shards`` per step (:meth:`PatchSampler.position`).

    Args:
        sampler: the run's plan.
        epoch: the epoch.
        start_step: the first step to produce (steps before it were done before a resume).
        load_case: ``case_index -> dict`` giving a case's deterministic preprocessing (may be cached).
        augment: the random part of the preprocessing, a MONAI transform with ``set_random_state``
            (or any callable); returns a dict or a list of dicts (several patches of one case).
        shard: this process's rank in data-parallel training.
        num_shards: number of data-parallel processes (``batch_size`` must be a multiple of it).
    """

    def __init__(
        self,
        sampler: PatchSampler,
        epoch: int,
        start_step: int,
        load_case: Callable[[int], Mapping[str, Any]],
        augment: Callable[[Any], Any],
        shard: int = 0,
        num_shards: int = 1,
    ) -> None:
        self.sampler = sampler
        self.epoch = epoch
        self.start_step = start_step
        self.load_case = load_case
        self.augment = augment
        self.shard = shard
        self.num_shards = num_shards
        self.local_batch = sampler.local_batch_size(num_shards)

    def __len__(self) -> int:
        return (self.sampler.steps_per_epoch - self.start_step) * self.local_batch

    def __getitem__(self, k: int) -> Any:
        step, index = divmod(k, self.local_batch)
        position = self.sampler.position(self.start_step + step, index, self.shard, self.num_shards)
        case = self.load_case(self.sampler.case_index(self.epoch, position))
        seed = self.sampler.sample_seed(self.epoch, position)
        # Transforms with their own generator (MONAI Randomizable) are reseeded; the global generators too,
        # so that any transform drawing from them is equally reproducible.
        seed_everything(seed)
        set_state = getattr(self.augment, "set_random_state", None)
        if set_state is not None:
            set_state(seed=seed)
        return self.augment(dict(case))


def split_deterministic(transform: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Split a MONAI ``Compose`` before its first random transform: ``(deterministic, random)`` parts.

    The deterministic part's output can be cached per case; applying both parts equals applying the whole.

    Args:
        transform: a ``monai.transforms.Compose`` (or any callable, which is then entirely "random").

    Returns:
        Two callables.
    """
    from monai.transforms import Compose, RandomizableTrait, Transform

    if not isinstance(transform, Compose):
        return (lambda data: data), transform
    flat: Sequence[Any] = transform.flatten().transforms
    first_random = len(flat)
    for index, item in enumerate(flat):
        if isinstance(item, RandomizableTrait) or not isinstance(item, Transform):
            first_random = index
            break
    from medseg.transforms.compose import PresetCompose

    # PresetCompose lets medseg's own errors (a corrupt case file, say) through unwrapped by MONAI.
    kwargs = {"map_items": transform.map_items, "unpack_items": transform.unpack_items, "lazy": transform.lazy}
    return PresetCompose(list(flat[:first_random]), **kwargs), PresetCompose(list(flat[first_random:]), **kwargs)
