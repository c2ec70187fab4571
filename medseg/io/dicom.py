"""DICOM series folders, read with SimpleITK and converted to medseg's convention.

SimpleITK gives arrays in ``(k, j, i)`` order with LPS world coordinates; medseg uses ``(i, j, k)`` and
RAS+. The conversion is a transpose of the array and a sign flip of the first two world axes, so the
same data read from DICOM or from NIfTI give the same array and affine.

The slice geometry is computed here from every file's Image Position/Orientation (Patient) rather than
trusted from the reader, so that a missing slice, duplicated positions, uneven spacing or a gantry tilt
are refused with a clear message instead of producing a silently distorted volume.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.geometry import Geometry
from medseg.io.limits import check_voxel_count

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Multiply an LPS affine on the left by this to get the RAS+ affine (and back: it is its own inverse)."""

DUPLICATE_POSITION_MM = 1e-3
"""Slices closer than this along the slice normal count as the same position."""
SPACING_RELATIVE_TOLERANCE = 1e-2
"""Steps between slices may differ from the median step by this fraction (DICOM positions are text)."""
TILT_TOLERANCE = 1e-3
"""Largest sine of the angle between the slice-to-slice direction and the slice normal before it is a tilt."""
ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between direction cosines of two slices of one series."""


@dataclass(frozen=True)
class DicomSeries:
    """A checked DICOM series, ready to read.

    Args:
        folder: the series folder.
        series_uid: its Series Instance UID.
        files: the slice files sorted along the slice normal (the ``k`` axis).
        geometry: the RAS+ geometry, shape ``(columns, rows, slices)``.
    """

    folder: Path
    series_uid: str
    files: tuple[str, ...]
    geometry: Geometry


@dataclass(frozen=True)
class _SliceInfo:
    file: str
    origin_lps: np.ndarray
    direction_lps: np.ndarray
    spacing: tuple[float, ...]
    size: tuple[int, ...]
    pixel_id: int
    components: int


def _sitk():
    import SimpleITK

    return SimpleITK


def list_series(folder: Path) -> tuple[str, ...]:
    """Series Instance UIDs of the DICOM series directly inside ``folder`` (GDCM's grouping)."""
    sitk = _sitk()
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _choose_series(folder: Path, series_uid: str | None) -> str:
    found = list_series(folder)
    if not found:
        raise InputError(
            f"{folder}: no DICOM series found in this folder; expected a .nii/.nii.gz file or a folder of DICOM slices"
        )
    if series_uid is None:
        if len(found) > 1:
            raise InputError(
                f"{folder}: {len(found)} DICOM series in one folder ({', '.join(found)}); pick one with series_uid= "
                "or move each series into its own folder"
            )
        return found[0]
    if series_uid not in found:
        raise InputError(f"{folder}: no DICOM series with UID {series_uid!r}; found: {', '.join(found)}")
    return series_uid


def _slice_info(file: str) -> _SliceInfo:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InputError(f"{file}: cannot read the DICOM header ({first_line})") from exc
    return _SliceInfo(
        file=file,
        origin_lps=np.asarray(reader.GetOrigin(), dtype=np.float64),
        direction_lps=np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        size=tuple(int(n) for n in reader.GetSize()),
        pixel_id=int(reader.GetPixelID()),
        components=int(reader.GetNumberOfComponents()),
    )


def _numpy_dtype(pixel_id: int) -> str:
    sitk = _sitk()
    probe = sitk.Image([1, 1, 1], pixel_id)
    return str(sitk.GetArrayViewFromImage(probe).dtype)


def _affine_lps(first: _SliceInfo, slice_step: np.ndarray) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = first.direction_lps[:, 0] * first.spacing[0]
    affine[:3, 1] = first.direction_lps[:, 1] * first.spacing[1]
    affine[:3, 2] = slice_step
    affine[:3, 3] = first.origin_lps
    return affine


def _stack_geometry(
    folder: Path, slices: list[_SliceInfo], allow_irregular: bool
) -> tuple[list[_SliceInfo], np.ndarray]:
    """Sort single-frame slices along their normal, check the stack, return the sorted slices and LPS affine."""
    first = slices[0]
    for info in slices[1:]:
        if info.size != first.size:
            raise InputError(
                f"{folder}: slices differ in size: {first.size[:2]} in {first.file}, {info.size[:2]} in {info.file}"
            )
        if not np.allclose(info.direction_lps[:, :2], first.direction_lps[:, :2], atol=ORIENTATION_TOLERANCE):
            raise InputError(f"{folder}: slices differ in Image Orientation (Patient): {first.file} and {info.file}")
        if not np.allclose(info.spacing[:2], first.spacing[:2], rtol=1e-4, atol=0):
            raise InputError(f"{folder}: slices differ in Pixel Spacing: {first.file} and {info.file}")
    normal = np.cross(first.direction_lps[:, 0], first.direction_lps[:, 1])
    normal /= np.linalg.norm(normal)
    ordered = sorted(slices, key=lambda info: float(info.origin_lps @ normal))
    heights = np.array([info.origin_lps @ normal for info in ordered])
    steps = np.diff(heights)
    duplicated = np.flatnonzero(steps < DUPLICATE_POSITION_MM)
    if duplicated.size:
        a, b = ordered[duplicated[0]], ordered[duplicated[0] + 1]
        raise InputError(
            f"{folder}: {duplicated.size} duplicated slice position(s), e.g. {np.round(a.origin_lps, 4).tolist()} "
            f"in {Path(a.file).name} and {Path(b.file).name}; the series mixes several volumes (echoes, phases?) "
            "and cannot be stacked"
        )
    median = float(np.median(steps))
    uneven = np.abs(steps - median) > SPACING_RELATIVE_TOLERANCE * median
    span = ordered[-1].origin_lps - ordered[0].origin_lps
    along = float(span @ normal)
    off_normal = float(np.linalg.norm(span - along * normal))
    tilt_sine = off_normal / float(np.linalg.norm(span))
    problems = []
    if uneven.any():
        where = int(np.flatnonzero(uneven)[0])
        problems.append(
            f"non-uniform slice spacing (steps from {steps.min():.4g} to {steps.max():.4g} mm, median {median:.4g}; "
            f"a slice may be missing between {Path(ordered[where].file).name} and {Path(ordered[where + 1].file).name})"
        )
    if tilt_sine > TILT_TOLERANCE:
        problems.append(
            f"gantry tilt: slices advance {math.degrees(math.asin(min(tilt_sine, 1.0))):.3g} degrees away from the "
            "slice normal"
        )
    if problems and not allow_irregular:
        raise InputError(f"{folder}: {'; '.join(problems)}; pass allow_irregular=True to read it anyway")
    if problems:
        warnings.warn(
            f"{folder}: {'; '.join(problems)}; reading with the mean slice step (allow_irregular=True)",
            RuntimeWarning,
            stacklevel=3,
        )
        # The mean step vector keeps tilted slices where they are (a sheared affine).
        step = span / (len(ordered) - 1)
    else:
        step = normal * (along / (len(ordered) - 1))
    return ordered, _affine_lps(ordered[0], step)


def scan_series(
    folder: Path, *, series_uid: str | None = None, allow_irregular: bool = False, max_voxels: int
) -> DicomSeries:
    """Find, sort and check the slices of a DICOM series; read headers only.

    Args:
        folder: a folder holding the slices of one series (or several, with ``series_uid``).
        series_uid: which series to read when the folder holds more than one.
        allow_irregular: read a series with non-uniform slice spacing or a gantry tilt anyway (warns).
        max_voxels: refuse series with more voxels than this.

    Returns:
        The sorted, checked series with its RAS+ geometry.

    Raises:
        InputError: no series, several series and no ``series_uid``, unreadable files, a single 2D slice,
            colour data, or (unless allowed) uneven spacing, a missing slice or a tilt; duplicated slice
            positions always.
    """
    uid = _choose_series(folder, series_uid)
    files = _sitk().ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    slices = [_slice_info(file) for file in files]
    first = slices[0]
    if first.components != 1:
        raise InputError(f"{folder}: colour or multi-component DICOM ({first.components} components) is not supported")
    if len(slices) == 1:
        if first.size[2] < 2:
            raise InputError(f"{folder}: the series {uid} has a single 2D slice; a 3D volume is required")
        ordered = slices  # a multi-frame file: SimpleITK's geometry is all there is
        affine_lps = np.eye(4)
        affine_lps[:3, :3] = first.direction_lps * np.asarray(first.spacing)
        affine_lps[:3, 3] = first.origin_lps
    else:
        ordered, affine_lps = _stack_geometry(folder, slices, allow_irregular)
    shape = (first.size[0], first.size[1], len(ordered) if len(ordered) > 1 else first.size[2])
    check_voxel_count(shape, max_voxels, folder)
    geometry = Geometry(
        affine=LPS_TO_RAS @ affine_lps,
        shape=shape,
        dtype=_numpy_dtype(first.pixel_id),
        source_format="dicom",
    )
    return DicomSeries(folder=folder, series_uid=uid, files=tuple(info.file for info in ordered), geometry=geometry)


def read_series_voxels(series: DicomSeries) -> np.ndarray:
    """Read the pixel data of a checked series as an ``(I, J, K)`` array (columns, rows, slices).

    Args:
        series: from :func:`scan_series`.

    Returns:
        The voxels, rescale slope/intercept applied by SimpleITK, in medseg's ``(i, j, k)`` order.
    """
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InputError(f"{series.folder}: cannot read the DICOM pixel data ({first_line})") from exc
    # (k, j, i) -> (i, j, k); a copy so the array owns C-ordered memory independent of the SimpleITK image.
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    if array.shape != series.geometry.shape:
        raise InputError(
            f"{series.folder}: pixel data of shape {array.shape} does not match the headers' {series.geometry.shape}"
        )
    return array
