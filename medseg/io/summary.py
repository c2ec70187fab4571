"""A short description of a volume file (what ``medseg info`` prints)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medseg.io.dicom import scan_series
from medseg.io.limits import DEFAULT_MAX_VOXELS
from medseg.io.volume import load_volume


def describe_volume(
    path: str | os.PathLike,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    series_uid: str | None = None,
    allow_irregular: bool = False,
) -> dict:
    """Load a volume (any number of channels, non-finite voxels kept) and summarise it.

    Args:
        path: a ``.nii``/``.nii.gz`` file or a DICOM series folder.
        max_voxels: refuse headers declaring more voxels than this.
        series_uid: DICOM only: which series, when the folder holds several.
        allow_irregular: DICOM only: accept uneven slice spacing or a gantry tilt.

    Returns:
        A JSON-ready dict: ``path``, ``format``, ``shape`` (spatial), ``channels``, ``spacing`` (mm),
        ``orientation`` (e.g. ``"RAS"``), ``dtype`` (on disk), ``min``/``max`` (finite voxels, ``None`` if
        there are none), ``nonfinite`` (count), ``qform_code``, ``sform_code``, ``affine`` (RAS+, 4x4) and,
        for DICOM, ``series_uid``.

    Raises:
        InputError: see :func:`medseg.io.load_volume`.
    """
    volume = load_volume(
        path,
        channels=True,
        nonfinite="keep",
        max_voxels=max_voxels,
        series_uid=series_uid,
        allow_irregular=allow_irregular,
    )
    array, geometry = volume.array, volume.geometry
    finite = np.isfinite(array) if array.dtype.kind == "f" else None
    values = array[finite] if finite is not None else array
    summary = {
        "path": str(Path(path)),
        "format": geometry.source_format,
        "shape": list(geometry.shape),
        "channels": volume.channels,
        "spacing": [round(s, 6) for s in geometry.spacing],
        "orientation": geometry.orientation,
        "dtype": geometry.dtype,
        "min": values.min().item() if values.size else None,
        "max": values.max().item() if values.size else None,
        "nonfinite": int(finite.size - np.count_nonzero(finite)) if finite is not None else 0,
        "qform_code": geometry.qform_code,
        "sform_code": geometry.sform_code,
        "affine": [[round(float(v), 6) for v in row] for row in geometry.affine],
    }
    if geometry.source_format == "dicom":
        with warnings.catch_warnings():  # the load above already warned about any irregularity
            warnings.simplefilter("ignore", RuntimeWarning)
            series = scan_series(Path(path), series_uid=series_uid, allow_irregular=True, max_voxels=max_voxels)
        summary["series_uid"] = series.series_uid
    return summary
