"""Load an nnU-Net v2 ``checkpoint_final.pth`` without executing anything it could hold.

nnU-Net saves a pickled dictionary (``torch.save``) with the network weights, optimizer state, logging, the
trainer's init arguments and a few scalars. Before unpickling, the globals the pickle would import are
listed (``torch.serialization.get_unsafe_globals_in_checkpoint``, which reads without executing); anything
beyond PyTorch's own weights-only set plus :data:`ALLOWED_NUMPY_GLOBALS` (numpy scalars such as
``_best_ema`` and the logged Dice values, and their dtypes) is refused with
:class:`~medseg.errors.UnsafeFileError` naming it. The file is then read with ``torch.load(weights_only=True)``
allowing just those globals.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError, UnsafeFileError

ALLOWED_NUMPY_GLOBALS: tuple[str, ...] = (
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Float64DType",
)
"""Globals beyond PyTorch's weights-only set that nnU-Net checkpoints need: numpy float scalars and dtypes."""

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def _numpy_objects() -> list[Any]:
    """The allowed numpy globals, each also under the name the other numpy major version pickles it with."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [
        np.dtype,
        np.dtypes.Float32DType,
        np.dtypes.Float64DType,
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
    ]


@dataclass(frozen=True)
class NnunetCheckpoint:
    """What medseg takes from a checkpoint.

    Attributes:
        path: the file.
        weights: the network's state dict.
        trainer_name: the nnU-Net trainer class that wrote it.
        configuration: the plans configuration it was trained with (``init_args["configuration"]``), or ``None``.
        mirroring_axes: axes that test-time mirroring may flip, in the network's axis order, or ``None``.
    """

    path: Path
    weights: dict[str, torch.Tensor]
    trainer_name: str
    configuration: str | None
    mirroring_axes: tuple[int, ...] | None


def unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint's pickle would import beyond what medseg allows, found without unpickling.

    Args:
        path: a ``torch.save`` file (zip format).

    Returns:
        The offending ``module.name`` strings (empty when the file is acceptable).

    Raises:
        InputError: the file is not a readable ``torch.save`` zip archive.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    return [name for name in found if name not in ALLOWED_NUMPY_GLOBALS]


def load_checkpoint(path: str | Path) -> NnunetCheckpoint:
    """Read an nnU-Net checkpoint safely.

    Args:
        path: ``fold_N/checkpoint_final.pth``.

    Returns:
        The weights and the few fields inference needs.

    Raises:
        InputError: missing or unreadable file, or no ``network_weights`` in it.
        UnsafeFileError: the pickle names a global outside the allowed set (nothing is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    offending = unsafe_globals(path)
    if offending:
        raise UnsafeFileError(
            f"{path}: refusing to unpickle; the checkpoint would import {', '.join(offending)} (allowed besides "
            f"PyTorch tensors and containers: {', '.join(ALLOWED_NUMPY_GLOBALS)})"
        )
    try:
        with torch.serialization.safe_globals(_numpy_objects()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = _GLOBAL_IN_MESSAGE.search(str(exc))
        name = next((g for g in match.groups() if g), "an object") if match else "an object"
        raise UnsafeFileError(f"{path}: refusing to unpickle {name}, which a weights-only load does not allow") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(content, dict) or not isinstance(content.get("network_weights"), dict):
        raise InputError(f"{path}: not an nnU-Net checkpoint (no 'network_weights' dictionary)")
    init_args = content.get("init_args") if isinstance(content.get("init_args"), dict) else {}
    axes = content.get("inference_allowed_mirroring_axes")
    return NnunetCheckpoint(
        path=path,
        weights=dict(content["network_weights"]),
        trainer_name=str(content.get("trainer_name", "")),
        configuration=str(init_args["configuration"]) if "configuration" in init_args else None,
        mirroring_axes=tuple(int(a) for a in axes) if axes is not None else None,
    )
