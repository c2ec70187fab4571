"""Helpers for medseg.io tests: small NIfTI files written directly with nibabel (independently of save_like)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def write_nifti():
    """Write an array with nibabel: ``write_nifti(path, array, affine, version=1, qform_code=1, sform_code=1)``."""

    def write(path: Path, array: np.ndarray, affine: np.ndarray, *, version: int = 1, qform_code: int = 1,
              sform_code: int = 1, qform: np.ndarray | None = None) -> Path:
        import nibabel as nib

        image_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
        header_class = nib.Nifti1Header if version == 1 else nib.Nifti2Header
        # A big-endian array gets a big-endian header, so the whole file is big-endian.
        header = header_class(endianness=">" if array.dtype.byteorder == ">" else "<")
        header.set_data_dtype(array.dtype)
        image = image_class(array, affine, header=header)
        image.set_qform(affine if qform is None else qform, code=qform_code)
        image.set_sform(affine, code=sform_code)
        image.to_filename(str(path))
        return Path(path)

    return write
