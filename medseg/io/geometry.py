"""Geometry of a volume: voxel grid shape and the affine that maps voxel indices to RAS+ millimetres.

Conventions (see docs/io.md): arrays are indexed ``(i, j, k)`` as stored in NIfTI (nibabel's order) and
``affine @ (i, j, k, 1)`` gives the voxel centre in RAS+ millimetres (x to the Right, y to Anterior, z to
Superior). DICOM (LPS) geometry is converted to this convention when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medseg.errors import GeometryError, InputError

SOURCE_FORMATS = ("nifti1", "nifti2", "dicom", "transunet_h5", "array")


def _frozen_affine(value: object, name: str) -> np.ndarray:
    matrix = np.array(value, dtype=np.float64, copy=True)
    if matrix.shape != (4, 4):
        raise InputError(f"{name} must be a 4x4 matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{name} has non-finite entries: {matrix.tolist()}")
    matrix.setflags(write=False)
    return matrix


def _fmt(values: np.ndarray | tuple | list) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a voxel grid lies in the world.

    Args:
        affine: ``(4, 4)`` float64 matrix mapping voxel index ``(i, j, k, 1)`` to RAS+ millimetres.
        shape: spatial shape ``(I, J, K)`` (channels are not part of the geometry).
        dtype: on-disk data type name of the source (before scaling), e.g. ``"int16"``.
        qform: the header's qform matrix when ``qform_code > 0``, else ``None``.
        qform_code: NIfTI qform code (0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template).
        sform: the header's sform matrix when ``sform_code > 0``, else ``None``.
        sform_code: NIfTI sform code (same meanings).
        source_format: ``"nifti1"``, ``"nifti2"``, ``"dicom"``, ``"transunet_h5"`` (TransUNet's HDF5 volumes,
            which carry no geometry: identity affine, see :mod:`medseg.io.transunet_h5`) or ``"array"``
            (made in memory).

    Two geometries compare equal (``==``) only when every field is identical; use :meth:`matches` for a
    tolerant comparison of shape and affine.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    dtype: str = "float32"
    qform: np.ndarray | None = None
    qform_code: int = 0
    sform: np.ndarray | None = None
    sform_code: int = 0
    source_format: str = "array"
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "affine", _frozen_affine(self.affine, "affine"))
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or any(n < 1 for n in shape):
            raise InputError(f"geometry shape must be three positive sizes (I, J, K), got {tuple(self.shape)}")
        set_(self, "shape", shape)
        set_(self, "dtype", str(np.dtype(self.dtype)))
        for name in ("qform", "sform"):
            matrix = getattr(self, name)
            set_(self, name, None if matrix is None else _frozen_affine(matrix, name))
            code = int(getattr(self, f"{name}_code"))
            if not 0 <= code <= 5:
                raise InputError(f"{name}_code must be between 0 and 5, got {code}")
            set_(self, f"{name}_code", code)
        if self.source_format not in SOURCE_FORMATS:
            raise InputError(f"unknown source_format {self.source_format!r}; valid: {', '.join(SOURCE_FORMATS)}")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise InputError(f"affine is singular (a voxel axis has zero length): {self.affine.tolist()}")
        set_(self, "_hash", hash((self.affine.tobytes(), self.shape)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            self.shape == other.shape
            and np.array_equal(self.affine, other.affine)
            and self.dtype == other.dtype
            and _same_matrix(self.qform, other.qform)
            and self.qform_code == other.qform_code
            and _same_matrix(self.sform, other.sform)
            and self.sform_code == other.sform_code
            and self.source_format == other.source_format
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return (
            f"Geometry(shape={self.shape}, spacing={_fmt(self.spacing)}, origin={_fmt(self.origin)}, "
            f"orientation={self.orientation!r}, dtype={self.dtype!r}, qform_code={self.qform_code}, "
            f"sform_code={self.sform_code}, source_format={self.source_format!r})"
        )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``i``, ``j``, ``k`` (lengths of the affine's first three columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS+ position in mm of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` matrix whose columns are the unit RAS+ directions of the ``i``, ``j``, ``k`` axes."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def orientation(self) -> str:
        """Axis codes of the closest RAS+ axes, e.g. ``"RAS"`` or ``"LPS"`` (nibabel's ``aff2axcodes``)."""
        from nibabel.orientations import aff2axcodes

        return "".join(aff2axcodes(self.affine))

    def matches(self, other: Geometry, atol: float = 1e-6) -> bool:
        """Whether ``other`` has the same shape and an affine equal within ``atol`` (mm, per entry).

        Args:
            other: the geometry to compare with.
            atol: absolute tolerance on every affine entry.

        Returns:
            True when shape and affine agree.
        """
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, rtol=0.0, atol=atol))

    def differences(self, other: Geometry, atol: float = 1e-6) -> list[str]:
        """Describe how ``other`` differs from this geometry (empty when they match).

        Args:
            other: the geometry to compare with.
            atol: absolute tolerance, as in :meth:`matches`.

        Returns:
            Phrases such as ``"shape (7, 6, 5) vs (7, 6, 4)"``, for shape, spacing, origin and direction.
        """
        found = []
        if self.shape != other.shape:
            found.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, rtol=0.0, atol=atol):
            found.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, rtol=0.0, atol=atol):
            found.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm")
        if not np.allclose(self.direction, other.direction, rtol=0.0, atol=atol):
            found.append(
                f"direction {self.orientation} {_fmt(self.direction)} vs {other.orientation} {_fmt(other.direction)}"
            )
        if not found and not np.allclose(self.affine, other.affine, rtol=0.0, atol=atol):
            # Entries differ by more than atol although each summary is within it (e.g. shear).
            found.append(f"affine {_fmt(self.affine[:3])} vs {_fmt(other.affine[:3])}")
        return found

    def require_match(self, other: Geometry, what: str, atol: float = 1e-6) -> None:
        """Raise unless ``other`` matches this geometry (see :meth:`matches`).

        Args:
            other: the geometry that must match.
            what: names the two things compared, for the message (e.g. ``"label a.nii.gz vs image b.nii.gz"``).
            atol: absolute tolerance on every affine entry (mm).

        Raises:
            GeometryError: naming ``what`` and each difference (shape, spacing, origin, direction) with values.
        """
        if self.matches(other, atol=atol):
            return
        raise GeometryError(f"{what}: geometry differs: " + "; ".join(self.differences(other, atol=atol)))

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, int, int], dtype: str = "float32") -> Geometry:
        """Geometry for a new volume (synthetic data, tests), written with qform and sform codes 1 (scanner).

        The qform (which can only hold rotations, zooms and translations) is set only when ``affine`` has
        orthogonal axes; otherwise ``qform_code`` is 0 and only the sform carries the affine.

        Args:
            affine: ``(4, 4)`` voxel-to-RAS+ matrix in mm.
            shape: spatial shape ``(I, J, K)``.
            dtype: intended on-disk data type.

        Returns:
            The geometry, ``source_format="array"``.
        """
        matrix = _frozen_affine(affine, "affine")
        orthogonal = _has_orthogonal_axes(matrix)
        return cls(
            affine=matrix,
            shape=tuple(shape),
            dtype=dtype,
            qform=matrix if orthogonal else None,
            qform_code=1 if orthogonal else 0,
            sform=matrix,
            sform_code=1,
            source_format="array",
        )


def _same_matrix(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


def _has_orthogonal_axes(affine: np.ndarray, tol: float = 1e-6) -> bool:
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.allclose(columns.T @ columns, np.eye(3), rtol=0.0, atol=tol))


def corner_displacement(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance in mm between where two affines put the corner voxels of a grid.

    Because the map is affine, the largest displacement over the whole grid is reached at a corner.

    Args:
        a: ``(4, 4)`` affine.
        b: ``(4, 4)`` affine.
        shape: the grid's spatial shape ``(I, J, K)``.

    Returns:
        The maximum over the 8 corner voxel centres of ``|a @ v - b @ v|`` in mm.
    """
    extent = [max(int(n) - 1, 0) for n in shape[:3]]
    corners = np.array(np.meshgrid(*[[0, e] for e in extent], indexing="ij")).reshape(3, -1)
    homogeneous = np.vstack([corners, np.ones(corners.shape[1])])
    delta = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) @ homogeneous
    return float(np.max(np.linalg.norm(delta[:3], axis=0)))
