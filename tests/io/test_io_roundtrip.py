"""load_volume -> save_like -> load_volume keeps geometry, header codes and voxel values exactly."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
from io_test_affines import axis_affine, oblique_affine

from medseg.io import Geometry, load_volume, save_like

SHAPE = (7, 6, 5)

CASES = {
    "int16-big-endian-LAS": (">i2", axis_affine("LAS"), 1),
    "float32-big-endian-RAS": (">f4", axis_affine("RAS"), 1),
    "int16-LPS": ("<i2", axis_affine("LPS"), 1),
    "float32-oblique": ("<f4", oblique_affine(), 1),
    "float32-big-endian-oblique-nifti2": (">f4", oblique_affine(), 2),
    "int16-LPS-nifti2": ("<i2", axis_affine("LPS"), 2),
}


def _data(dtype: str, rng: np.random.Generator) -> np.ndarray:
    if np.dtype(dtype).kind == "i":
        return rng.integers(-1000, 1000, size=SHAPE).astype(dtype)
    return rng.normal(size=SHAPE).astype(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_keeps_geometry_codes_and_values(name, tmp_path, write_nifti, rng):
    dtype, affine, version = CASES[name]
    data = _data(dtype, rng)
    source = write_nifti(tmp_path / "in.nii.gz", data, affine, version=version, qform_code=1, sform_code=2)
    if np.dtype(dtype).byteorder == ">":
        with gzip.open(source, "rb") as handle:  # the file really is big-endian: sizeof_hdr stored as >i4
            assert struct.unpack(">i", handle.read(4))[0] == (348 if version == 1 else 540)

    volume = load_volume(source)
    assert volume.array.dtype == np.dtype(dtype).newbyteorder("=")
    assert volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)
    assert volume.geometry.source_format == f"nifti{version}"

    kind = "image"
    out = save_like(volume.array, volume.geometry, tmp_path / "out.nii.gz", kind=kind)
    again = load_volume(out)
    assert again.geometry.shape == SHAPE
    np.testing.assert_allclose(again.geometry.affine, volume.geometry.affine, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(again.array, data)
    assert (again.geometry.qform_code, again.geometry.sform_code) == (1, 2)
    np.testing.assert_allclose(again.geometry.qform, volume.geometry.qform, rtol=0, atol=1e-6)
    np.testing.assert_allclose(again.geometry.sform, volume.geometry.sform, rtol=0, atol=1e-6)
    assert again.geometry.dtype == volume.geometry.dtype
    written = nib.load(out)
    assert written.header.sizeof_hdr == (348 if version == 1 else 540)
    assert written.header.get_slope_inter() == (None, None) or written.header.get_slope_inter() == (1.0, 0.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_label_round_trip_is_uint8_with_reference_geometry(name, tmp_path, write_nifti, rng):
    dtype, affine, version = CASES[name]
    source = write_nifti(tmp_path / "img.nii", _data(dtype, rng), affine, version=version)
    reference = load_volume(source).geometry
    labels = rng.integers(0, 4, size=SHAPE)  # int64 in memory
    out = save_like(labels, reference, tmp_path / "seg.nii.gz")
    loaded = load_volume(out)
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, labels)
    assert loaded.geometry.matches(reference, atol=1e-6)
    assert loaded.geometry.source_format == reference.source_format


def test_scaled_int16_is_loaded_scaled_and_records_disk_dtype(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    image = nib.Nifti1Image(data, axis_affine("RAS"))
    image.header.set_data_dtype(np.int16)
    image.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    volume = load_volume(path)
    assert volume.geometry.dtype == "int16"
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, data * 0.5 - 10.0)


def test_labels_above_255_are_written_uint16(tmp_path):
    reference = Geometry.from_affine(axis_affine("RAS"), SHAPE)
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[0, 0, 0] = 300
    out = save_like(labels, reference, tmp_path / "big.nii")
    assert load_volume(out).array.dtype == np.uint16
    assert load_volume(out).array[0, 0, 0] == 300


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint8", "int32"])
def test_image_dtypes_are_kept(tmp_path, dtype, rng):
    reference = Geometry.from_affine(oblique_affine(), SHAPE)
    data = (rng.normal(size=SHAPE) * 50).astype(dtype)
    out = save_like(data, reference, tmp_path / "img.nii.gz", kind="image")
    loaded = load_volume(out)
    assert loaded.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded.array, data)


def test_from_affine_geometry_is_written_with_scanner_codes(tmp_path):
    affine = oblique_affine()
    reference = Geometry.from_affine(affine, SHAPE)
    out = save_like(np.zeros(SHAPE, np.uint8), reference, tmp_path / "new.nii")
    header = nib.load(out).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(load_volume(out).geometry.affine, affine, atol=1e-5)


def test_sheared_affine_is_written_as_sform_only(tmp_path):
    affine = axis_affine("RAS")
    affine[0, 2] = 0.4  # a gantry-tilt-like shear
    reference = Geometry.from_affine(affine, SHAPE)
    assert reference.qform_code == 0
    out = save_like(np.ones(SHAPE, np.uint8), reference, tmp_path / "sheared.nii")
    loaded = load_volume(out).geometry
    assert (loaded.qform_code, loaded.sform_code) == (0, 1)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-6)


def test_channel_first_image_is_written_4d_and_read_back_as_channels(tmp_path, rng):
    reference = Geometry.from_affine(axis_affine("LPS"), SHAPE)
    data = rng.normal(size=(3, *SHAPE)).astype(np.float32)
    out = save_like(data, reference, tmp_path / "probs.nii.gz", kind="image")
    assert nib.load(out).shape == (*SHAPE, 3)
    loaded = load_volume(out, channels=True)
    np.testing.assert_array_equal(loaded.array, data)
    assert loaded.channels == 3


@pytest.mark.parametrize(("qform_code", "sform_code"), [(1, 0), (0, 2), (0, 0), (2, 4)])
def test_header_codes_and_transforms_survive_save_like(tmp_path, write_nifti, qform_code, sform_code):
    affine = oblique_affine()
    source = write_nifti(tmp_path / "in.nii", np.zeros(SHAPE, np.float32), affine, qform_code=qform_code,
                         sform_code=sform_code)
    reference = load_volume(source).geometry
    expected = nib.load(source).affine  # nibabel's choice: sform, else qform, else zooms
    np.testing.assert_allclose(reference.affine, expected, rtol=0, atol=1e-9)
    out = save_like(np.ones(SHAPE, np.uint8), reference, tmp_path / "out.nii")
    written = load_volume(out).geometry
    assert (written.qform_code, written.sform_code) == (qform_code, sform_code)
    np.testing.assert_allclose(written.affine, reference.affine, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nib.load(out).affine, expected, rtol=0, atol=1e-6)


def test_qform_rounding_near_180_degrees_is_not_a_disagreement(tmp_path, write_nifti):
    """A float32 quaternion cannot hold a rotation close to 180 degrees exactly; that alone must not refuse."""
    from scipy.spatial.transform import Rotation

    from medseg.io.geometry import corner_displacement

    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_rotvec(axis * (np.pi - 2e-4)).as_matrix() @ np.diag([0.9, 1.1, 4.0])
    affine[:3, 3] = [120.0, -80.0, 60.0]
    shape = (300, 280, 60)
    source = write_nifti(tmp_path / "flip.nii", np.zeros(shape, np.uint8), affine)
    header = nib.load(source).header
    assert corner_displacement(header.get_qform(), header.get_sform(), shape) > 1e-2  # rounding, not a bug
    reference = load_volume(source).geometry
    np.testing.assert_allclose(reference.affine, affine, atol=1e-4)
    written = load_volume(save_like(np.zeros(shape, np.uint8), reference, tmp_path / "out.nii")).geometry
    np.testing.assert_allclose(written.affine, reference.affine, rtol=0, atol=1e-6)
