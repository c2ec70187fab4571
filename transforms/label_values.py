"""Checks that a label map holds only the values its dataset allows."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from medseg.errors import InputError

ArrayLike = np.ndarray | torch.Tensor


def as_numpy(values: ArrayLike) -> np.ndarray:
    """View a numpy array or torch tensor (any device, MONAI ``MetaTensor`` included) as a numpy array.

    Args:
        values: the array or tensor.

    Returns:
        A numpy array sharing memory where possible.
    """
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().as_subclass(torch.Tensor).numpy()
    return np.asarray(values)


def check_label_values(label: ArrayLike, valid: Iterable[int], what: str) -> None:
    """Raise unless every voxel of ``label`` is one of the ``valid`` integer values.

    Args:
        label: label map of any shape, integer, boolean or float dtype (floats must hold whole numbers).
        valid: the accepted label values.
        what: names the map and its convention for the message, e.g. ``"label of case 7 (brats2021)"``.

    Raises:
        InputError: naming ``what``, the offending values (up to ten) and the valid ones.
    """
    array = as_numpy(label)
    allowed = sorted(int(v) for v in valid)
    if array.dtype == np.bool_:
        present = np.unique(array.astype(np.uint8))
    elif np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating):
        present = np.unique(array)
    else:
        raise InputError(f"{what}: label map has dtype {array.dtype}; expected integer values {allowed}")
    bad = [v for v in present.tolist() if not (float(v).is_integer() and int(v) in allowed)]
    if bad:
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise InputError(f"{what}: label values {shown}{more} are not valid; valid values: {allowed}")
