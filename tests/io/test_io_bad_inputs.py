"""Every bad input is refused with one line naming the file and the problem, and nothing is written."""

from __future__ import annotations

import gzip
import re
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_test_affines import axis_affine

from medseg.errors import GeometryError, InputError
from medseg.io import Geometry, load_case, load_volume, save_like

SHAPE = (7, 6, 5)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _convert(source: Path, out: Path, **kwargs) -> None:
    volume = load_volume(source, **kwargs)
    save_like(volume.array, volume.geometry, out / "converted.nii.gz", kind="image")


def _assert_refused(source: Path, out: Path, error: type, problem: str, **kwargs) -> str:
    with pytest.raises(error) as raised:
        _convert(source, out, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    assert source.name in message
    assert re.search(problem, message), message
    assert list(out.iterdir()) == []
    return message


def _random_image(tmp_path: Path, write_nifti, name: str = "img.nii.gz", shape=SHAPE) -> Path:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return write_nifti(tmp_path / name, data, axis_affine("RAS"))


def test_missing_file_is_refused(tmp_path, out):
    _assert_refused(tmp_path / "missing.nii.gz", out, InputError, "file not found")


def test_truncated_gzip_is_refused(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti)
    raw = source.read_bytes()
    source.write_bytes(raw[: len(raw) // 2])
    _assert_refused(source, out, InputError, "truncated or corrupt")


def test_truncated_plain_nifti_is_refused(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti, "img.nii")
    raw = source.read_bytes()
    source.write_bytes(raw[:-100])
    _assert_refused(source, out, InputError, r"truncated.*declares 1192 bytes.*only 1092 bytes")


def test_corrupt_gzip_bytes_are_refused(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti)
    raw = bytearray(source.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 8] = bytes(255 - b for b in raw[middle : middle + 8])  # trailer (CRC, size) intact
    source.write_bytes(bytes(raw))
    _assert_refused(source, out, InputError, "corrupt")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("notes.nii", b"just some text, certainly not an image " * 20, "not a NIfTI image"),
        ("notes.nii.gz", b"plain bytes that are not gzip " * 20, "not gzip data"),
        ("notes.nii.gz", gzip.compress(b"gzip of text, not an image " * 30), "not a NIfTI image"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(100), r"not a supported image.*\.nii or \.nii\.gz"),
    ],
)
def test_file_that_is_not_an_image_is_refused(tmp_path, out, name, content, problem):
    source = tmp_path / name
    source.write_bytes(content)
    _assert_refused(source, out, InputError, problem)


def test_gzip_data_named_nii_is_refused_with_a_rename_hint(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti)
    renamed = source.rename(tmp_path / "img.nii")
    _assert_refused(renamed, out, InputError, "rename it to .nii.gz")


def _bomb_header(shape: tuple[int, ...]) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4 + b"\x00" * 64


@pytest.mark.parametrize("compressed", [False, True])
def test_header_bomb_is_refused_quickly_with_bounded_memory(tmp_path, out, compressed):
    payload = _bomb_header((32767, 32767, 32767))
    source = tmp_path / ("bomb.nii.gz" if compressed else "bomb.nii")
    source.write_bytes(gzip.compress(payload) if compressed else payload)
    assert source.stat().st_size < 600
    tracemalloc.start()
    started = time.perf_counter()
    try:
        _assert_refused(source, out, InputError, r"32767, 32767, 32767.*more than the limit.*max_voxels")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 20 * 2**20


@pytest.mark.parametrize("compressed", [False, True])
def test_header_declaring_more_than_the_file_holds_is_refused_before_reading(tmp_path, out, compressed):
    payload = _bomb_header((1000, 1000, 1000))  # under the voxel cap, 4 GB of float32 declared
    source = tmp_path / ("big.nii.gz" if compressed else "big.nii")
    source.write_bytes(gzip.compress(payload) if compressed else payload)
    tracemalloc.start()
    try:
        _assert_refused(source, out, InputError, r"truncated or corrupt.*declares 4000000352 bytes")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_voxel_cap_is_configurable(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti)
    _assert_refused(source, out, InputError, r"210 voxels, more than the limit of 100", max_voxels=100)


def test_2d_image_is_refused(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti, shape=(7, 6))
    _assert_refused(source, out, InputError, r"2D image of shape \(7, 6\); a 3D volume")


def test_5d_image_is_refused(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti, shape=(7, 6, 5, 2, 3))
    _assert_refused(source, out, InputError, r"5D image of shape \(7, 6, 5, 2, 3\)", channels=True)


def test_4d_image_without_channels_is_refused_and_loads_with_channels(tmp_path, out, write_nifti):
    source = _random_image(tmp_path, write_nifti, shape=(7, 6, 5, 3))
    _assert_refused(source, out, InputError, r"4D image.*3 volumes.*channels=True")
    volume = load_volume(source, channels=True)
    assert volume.array.shape == (3, 7, 6, 5)
    np.testing.assert_array_equal(volume.array[1], nib.load(source).get_fdata()[..., 1])


@pytest.mark.parametrize("shape", [(7, 6, 5, 1), (7, 6, 5, 1, 1)])
def test_trailing_singleton_dimensions_are_squeezed(tmp_path, write_nifti, shape):
    source = _random_image(tmp_path, write_nifti, shape=shape)
    assert load_volume(source).array.shape == SHAPE
    assert load_volume(source, channels=True).array.shape == (1, *SHAPE)


def _with_nonfinite(tmp_path: Path, write_nifti) -> Path:
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    data[0, 0, 0] = np.nan
    data[1, 0, 0] = np.inf
    data[2, 0, 0] = -np.inf
    return write_nifti(tmp_path / "nan.nii.gz", data, axis_affine("RAS"))


def test_nonfinite_voxels_are_rejected_by_default(tmp_path, out, write_nifti):
    source = _with_nonfinite(tmp_path, write_nifti)
    _assert_refused(source, out, InputError, r"3 non-finite voxel\(s\) \(1 NaN, 2 infinite\)")


def test_nonfinite_voxels_are_replaced_on_request_with_a_warning(tmp_path, write_nifti):
    source = _with_nonfinite(tmp_path, write_nifti)
    with pytest.warns(RuntimeWarning, match="replaced 3 non-finite"):
        volume = load_volume(source, nonfinite="replace")
    assert np.all(np.isfinite(volume.array))
    finite_max = float(np.prod(SHAPE) - 1)
    assert volume.array[0, 0, 0] == 0.0
    assert volume.array[1, 0, 0] == finite_max
    assert volume.array[2, 0, 0] == 1.0  # the smallest finite value: voxel (0, 0, 1); the NaN voxel does not count


def test_load_case_with_different_shapes_names_both_files(tmp_path, write_nifti):
    first = _random_image(tmp_path, write_nifti, "t1.nii.gz")
    second = _random_image(tmp_path, write_nifti, "flair.nii.gz", shape=(7, 6, 4))
    with pytest.raises(GeometryError) as raised:
        load_case([first, second], names=["t1", "flair"])
    message = str(raised.value)
    assert "t1.nii.gz" in message and "flair.nii.gz" in message
    assert "shape (7, 6, 5) vs (7, 6, 4)" in message


def test_load_case_with_different_affines_names_both_files(tmp_path, write_nifti):
    data = np.zeros(SHAPE, np.float32)
    first = write_nifti(tmp_path / "t1.nii.gz", data, axis_affine("RAS"))
    shifted = axis_affine("RAS")
    shifted[0, 3] += 0.5
    second = write_nifti(tmp_path / "t2.nii.gz", data, shifted)
    with pytest.raises(GeometryError) as raised:
        load_case([first, second])
    message = str(raised.value)
    assert "t1.nii.gz" in message and "t2.nii.gz" in message
    assert "origin (10, -20, 30.5) vs (10.5, -20, 30.5) mm" in message


@pytest.mark.parametrize(("change", "shift"), [("shift", r"2 mm"), ("rotation", r"0\.\d+ mm")])
def test_disagreeing_qform_and_sform_are_refused_naming_both(tmp_path, out, write_nifti, change, shift):
    qform = axis_affine("RAS")
    if change == "shift":
        qform[1, 3] += 2.0
    else:  # one degree about z
        angle = np.deg2rad(1.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        qform[:3, :3] = rotation @ qform[:3, :3]
    source = write_nifti(tmp_path / "xform.nii.gz", np.zeros(SHAPE, np.float32), axis_affine("RAS"), qform=qform)
    problem = rf"qform \(code 1\) and sform \(code 1\) disagree by up to {shift}"
    message = _assert_refused(source, out, GeometryError, problem)
    assert "qform=[[" in message and "sform=[[" in message


def test_agreeing_qform_and_sform_load(tmp_path, write_nifti):
    source = write_nifti(tmp_path / "ok.nii.gz", np.zeros(SHAPE, np.float32), axis_affine("LPS"))
    assert load_volume(source).geometry.orientation == "LPS"


def test_save_like_with_a_different_shape_writes_nothing(tmp_path, out):
    reference = Geometry.from_affine(axis_affine("RAS"), SHAPE)
    with pytest.raises(GeometryError, match=r"seg.nii.gz: array shape \(7, 6, 4\) does not match .*\(7, 6, 5\)"):
        save_like(np.zeros((7, 6, 4), np.uint8), reference, out / "seg.nii.gz")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (np.full(SHAPE, -1, np.int16), r"labels must be in 0\.\.65535, got -1\.\.-1"),
        (np.full(SHAPE, 70000, np.int32), r"labels must be in 0\.\.65535"),
        (np.full(SHAPE, 0.5, np.float32), "fractional values"),
        (np.full(SHAPE, np.nan, np.float32), "non-finite"),
    ],
)
def test_save_like_refuses_invalid_labels_and_writes_nothing(out, labels, problem):
    reference = Geometry.from_affine(axis_affine("RAS"), SHAPE)
    with pytest.raises(InputError, match=problem):
        save_like(labels, reference, out / "seg.nii.gz")
    assert list(out.iterdir()) == []


def test_save_like_refuses_other_suffixes(out):
    reference = Geometry.from_affine(axis_affine("RAS"), SHAPE)
    with pytest.raises(InputError, match=r"seg.nrrd: save_like writes NIfTI"):
        save_like(np.zeros(SHAPE, np.uint8), reference, out / "seg.nrrd")
    assert list(out.iterdir()) == []


def test_save_like_replaces_an_existing_file_only_on_success(out):
    reference = Geometry.from_affine(axis_affine("RAS"), SHAPE)
    target = save_like(np.ones(SHAPE, np.uint8), reference, out / "seg.nii.gz")
    before = target.read_bytes()
    with pytest.raises(GeometryError):
        save_like(np.zeros((7, 6, 4), np.uint8), reference, target)
    assert target.read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["seg.nii.gz"]
