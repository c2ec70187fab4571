"""Which case and which random draws each training sample uses: a pure function of (seed, epoch, position).

Training draws ``steps_per_epoch * batch_size`` samples per epoch. Sample ``p`` of epoch ``e`` takes case
``permutation(seed, e, p // n)[p % n]`` of the ``n`` training cases (every case once per pass, in a fresh
order each pass), and its random augmentation is seeded with :func:`derive_seed` ``(seed, e, p)``. Nothing
depends on what ran before, so a run resumed at any step draws exactly what an uninterrupted run would,
whatever the number of data-loading workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

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

    def sample_seed(self, epoch: int, position: int) -> int:
        """The seed of the random augmentation of sample ``position`` of ``epoch``."""
        return derive_seed(self.seed, STREAM_AUGMENT, epoch, position)

    def step_seed(self, epoch: int, step: int) -> int:
        """The seed of torch's generator for the forward/backward pass of a step (dropout, drop-path)."""
        return derive_seed(self.seed, STREAM_STEP, epoch, step)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators.

    Args:
        seed: a 32-bit seed.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochSamples(Dataset):
    """The samples of one epoch from a start step on, as a map-style dataset (item ``k`` = one sample).

    Args:
        sampler: the run's plan.
        epoch: the epoch.
        start_step: the first step to produce (steps before it were done before a resume).
        load_case: ``case_index -> dict`` giving a case's deterministic preprocessing (may be cached).
        augment: the random part of the preprocessing, a MONAI transform with ``set_random_state``
            (or any callable); returns a dict or a list of dicts (several patches of one case).
    """

    def __init__(
        self,
        sampler: PatchSampler,
        epoch: int,
        start_step: int,
        load_case: Callable[[int], Mapping[str, Any]],
        augment: Callable[[Any], Any],
    ) -> None:
        self.sampler = sampler
        self.epoch = epoch
        self.start = start_step * sampler.batch_size
        self.load_case = load_case
        self.augment = augment

    def __len__(self) -> int:
        return self.sampler.samples_per_epoch - self.start

    def __getitem__(self, k: int) -> Any:
        position = self.start + k
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
    kwargs = {"map_items": transform.map_items, "unpack_items": transform.unpack_items, "lazy": transform.lazy}
    return Compose(list(flat[:first_random]), **kwargs), Compose(list(flat[first_random:]), **kwargs)
