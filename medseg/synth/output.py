"""Checks shared by the dataset writers: the output folder, case counts, shapes and seeds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medseg.errors import ConfigError, InputError


def prepare_output(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and refuse it unless it is empty (hidden files aside).

    Args:
        out: the dataset folder to write.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``out`` is a file, or a folder that already holds something.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; give a new or empty folder for the dataset")
    if folder.is_dir():
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if present:
            shown = ", ".join(present[:5]) + (" ..." if len(present) > 5 else "")
            raise InputError(
                f"{folder}: not empty ({shown}); medseg synth writes a new dataset into a new or empty folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def checked_settings(cases: int, shape: Sequence[int], seed: int, minimum_cases: int = 1) -> tuple[int, int, int]:
    """Validate the settings every generator takes.

    Args:
        cases: number of cases to write.
        shape: array shape ``(D, H, W)``.
        seed: random seed.
        minimum_cases: the fewest cases the layout can hold.

    Returns:
        ``shape`` as a tuple of three ints.

    Raises:
        ConfigError: a count below ``minimum_cases``, a shape that is not three sizes of at least 8,
            or a negative seed.
    """
    if int(cases) < minimum_cases:
        raise ConfigError(f"--cases must be at least {minimum_cases}, got {cases}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ConfigError(f"--shape must be three sizes D H W of at least 8 voxels each, got {list(shape)}")
    if int(seed) < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    return shape
