"""DICOM series: same array and affine as the same data in NIfTI; irregular series refused clearly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from io_test_affines import axis_affine, oblique_affine

from medseg.errors import InputError
from medseg.io import Geometry, load_volume, read_geometry, save_like
from medseg.io.dicom_write import write_dicom_series

SHAPE = (7, 6, 5)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE).astype(np.int16)


@pytest.mark.parametrize(
    "affine", [oblique_affine(), axis_affine("LPS"), axis_affine("RAS")], ids=["oblique", "LPS", "RAS"]
)
def test_dicom_series_and_nifti_load_identically(tmp_path, affine):
    data = _data()
    geometry = Geometry.from_affine(affine, SHAPE, "int16")
    nifti = save_like(data, geometry, tmp_path / "ct.nii.gz", kind="image")
    folder = write_dicom_series(data, geometry, tmp_path / "ct_dicom")

    from_nifti, from_dicom = load_volume(nifti), load_volume(folder)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.geometry.affine, from_nifti.geometry.affine, rtol=0, atol=1e-4)
    assert from_dicom.geometry.shape == SHAPE
    assert from_dicom.geometry.source_format == "dicom"
    assert from_dicom.geometry.dtype == "int16"
    assert read_geometry(folder).matches(from_dicom.geometry)


def test_dicom_conversion_agrees_with_simpleitk_itself(tmp_path):
    """Independent of medseg's writer: SimpleITK's own reading, converted by hand, gives medseg's answer."""
    data = _data(1)
    folder = write_dicom_series(data, Geometry.from_affine(oblique_affine(), SHAPE, "int16"), tmp_path / "s")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    volume = load_volume(folder)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    for index in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (6, 5, 4)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = volume.geometry.affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1.0, -1.0, 1.0], atol=1e-4)


def test_slice_position_tags_hold_the_lps_position(tmp_path):
    affine = oblique_affine()
    folder = write_dicom_series(_data(), Geometry.from_affine(affine, SHAPE, "int16"), tmp_path / "s")
    info = sitk.ImageFileReader()
    info.SetFileName(str(folder / "slice_0003.dcm"))
    info.ReadImageInformation()
    position = [float(v) for v in info.GetMetaData("0020|0032").split("\\")]
    np.testing.assert_allclose(position, (LPS_TO_RAS @ affine @ [0, 0, 3, 1])[:3], atol=1e-5)


def test_two_series_in_one_folder_are_refused_listing_uids_and_one_can_be_picked(tmp_path):
    geometry = Geometry.from_affine(axis_affine("LPS"), SHAPE, "int16")
    a = write_dicom_series(_data(0), geometry, tmp_path / "a", series_uid="1.2.826.0.1.3680043.2.1125.1")
    b = write_dicom_series(_data(1), geometry, tmp_path / "b", series_uid="1.2.826.0.1.3680043.2.1125.2")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder in (a, b):
        for file in folder.iterdir():
            shutil.copy(file, mixed / f"{folder.name}_{file.name}")
    with pytest.raises(InputError) as raised:
        load_volume(mixed)
    message = str(raised.value)
    assert "mixed: 2 DICOM series in one folder" in message
    assert "1.2.826.0.1.3680043.2.1125.1" in message and "1.2.826.0.1.3680043.2.1125.2" in message
    picked = load_volume(mixed, series_uid="1.2.826.0.1.3680043.2.1125.2")
    np.testing.assert_array_equal(picked.array, _data(1))
    with pytest.raises(InputError, match="no DICOM series with UID '9.9'"):
        load_volume(mixed, series_uid="9.9")


def test_missing_slice_is_refused_as_non_uniform_spacing(tmp_path):
    folder = write_dicom_series(_data(), Geometry.from_affine(oblique_affine(), SHAPE, "int16"), tmp_path / "s")
    (folder / "slice_0002.dcm").unlink()
    with pytest.raises(InputError, match=r"s: non-uniform slice spacing .*a slice may be missing between slice_0001"):
        load_volume(folder)
    with pytest.warns(RuntimeWarning, match="non-uniform"):
        assert load_volume(folder, allow_irregular=True).array.shape == (7, 6, 4)


def test_duplicated_slice_positions_are_refused(tmp_path):
    geometry = Geometry.from_affine(axis_affine("RAS"), SHAPE, "int16")
    folder = write_dicom_series(_data(0), geometry, tmp_path / "s", series_uid="1.2.3.4")
    other = write_dicom_series(_data(1), geometry, tmp_path / "t", series_uid="1.2.3.4")
    shutil.copy(other / "slice_0002.dcm", folder / "echo2.dcm")
    with pytest.raises(InputError, match=r"1 duplicated slice position\(s\)"):
        load_volume(folder, allow_irregular=True)


def test_gantry_tilt_is_refused_unless_allowed_then_read_with_the_sheared_affine(tmp_path):
    tilted = axis_affine("LPS")
    tilted[1, 2] = 0.8  # each slice shifts 0.8 mm along y: a 15-degree tilt for 3 mm slices
    data = _data()
    folder = write_dicom_series(data, Geometry.from_affine(tilted, SHAPE, "int16"), tmp_path / "tilt")
    with pytest.raises(InputError, match=r"tilt: gantry tilt: slices advance 14.9 degrees .*allow_irregular=True"):
        load_volume(folder)
    with pytest.warns(RuntimeWarning, match="gantry tilt"):
        volume = load_volume(folder, allow_irregular=True)
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.geometry.affine, tilted, atol=1e-4)


def test_single_slice_is_refused_as_2d(tmp_path):
    geometry = Geometry.from_affine(axis_affine("RAS"), (7, 6, 1), "int16")
    folder = write_dicom_series(np.zeros((7, 6, 1), np.int16), geometry, tmp_path / "one")
    with pytest.raises(InputError, match="one: the series .* has a single 2D slice"):
        load_volume(folder)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no DICOM series found in this folder"):
        load_volume(tmp_path)
