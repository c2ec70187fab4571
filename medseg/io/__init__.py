"""Volume input/output that keeps geometry exactly.

Arrays are ``(i, j, k)`` as stored in NIfTI (channel-first ``(C, i, j, k)`` with channels) and
``Geometry.affine`` maps voxel indices to RAS+ millimetres; DICOM series are converted to this convention on
load. TransUNet's HDF5 test volumes (``.npy.h5``) load too, with an identity geometry. Every write is
atomic. See docs/io.md.
"""

from medseg.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from medseg.io.geometry import Geometry
from medseg.io.limits import DEFAULT_MAX_VOXELS
from medseg.io.nifti import QFORM_SFORM_TOLERANCE_MM
from medseg.io.transunet_h5 import is_transunet_h5_path, transunet_geometry, transunet_h5_stem
from medseg.io.volume import (
    CASE_AFFINE_ATOL,
    NONFINITE_POLICIES,
    Volume,
    load_case,
    load_volume,
    read_geometry,
    save_like,
)

__all__ = [
    "CASE_AFFINE_ATOL",
    "DEFAULT_MAX_VOXELS",
    "NONFINITE_POLICIES",
    "QFORM_SFORM_TOLERANCE_MM",
    "Geometry",
    "Volume",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_transunet_h5_path",
    "load_case",
    "load_volume",
    "read_geometry",
    "save_like",
    "transunet_geometry",
    "transunet_h5_stem",
]
