"""TransUNet's preprocessed Synapse test volumes (``test_vol_h5/case0001.npy.h5``) read as medseg volumes.

Each file is HDF5 with two datasets, ``image`` (float32 CT already clipped to [-125, 275] HU and scaled to
[0, 1]) and ``label`` (TransUNet's organ labels 0..8), both stored ``(k, i, j)``: one axial slice per first
index. medseg returns them in its own ``(i, j, k)`` order.

The files carry no geometry, and TransUNet's own evaluation works in voxel units, so the geometry given
here is the identity: 1 mm voxels along R, A, S with the first voxel at the origin, ``source_format`` set to
:data:`SOURCE_FORMAT`. A label map written with :func:`medseg.io.save_like` and this geometry is a NIfTI
file on that identity grid, which :mod:`medseg.pipelines.evaluate` pairs with the ``label`` dataset.

Only data stored inside the file itself is read: external links, virtual datasets and external raw storage
(which would read other files) are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError, UnsafeFileError, unknown_choice
from medseg.io.geometry import Geometry
from medseg.io.limits import DEFAULT_MAX_VOXELS, check_voxel_count

SOURCE_FORMAT = "transunet_h5"
"""``Geometry.source_format`` of volumes read from TransUNet's HDF5 files."""

H5_SUFFIX = ".h5"
"""File names ending in this (``case0001.npy.h5`` included) are read as TransUNet HDF5 volumes."""

H5_DATASETS: tuple[str, ...] = ("image", "label")
"""The datasets a TransUNet test volume holds."""

# HDF5 files start with this signature (at offset 0 for files written by h5py).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_transunet_h5_path(path: str | Path) -> bool:
    """Whether the file name ends with ``.h5`` (``.npy.h5`` included), case-insensitive."""
    return Path(path).name.lower().endswith(H5_SUFFIX)


def transunet_h5_stem(name: str) -> str | None:
    """The case name of a TransUNet HDF5 file name (``"case0001"`` for ``case0001.npy.h5``), else ``None``."""
    lower = name.lower()
    for suffix in (".npy.h5", H5_SUFFIX):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def transunet_geometry(shape: tuple[int, int, int], dtype: object = "float32") -> Geometry:
    """The geometry medseg gives a TransUNet volume: identity affine (1 mm voxels, RAS axes, origin 0).

    Args:
        shape: the spatial shape ``(I, J, K)`` (medseg order).
        dtype: the stored data type.

    Returns:
        A :class:`~medseg.io.geometry.Geometry` with ``source_format="transunet_h5"`` and no header transforms.
    """
    return Geometry(affine=np.eye(4), shape=tuple(shape), dtype=str(np.dtype(dtype)), source_format=SOURCE_FORMAT)


def _h5py():
    import h5py

    return h5py


def _open(path: Path):
    """Open ``path`` read-only, with a clear message for files that are not HDF5."""
    h5py = _h5py()
    with open(path, "rb") as handle:
        head = handle.read(len(_HDF5_SIGNATURE))
    if head != _HDF5_SIGNATURE:
        raise InputError(f"{path}: not an HDF5 file (TransUNet .npy.h5 volumes are HDF5 with 'image' and 'label')")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: cannot open the HDF5 file ({exc})") from exc


def _dataset(handle, name: str, path: Path):
    """The dataset ``name`` of an open file, checked to be a 3D numeric array stored in this file."""
    h5py = _h5py()
    if name not in H5_DATASETS:
        raise unknown_choice("TransUNet HDF5 dataset", name, H5_DATASETS)
    link = handle.get(name, getlink=True)
    if link is None:
        raise InputError(f"{path}: no dataset {name!r} (holds {sorted(handle.keys()) or 'nothing'}); "
                         f"TransUNet volumes hold {' and '.join(H5_DATASETS)}")
    if not isinstance(link, h5py.HardLink):
        raise UnsafeFileError(f"{path}: {name!r} is a link to other data ({type(link).__name__}); refusing to follow it")
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{path}: {name!r} is a group, not a dataset")
    if dataset.is_virtual or dataset.external:
        raise UnsafeFileError(f"{path}: dataset {name!r} reads its data from other files; refusing it")
    if dataset.dtype.kind not in "biuf":
        raise InputError(f"{path}: dataset {name!r} has dtype {dataset.dtype}; numbers are required")
    if len(dataset.shape) != 3:
        raise InputError(
            f"{path}: dataset {name!r} has shape {dataset.shape}; a 3D volume stored (slices, H, W) is required"
        )
    return dataset


def _spatial_shape(stored: tuple[int, ...]) -> tuple[int, int, int]:
    k, i, j = (int(n) for n in stored)
    return (i, j, k)


def read_transunet_h5_geometry(path: str | Path, dataset: str = "image") -> Geometry:
    """The geometry of one dataset of a TransUNet HDF5 volume, without reading voxel data.

    Args:
        path: a ``.npy.h5`` / ``.h5`` file.
        dataset: ``"image"`` or ``"label"``.

    Returns:
        The identity geometry (see :func:`transunet_geometry`) with the dataset's ``(I, J, K)`` shape.

    Raises:
        InputError: not HDF5, dataset missing, not 3D or not numeric.
        UnsafeFileError: the dataset reads data from other files.
        ConfigError: ``dataset`` is not ``"image"`` or ``"label"``.
    """
    path = Path(path)
    with _open(path) as handle:
        data = _dataset(handle, dataset, path)
        return transunet_geometry(_spatial_shape(data.shape), data.dtype)


def read_transunet_h5(
    path: str | Path, dataset: str = "image", max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, Geometry]:
    """Read one dataset of a TransUNet HDF5 volume as an ``(I, J, K)`` array with its geometry.

    Args:
        path: a ``.npy.h5`` / ``.h5`` file.
        dataset: ``"image"`` (CT in [0, 1]) or ``"label"`` (organ labels).
        max_voxels: refuse datasets with more voxels than this, before reading them.

    Returns:
        ``(array, geometry)``: the data transposed from the stored ``(k, i, j)`` to ``(i, j, k)``,
        C-contiguous in its stored dtype, and the identity geometry of :func:`transunet_geometry`.

    Raises:
        InputError: not HDF5, dataset missing, not 3D, not numeric, too large, or unreadable (corrupt data).
        UnsafeFileError: the dataset reads data from other files.
        ConfigError: ``dataset`` is not ``"image"`` or ``"label"``.
    """
    path = Path(path)
    with _open(path) as handle:
        data = _dataset(handle, dataset, path)
        check_voxel_count(tuple(data.shape), max_voxels, path)
        try:
            stored = np.asarray(data[()])
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read dataset {dataset!r} ({exc})") from exc
    array = np.ascontiguousarray(np.transpose(stored, (1, 2, 0)))
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array, transunet_geometry(array.shape, stored.dtype)
