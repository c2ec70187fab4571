"""NIfTI-1 and NIfTI-2 reading and writing through nibabel, with the checks medseg needs.

Reading sniffs the header bytes first (so a non-image or a corrupt gzip gives a clear message), checks the
declared size against the voxel cap and against what the file can hold, and checks that qform and sform
agree, all before any voxel data is read.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.io.geometry import Geometry, corner_displacement
from medseg.io.limits import check_gzip_holds, check_plain_file_holds, check_voxel_count, is_gzip

NIFTI_SUFFIXES = (".nii", ".nii.gz")

QFORM_SFORM_TOLERANCE_MM: float = 1e-3
"""qform and sform (both set) may place a voxel at most this many mm apart, unless the qform is the sform
as closely as a float32 quaternion can store it (see :func:`qform_encodes_sform`); otherwise the file is
refused."""

_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540
_ERRORS_FROM_NIBABEL: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, zlib.error, struct.error)


@dataclass(frozen=True)
class NiftiHeader:
    """What medseg needs from a NIfTI header, read without touching voxel data.

    Args:
        header: the nibabel header exactly as stored in the file (offset and scaling included).
        full_shape: every dimension the header declares, e.g. ``(I, J, K)`` or ``(I, J, K, C)``.
        geometry: spatial geometry (affine to RAS+, qform/sform and codes, on-disk dtype).
        data_offset: byte offset of the voxel data (``vox_offset``; a stored 0 is read as "right after the
            header", as nibabel does).
    """

    header: object
    full_shape: tuple[int, ...]
    geometry: Geometry
    data_offset: int


def is_nifti_path(path: Path) -> bool:
    """Whether the file name ends with ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _read_head(path: Path, compressed: bool) -> bytes:
    if not compressed:
        with open(path, "rb") as handle:
            return handle.read(_NIFTI2_HEADER_BYTES)
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(_NIFTI2_HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip data ({exc})") from exc


def sniff_nifti(path: Path) -> tuple[str, bytes]:
    """Check that ``path`` holds a single-file NIfTI header and say which version.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``"nifti1"`` or ``"nifti2"``, and the first header bytes (up to 540).

    Raises:
        InputError: when the compression does not match the name, the gzip data is corrupt, or the bytes
            are not a NIfTI-1/NIfTI-2 single-file header.
    """
    compressed_name = path.name.lower().endswith(".gz")
    compressed_data = is_gzip(path)
    if compressed_name and not compressed_data:
        raise InputError(f"{path}: not gzip data although the name ends with .gz (corrupt or misnamed file)")
    if compressed_data and not compressed_name:
        raise InputError(f"{path}: the data is gzip-compressed but the name ends with .nii; rename it to .nii.gz")
    head = _read_head(path, compressed_data)
    if len(head) >= 4:
        for order in "<>":
            (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
            if sizeof_hdr == _NIFTI1_HEADER_BYTES and len(head) >= _NIFTI1_HEADER_BYTES:
                magic = head[344:348]
                if magic == b"n+1\x00":
                    return "nifti1", head
                if magic == b"ni1\x00":
                    raise InputError(f"{path}: a NIfTI-1 pair header (.hdr/.img) is not supported; convert to .nii")
            if sizeof_hdr == _NIFTI2_HEADER_BYTES and len(head) >= _NIFTI2_HEADER_BYTES:
                if head[4:8] == b"n+2\x00":
                    return "nifti2", head
    raise InputError(f"{path}: not a NIfTI image (no NIfTI-1 or NIfTI-2 header found; {len(head)} header bytes read)")


def _parse_header(head: bytes, version: str, path: Path) -> object:
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    header_class = nib.Nifti1Header if version == "nifti1" else nib.Nifti2Header
    size = _NIFTI1_HEADER_BYTES if version == "nifti1" else _NIFTI2_HEADER_BYTES
    try:
        # check=False: medseg validates what it uses itself and never "fixes" a header silently.
        return header_class(binaryblock=head[:size], check=False)
    except (*_ERRORS_FROM_NIBABEL, HeaderDataError) as exc:
        raise InputError(f"{path}: cannot read the NIfTI header ({exc})") from exc


def _declared_shape(header: object, path: Path) -> tuple[int, ...]:
    dims = header["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: corrupt header: dim[0] = {ndim}, must be 1..7")
    shape = tuple(int(n) for n in dims[1 : ndim + 1])
    if any(n < 1 for n in shape):
        raise InputError(f"{path}: corrupt header: non-positive size in shape {shape}")
    return shape


def _data_offset(header: object, version: str, path: Path) -> int:
    # A single-file NIfTI stores the header, 4 extension-flag bytes, optional extensions, then the data.
    smallest = (_NIFTI1_HEADER_BYTES if version == "nifti1" else _NIFTI2_HEADER_BYTES) + 4
    value = float(header["vox_offset"])
    if not np.isfinite(value) or value != int(value) or int(value) < 0:
        raise InputError(f"{path}: corrupt header: vox_offset = {value}")
    offset = int(value)
    if offset == 0:  # old writers: "right after the header", as nibabel reads it
        return smallest
    if offset < smallest:
        raise InputError(f"{path}: corrupt header: vox_offset {offset} lies inside the header (minimum {smallest})")
    return offset


def _checked_dtype(header: object, path: Path) -> np.dtype:
    from nibabel.spatialimages import HeaderDataError

    try:
        dtype = np.dtype(header.get_data_dtype())
    except (HeaderDataError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: unsupported or corrupt NIfTI datatype code ({exc})") from exc
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(
            f"{path}: unsupported voxel type {dtype} (datatype code {int(header['datatype'])}); "
            "valid: bool, integer or floating point scalars"
        )
    return dtype


def _transforms(header: object, spatial_shape: tuple[int, int, int], path: Path) -> tuple:
    from nibabel.spatialimages import HeaderDataError

    try:
        qform, qform_code = header.get_qform(coded=True)
        sform, sform_code = header.get_sform(coded=True)
        best = header.get_best_affine()
    except (ValueError, ArithmeticError, HeaderDataError) as exc:
        raise InputError(f"{path}: corrupt qform/sform in the header ({exc})") from exc
    qform_code, sform_code = int(qform_code), int(sform_code)
    for name, matrix in (("qform", qform), ("sform", sform), ("affine", best)):
        if matrix is not None and not np.all(np.isfinite(matrix)):
            raise InputError(f"{path}: the header's {name} has non-finite entries")
    if qform_code > 0 and sform_code > 0:
        shift = corner_displacement(qform, sform, spatial_shape)
        if shift > QFORM_SFORM_TOLERANCE_MM and not qform_encodes_sform(header, sform):
            raise GeometryError(
                f"{path}: qform (code {qform_code}) and sform (code {sform_code}) disagree by up to {shift:.4g} mm "
                f"(tolerance {QFORM_SFORM_TOLERANCE_MM} mm); refusing to guess which is right. "
                f"qform={np.round(qform[:3], 6).tolist()} sform={np.round(sform[:3], 6).tolist()}; "
                "fix the header (e.g. set one code to 0) and try again"
            )
    return best, qform, qform_code, sform, sform_code


def qform_encodes_sform(header: object, sform: np.ndarray) -> bool:
    """Whether the header's qform parameters are the sform as closely as a qform can store it.

    A qform stores the rotation as a float32 quaternion ``(b, c, d)`` and derives ``a`` from them; near
    180-degree rotations that loses up to about 1e-3 rad, so a qform written from the very same affine as
    the sform can place far voxels a few mm away. Comparing the stored parameters with the sform's own
    quaternion, zooms, handedness and offset tells such representation error apart from a real
    disagreement. A sheared sform is never encoded by a qform.

    Args:
        header: a nibabel NIfTI-1/2 header.
        sform: its ``(4, 4)`` sform matrix.

    Returns:
        True when the qform parameters match the sform to a few float32 rounding steps.
    """
    from nibabel.quaternions import mat2quat

    zooms = np.linalg.norm(sform[:3, :3], axis=0)
    rotation = sform[:3, :3] / zooms
    if not np.allclose(rotation.T @ rotation, np.eye(3), rtol=0.0, atol=1e-5):
        return False
    qfac = -1.0 if np.linalg.det(rotation) < 0 else 1.0
    rotation[:, 2] *= qfac
    expected_bcd = mat2quat(rotation)[1:]
    stored_bcd = np.array([header["quatern_b"], header["quatern_c"], header["quatern_d"]], dtype=np.float64)
    stored_qfac = -1.0 if float(header["pixdim"][0]) < 0 else 1.0
    stored_zooms = np.abs(np.asarray(header["pixdim"][1:4], dtype=np.float64))
    stored_offset = np.array([header["qoffset_x"], header["qoffset_y"], header["qoffset_z"]], dtype=np.float64)
    # q and -q are the same rotation; near 180 degrees either sign may have been stored.
    bcd_error = min(np.abs(stored_bcd - expected_bcd).max(), np.abs(stored_bcd + expected_bcd).max())
    return bool(
        stored_qfac == qfac
        and bcd_error <= 1e-6
        and np.allclose(stored_zooms, zooms, rtol=1e-5, atol=0.0)
        and np.allclose(stored_offset, sform[:3, 3], rtol=1e-6, atol=QFORM_SFORM_TOLERANCE_MM)
    )


def read_nifti_header(path: Path, max_voxels: int) -> NiftiHeader:
    """Read and check a NIfTI header without reading voxel data.

    Args:
        path: an existing ``.nii`` or ``.nii.gz`` file.
        max_voxels: refuse headers declaring more voxels than this (all dimensions).

    Returns:
        The raw header, the declared full shape and the spatial geometry.

    Raises:
        InputError: not a NIfTI file, corrupt header, fewer than 3 dimensions, too many voxels, or a file too
            short for its header.
        GeometryError: qform and sform both set but disagreeing.
    """
    try:
        version, head = sniff_nifti(path)
    except OSError as exc:  # permissions, a folder vanished, an I/O error: still one line naming the file
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    header = _parse_header(head, version, path)
    full_shape = _declared_shape(header, path)
    dtype = _checked_dtype(header, path)
    count = check_voxel_count(full_shape, max_voxels, path)
    offset = _data_offset(header, version, path)
    needed = offset + count * dtype.itemsize
    if path.name.lower().endswith(".gz"):
        check_gzip_holds(path, needed)
    else:
        check_plain_file_holds(path, needed)
    if len(full_shape) < 3:
        raise InputError(
            f"{path}: {len(full_shape)}D image of shape {full_shape}; a 3D volume (I, J, K) is required"
        )
    spatial = full_shape[:3]
    best, qform, qform_code, sform, sform_code = _transforms(header, spatial, path)
    try:
        geometry = Geometry(
            affine=best,
            shape=spatial,
            dtype=str(dtype.newbyteorder("=")),
            qform=qform if qform_code > 0 else None,
            qform_code=qform_code,
            sform=sform if sform_code > 0 else None,
            sform_code=sform_code,
            source_format=version,
        )
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return NiftiHeader(header=header, full_shape=full_shape, geometry=geometry, data_offset=offset)


def _fill_from(stream: object, buffer: memoryview) -> int:
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


def _read_raw(path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Read exactly the declared voxels; for gzip also read to the end so its CRC is checked."""
    raw = np.empty(math.prod(shape), dtype=dtype)
    buffer = memoryview(raw.view(np.uint8))
    compressed = path.name.lower().endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                skipped = 0
                while skipped < offset:  # in chunks: a large vox_offset must not become one large read
                    chunk = len(stream.read(min(offset - skipped, 1 << 20)))
                    if not chunk:
                        break
                    skipped += chunk
                filled = _fill_from(stream, buffer) if skipped == offset else 0
                while stream.read(1 << 20):  # trailing bytes, rare: read on so the CRC and length are verified
                    pass
        else:
            with open(path, "rb") as stream:
                stream.seek(offset)
                filled = _fill_from(stream, buffer)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt voxel data ({exc})") from exc
    if filled < len(buffer):
        raise InputError(f"{path}: truncated: {filled} of {len(buffer)} voxel bytes present")
    return raw.reshape(shape, order="F")


def read_nifti_voxels(header: NiftiHeader, path: Path) -> np.ndarray:
    """Read the voxel data of a checked header, scaled by scl_slope/scl_inter, in native byte order.

    Args:
        header: from :func:`read_nifti_header`.
        path: the file.

    Returns:
        Array of ``header.full_shape`` (Fortran-ordered, as stored). Unscaled data keep the on-disk type;
        scaled data are float32 when the on-disk type is float32 or an integer of at most 16 bits, else
        float64.

    Raises:
        InputError: truncated or corrupt data (including a gzip CRC mismatch), invalid scaling.
    """
    nib_header = header.header
    dtype = _checked_dtype(nib_header, path)
    raw = _read_raw(path, header.data_offset, header.full_shape, dtype)
    raw = raw.astype(raw.dtype.newbyteorder("="), copy=False)
    slope, inter = nib_header.get_slope_inter()
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0.0:
        raise InputError(f"{path}: invalid scl_slope/scl_inter ({slope}, {inter})")
    if slope == 1.0 and inter == 0.0:
        return raw
    small = raw.dtype == np.float32 or (raw.dtype.kind in "biu" and raw.dtype.itemsize <= 2)
    out_type = np.float32 if small else np.float64
    scaled = raw.astype(out_type)
    scaled *= out_type(slope)
    scaled += out_type(inter)
    return scaled


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write ``array`` with exactly the header transforms of ``geometry`` (no checks; see ``save_like``).

    Args:
        array: ``(I, J, K)`` or ``(I, J, K, C)`` data in the dtype to store.
        geometry: the reference; its qform/sform and codes are written as they are, or, for geometries
            made in memory or from DICOM without header transforms, the affine with codes 1 (scanner).
        path: a ``.nii`` or ``.nii.gz`` path (the name decides compression).
    """
    import nibabel as nib

    image_class = nib.Nifti2Image if geometry.source_format == "nifti2" else nib.Nifti1Image
    header_class = nib.Nifti2Header if geometry.source_format == "nifti2" else nib.Nifti1Header
    header = header_class()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    qform, qform_code, sform, sform_code = header_transforms(geometry)
    zooms = list(geometry.spacing) + [1.0] * (array.ndim - 3)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm")
    image = image_class(array, None, header=header)
    image.set_qform(qform, code=qform_code)
    image.set_sform(sform, code=sform_code)
    image.header.set_slope_inter(1.0, 0.0)
    image.to_filename(str(path))


def header_transforms(geometry: Geometry) -> tuple[np.ndarray | None, int, np.ndarray | None, int]:
    """The qform, qform code, sform and sform code to write for ``geometry``.

    NIfTI sources keep theirs exactly (both codes 0 included: readers then fall back to the zooms, as the
    source did). Geometries without header transforms that came from DICOM or memory write their affine
    as sform (code 1) and, when it has orthogonal axes, as qform (code 1).
    """
    if geometry.qform_code or geometry.sform_code or geometry.source_format in ("nifti1", "nifti2"):
        return geometry.qform, geometry.qform_code, geometry.sform, geometry.sform_code
    made = Geometry.from_affine(geometry.affine, geometry.shape, geometry.dtype)
    return made.qform, made.qform_code, made.sform, made.sform_code
