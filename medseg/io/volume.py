"""Load volumes with their geometry and save results with exactly a reference geometry.

Public entry points: :func:`read_geometry` (header only), :func:`load_volume`, :func:`load_case` (one
volume per modality stacked into channels) and :func:`save_like`. See docs/io.md for the conventions and
the rules for bad inputs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError, unknown_choice
from medseg.io.atomic import atomic_write
from medseg.io.dicom import read_series_voxels, scan_series
from medseg.io.geometry import Geometry
from medseg.io.limits import DEFAULT_MAX_VOXELS
from medseg.io.nifti import is_nifti_path, read_nifti_header, read_nifti_voxels, write_nifti
from medseg.io.transunet_h5 import is_transunet_h5_path, read_transunet_h5, read_transunet_h5_geometry

NONFINITE_POLICIES = ("reject", "replace", "keep")
SAVE_KINDS = ("label", "image")
CASE_AFFINE_ATOL: float = 1e-4
"""Default tolerance (mm, per affine entry) for modalities of one case to count as the same grid."""


@dataclass
class Volume:
    """Voxel data with the geometry it came with.

    Args:
        array: ``(I, J, K)`` or channel-first ``(C, I, J, K)`` voxel data.
        geometry: the spatial geometry; ``geometry.shape == array.shape[-3:]``.
        path: the file or DICOM folder it was read from (the first modality's for a case), or ``None``.
        channel_names: one name per channel for channel-first arrays built by :func:`load_case`, else ``None``.

    Raises:
        GeometryError: when the array's spatial shape is not the geometry's shape.
    """

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    channel_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4) or tuple(self.array.shape[-3:]) != self.geometry.shape:
            raise GeometryError(
                f"{self.path or 'volume'}: array shape {self.array.shape} does not fit geometry shape "
                f"{self.geometry.shape} (expected (I, J, K) or (C, I, J, K))"
            )

    @property
    def channels(self) -> int:
        """Number of channels: ``C`` for channel-first arrays, 1 for ``(I, J, K)``."""
        return int(self.array.shape[0]) if self.array.ndim == 4 else 1


def _source(path: str | os.PathLike) -> Path:
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: file not found")
    if source.is_dir():
        return source
    if not source.is_file():
        raise InputError(f"{source}: not a regular file or folder")
    if is_nifti_path(source) or is_transunet_h5_path(source):
        return source
    raise InputError(
        f"{source}: not a supported image; expected a .nii or .nii.gz file, a folder holding one DICOM series, "
        "or a TransUNet .npy.h5 volume"
    )


def _h5_dataset(source: Path, dataset: str | None) -> str:
    """The HDF5 dataset to read (``"image"`` by default); ``dataset`` is refused for other formats."""
    if source.is_file() and is_transunet_h5_path(source):
        return dataset or "image"
    if dataset is not None:
        raise ConfigError(f"{source}: dataset={dataset!r} applies to TransUNet .npy.h5 volumes only")
    return ""


def _layout(full_shape: tuple[int, ...], channels: bool, path: Path) -> tuple[int, ...]:
    """The shape to reshape the data to: trailing singleton dimensions beyond the third dropped."""
    shape = list(full_shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) < 3:
        raise InputError(f"{path}: {len(shape)}D image of shape {tuple(full_shape)}; a 3D volume (I, J, K) is required")
    if len(shape) > 4:
        raise InputError(
            f"{path}: {len(shape)}D image of shape {tuple(full_shape)}; only 3D volumes and 4D volumes "
            "(I, J, K, C) read as channels are supported"
        )
    if len(shape) == 4 and not channels:
        raise InputError(
            f"{path}: 4D image of shape {tuple(full_shape)} ({shape[3]} volumes); a 3D volume was expected. "
            "Ask for channels (load_volume(..., channels=True)) to read it as (C, I, J, K)"
        )
    return tuple(shape)


def _handle_nonfinite(array: np.ndarray, policy: str, path: Path) -> np.ndarray:
    if array.dtype.kind != "f":
        return array
    finite = np.isfinite(array)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad == 0 or policy == "keep":
        return array
    nans = int(np.count_nonzero(np.isnan(array)))
    if policy == "reject":
        raise InputError(
            f"{path}: {bad} non-finite voxel(s) ({nans} NaN, {bad - nans} infinite); refusing them "
            "(nonfinite='replace' sets NaN to 0 and +/-inf to the largest/smallest finite value)"
        )
    if finite.any():
        low, high = float(array[finite].min()), float(array[finite].max())
    else:
        low = high = 0.0
    array = np.nan_to_num(array, copy=True, nan=0.0, posinf=high, neginf=low)
    warnings.warn(
        f"{path}: replaced {bad} non-finite voxel(s): {nans} NaN -> 0, +inf -> {high:g}, -inf -> {low:g}",
        RuntimeWarning,
        stacklevel=3,
    )
    return array


def cast_checked(array: np.ndarray, dtype: object, what: str) -> np.ndarray:
    """Cast to ``dtype``, refusing casts to an integer type that would change values.

    Args:
        array: the data.
        dtype: target numpy dtype (anything ``np.dtype`` accepts).
        what: names the data for messages (a file path).

    Returns:
        The cast array (the same object when no cast is needed).

    Raises:
        ConfigError: ``dtype`` is not a numeric type.
        InputError: an integer target cannot hold the values exactly (fractions, out of range, non-finite).
    """
    try:
        target = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"invalid dtype {dtype!r} ({exc})") from exc
    if target.kind not in "biuf":
        raise ConfigError(f"invalid dtype {target}; valid: bool, integer or floating point types")
    if array.dtype == target:
        return array
    if target.kind in "iu" and array.size:
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)):
                raise InputError(f"{what}: cannot cast non-finite values to {target}")
            if not np.array_equal(array, np.round(array)):
                raise InputError(f"{what}: values are not whole numbers; refusing to cast to {target}")
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise InputError(f"{what}: values {low}..{high} do not fit {target} ({info.min}..{info.max})")
    return array.astype(target)


def read_geometry(
    path: str | os.PathLike,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    series_uid: str | None = None,
    allow_irregular: bool = False,
    dataset: str | None = None,
) -> Geometry:
    """Read the geometry of a volume from its header(s), without voxel data.

    The same checks as :func:`load_volume` that need no voxel data apply: the file exists and is a NIfTI
    file or DICOM series, is not truncated, declares at most ``max_voxels``, is 3D or 4D, and its qform and
    sform agree.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a DICOM series folder or a TransUNet ``.npy.h5`` volume.
        max_voxels: refuse headers declaring more voxels than this.
        series_uid: DICOM only: which series, when the folder holds several.
        allow_irregular: DICOM only: accept uneven slice spacing or a gantry tilt.
        dataset: TransUNet HDF5 only: ``"image"`` (default) or ``"label"``.

    Returns:
        The spatial geometry.

    Raises:
        InputError: see :func:`load_volume`.
        GeometryError: qform and sform disagree.
    """
    source = _source(path)
    h5_dataset = _h5_dataset(source, dataset)
    if source.is_dir():
        series = scan_series(source, series_uid=series_uid, allow_irregular=allow_irregular, max_voxels=max_voxels)
        return series.geometry
    if h5_dataset:
        return read_transunet_h5_geometry(source, h5_dataset)
    header = read_nifti_header(source, max_voxels)
    _layout(header.full_shape, channels=True, path=source)
    return header.geometry


def load_volume(
    path: str | os.PathLike,
    *,
    channels: bool = False,
    nonfinite: str = "reject",
    max_voxels: int = DEFAULT_MAX_VOXELS,
    dtype: object = None,
    series_uid: str | None = None,
    allow_irregular: bool = False,
    dataset: str | None = None,
) -> Volume:
    """Load a volume and its geometry.

    TransUNet's HDF5 test volumes (``case0001.npy.h5``) are read with :mod:`medseg.io.transunet_h5`: the
    stored ``(k, i, j)`` array is returned as ``(i, j, k)`` with an identity geometry (1 mm, RAS, origin 0,
    ``source_format="transunet_h5"``), since the files carry none.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a folder holding one DICOM series, or a TransUNet ``.npy.h5``
            (any ``.h5``) volume.
        channels: ``False``: a 3D volume ``(I, J, K)`` is required (trailing dimensions of size 1 are
            dropped). ``True``: the result is channel-first ``(C, I, J, K)``; a 4D NIfTI ``(I, J, K, C)``
            gives ``C`` channels, a 3D one ``C = 1``.
        nonfinite: what to do with NaN/inf voxels: ``"reject"`` (error with the count), ``"replace"``
            (NaN -> 0, +inf/-inf -> largest/smallest finite value, with a warning) or ``"keep"``
            (return them, for inspection tools).
        max_voxels: refuse headers declaring more voxels (all dimensions) than this, before allocating.
        dtype: cast the result to this type (integer targets must hold the values exactly); ``None`` keeps
            the on-disk type, or float32/float64 when scl_slope/scl_inter scaling applies.
        series_uid: DICOM only: which series, when the folder holds several.
        allow_irregular: DICOM only: accept uneven slice spacing or a gantry tilt (with a warning).
        dataset: TransUNet HDF5 only: the dataset to read, ``"image"`` (default) or ``"label"``.

    Returns:
        The :class:`Volume`; arrays are native-endian and C-contiguous.

    Raises:
        InputError: missing file, unsupported file type, truncated or corrupt data, not an image, more
            voxels than ``max_voxels`` or than the file holds, 2D or 5D+ data, 4D data without ``channels``,
            non-finite voxels with ``nonfinite="reject"``, DICOM series problems.
        GeometryError: qform and sform both set but disagreeing.
        ConfigError: unknown ``nonfinite`` policy, invalid ``dtype``, or ``dataset`` given for a file that is
            not HDF5 (or naming neither ``"image"`` nor ``"label"``).
        UnsafeFileError: an HDF5 dataset that reads its data from other files.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise unknown_choice("non-finite policy", nonfinite, NONFINITE_POLICIES)
    source = _source(path)
    h5_dataset = _h5_dataset(source, dataset)
    if h5_dataset:
        array, geometry = read_transunet_h5(source, h5_dataset, max_voxels)
    elif source.is_dir():
        series = scan_series(source, series_uid=series_uid, allow_irregular=allow_irregular, max_voxels=max_voxels)
        geometry = series.geometry
        array = read_series_voxels(series)
    else:
        header = read_nifti_header(source, max_voxels)
        shape = _layout(header.full_shape, channels, source)
        geometry = header.geometry
        array = read_nifti_voxels(header, source).reshape(shape, order="A")
    if channels:
        array = array[None] if array.ndim == 3 else np.moveaxis(array, 3, 0)
    array = np.ascontiguousarray(array)
    array = _handle_nonfinite(array, nonfinite, source)
    if dtype is not None:
        array = cast_checked(array, dtype, str(source))
    return Volume(array=array, geometry=geometry, path=source)


def load_case(
    paths: Sequence[str | os.PathLike],
    *,
    names: Sequence[str] | None = None,
    affine_atol: float = CASE_AFFINE_ATOL,
    **load_kwargs: object,
) -> Volume:
    """Load one 3D volume per modality and stack them into channels ``(C, I, J, K)``.

    Args:
        paths: one file or DICOM folder per modality, in channel order.
        names: optional modality names (same length, unique), kept as ``Volume.channel_names``.
        affine_atol: largest difference (mm, per affine entry) allowed between modalities' affines.
        **load_kwargs: passed to :func:`load_volume` (``nonfinite``, ``max_voxels``, ``dtype`` ...), except
            ``channels``: every modality must be 3D.

    Returns:
        A channel-first :class:`Volume` with the first modality's geometry and path.

    Raises:
        ConfigError: no paths, ``names`` of the wrong length or repeated, or ``channels`` passed.
        GeometryError: a modality's shape or affine differs from the first's (both files named).
        InputError: any problem loading a modality (see :func:`load_volume`).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("load_case needs at least one modality path")
    if "channels" in load_kwargs:
        raise ConfigError("load_case stacks 3D modalities; 'channels' cannot be passed")
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) != len(paths) or len(set(names)) != len(names):
            raise ConfigError(f"load_case: {len(paths)} paths need {len(paths)} distinct names, got {list(names)}")
    label = (lambda i: f"{paths[i]} ({names[i]})") if names else (lambda i: str(paths[i]))
    first = load_volume(paths[0], **load_kwargs)
    arrays = [first.array]
    for index, path in enumerate(paths[1:], start=1):
        volume = load_volume(path, **load_kwargs)
        first.geometry.require_match(volume.geometry, f"case modality {label(index)} vs {label(0)}", atol=affine_atol)
        arrays.append(volume.array)
    return Volume(array=np.stack(arrays), geometry=first.geometry, path=first.path, channel_names=names)


def _label_data(array: np.ndarray, dtype: object, path: Path) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: labels must be numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"{path}: label map has non-finite values; nothing written")
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: label map has fractional values; labels must be whole numbers; nothing written")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or high > 65535:
            raise InputError(f"{path}: labels must be in 0..65535, got {low}..{high}; nothing written")
    else:
        high = 0
    if dtype is not None:
        return cast_checked(array, dtype, str(path))
    return array.astype(np.uint16 if high > 255 else np.uint8)


def _image_data(array: np.ndarray, dtype: object, path: Path) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: image data must be numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{path}: image has non-finite values; nothing written")
    if dtype is not None:
        return cast_checked(array, dtype, str(path))
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _verify_written(tmp: Path, reference: Geometry, expected_shape: tuple[int, ...], path: Path) -> None:
    try:
        written = read_nifti_header(tmp, max_voxels=2**63 - 1)
    except InputError as exc:
        raise GeometryError(f"{path}: the written file could not be read back ({exc}); nothing written") from exc
    got = written.geometry
    # NIfTI-1 stores transforms as float32: allow that rounding on top of 1e-6 mm.
    tolerance = 1e-6 + 4 * np.finfo(np.float32).eps * np.abs(reference.affine)
    problems = []
    if written.full_shape != expected_shape:
        problems.append(f"shape {written.full_shape} instead of {expected_shape}")
    if np.any(np.abs(got.affine - reference.affine) > tolerance):
        problems.append(
            f"affine {np.round(got.affine[:3], 6).tolist()} instead of {np.round(reference.affine[:3], 6).tolist()}"
        )
    if problems:
        raise GeometryError(
            f"{path}: the written header does not reproduce the reference geometry: {'; '.join(problems)}; "
            "nothing written"
        )


def save_like(
    array: np.ndarray,
    reference: Geometry,
    path: str | os.PathLike,
    *,
    kind: str = "label",
    dtype: object = None,
) -> Path:
    """Write ``array`` as NIfTI with exactly the reference geometry, atomically.

    The header gets the reference's affine, qform/sform and their codes (NIfTI-2 when the reference came
    from NIfTI-2), unit scaling (scl_slope 1, scl_inter 0) and mm units. After writing, the header is read
    back and checked against the reference before the file is moved into place.

    Args:
        array: ``(I, J, K)`` data with ``I, J, K == reference.shape``; for ``kind="image"`` also
            channel-first ``(C, I, J, K)``, written as a 4D NIfTI ``(I, J, K, C)``.
        reference: the geometry to reproduce (usually ``load_volume(...).geometry``).
        path: output ``.nii`` or ``.nii.gz`` path (the name decides compression).
        kind: ``"label"``: whole numbers 0..65535 written as uint8 (uint16 when the maximum exceeds 255);
            ``"image"``: float32 and integer data kept as given, float64/float16 written as float32.
        dtype: store this type instead (integer targets must hold the values exactly).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        GeometryError: the array's shape differs from the reference (nothing written), or the written
            header would not reproduce the reference geometry (nothing written).
        InputError: labels negative, fractional, above 65535 or non-finite; non-finite image values;
            the path is not ``.nii``/``.nii.gz``.
        ConfigError: unknown ``kind`` or invalid ``dtype``.
    """
    out = Path(path)
    if kind not in SAVE_KINDS:
        raise unknown_choice("save kind", kind, SAVE_KINDS)
    if not is_nifti_path(out):
        raise InputError(f"{out}: save_like writes NIfTI; the name must end with .nii or .nii.gz")
    data = np.asarray(array)
    channel_first = kind == "image" and data.ndim == 4 and tuple(data.shape[1:]) == reference.shape
    if tuple(data.shape) != reference.shape and not channel_first:
        allowed = f"{reference.shape}" + (f" or (C, *{reference.shape})" if kind == "image" else "")
        raise GeometryError(
            f"{out}: array shape {tuple(data.shape)} does not match the reference geometry shape {allowed}; "
            "nothing written"
        )
    data = _label_data(data, dtype, out) if kind == "label" else _image_data(data, dtype, out)
    if channel_first:
        data = np.moveaxis(data, 0, 3)
    with atomic_write(out) as tmp:
        write_nifti(np.asarray(data), reference, tmp)
        _verify_written(tmp, reference, tuple(data.shape), out)
    return out
