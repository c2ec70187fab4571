"""Write a volume as a DICOM series (one file per ``k`` slice), for test data and DICOM-shaped exports.

The geometry is written slice by slice from the RAS+ affine: Image Orientation (Patient) from the ``i``
and ``j`` columns, Image Position (Patient) from ``affine @ (0, 0, k)``, both converted to DICOM's LPS.
A sheared affine therefore gives tilted slice positions, exactly as a gantry tilt would.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io.dicom import LPS_TO_RAS
from medseg.io.geometry import Geometry

DICOM_WRITE_DTYPES = ("uint8", "int16", "uint16")


def new_uid() -> str:
    """A fresh DICOM UID under the ``2.25`` root (derived from a random UUID, as DICOM PS3.5 allows)."""
    return f"2.25.{uuid.uuid4().int}"


def _ds(values: np.ndarray) -> str:
    # Decimal String values: at most 16 characters each; 9 significant digits keep sub-micrometre precision.
    return "\\".join(f"{float(v):.9g}" for v in values)


def write_dicom_series(
    array: np.ndarray,
    geometry: Geometry,
    folder: str | os.PathLike,
    *,
    series_uid: str | None = None,
    modality: str = "CT",
    series_description: str = "medseg",
) -> Path:
    """Write ``array`` as a DICOM series into a new folder, atomically (all files or none).

    Args:
        array: ``(I, J, K)`` integer voxels (uint8, int16 or uint16); ``I`` are columns, ``J`` rows,
            ``K`` slices.
        geometry: the RAS+ geometry; ``geometry.shape == array.shape``.
        folder: the series folder to create; it must not exist yet, or be empty.
        series_uid: Series Instance UID (0020,000E); a fresh one when ``None``.
        modality: Modality (0008,0060), e.g. ``"CT"`` or ``"MR"``.
        series_description: Series Description (0008,103E).

    Returns:
        The folder.

    Raises:
        GeometryError: the array's shape differs from the geometry's.
        ConfigError: a data type DICOM cannot store here.
        InputError: the folder exists and is not empty.
    """
    import SimpleITK as sitk

    data = np.asarray(array)
    if data.shape != geometry.shape:
        raise GeometryError(f"{folder}: array shape {data.shape} does not match geometry shape {geometry.shape}")
    if str(data.dtype) not in DICOM_WRITE_DTYPES:
        raise ConfigError(f"DICOM series are written from {', '.join(DICOM_WRITE_DTYPES)} arrays, got {data.dtype}")
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target}: exists and is not an empty folder; refusing to write a DICOM series into it")
    series_uid = series_uid or new_uid()
    study_uid, frame_uid = new_uid(), new_uid()
    lps = LPS_TO_RAS @ geometry.affine
    spacing = np.linalg.norm(lps[:3, :2], axis=0)
    orientation = np.concatenate([lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]])
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir(parents=True)
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(data.shape[2]):
            # (i, j) -> SimpleITK's (x, y) = (column, row): its array is indexed [row, column].
            image = sitk.GetImageFromArray(np.ascontiguousarray(data[:, :, k].T))
            image.SetSpacing([float(spacing[0]), float(spacing[1])])
            position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
            tags = {
                "0008|0008": "DERIVED\\SECONDARY",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.7",
                "0008|0018": new_uid(),
                "0008|0060": modality,
                "0008|103e": series_description,
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0020|0052": frame_uid,
                "0020|0011": "1",
                "0020|0013": str(k + 1),
                "0020|0032": _ds(position),
                "0020|0037": _ds(orientation),
                "0018|0050": f"{float(geometry.spacing[2]):.9g}",
            }
            for tag, value in tags.items():
                image.SetMetaData(tag, value)
            writer.SetFileName(str(staging / f"slice_{k:04d}.dcm"))
            writer.Execute(image)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
