"""``medseg info``: prints the fields for NIfTI and DICOM; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medseg.cli import main
from medseg.io import Geometry, save_like
from medseg.io.dicom_write import write_dicom_series

SHAPE = (7, 6, 5)


def _lps_affine() -> np.ndarray:
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = [12.0, 30.0, -40.0]
    return affine


@pytest.fixture
def nifti(tmp_path):
    data = np.linspace(-3.0, 5.0, num=int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    return save_like(data, Geometry.from_affine(_lps_affine(), SHAPE), tmp_path / "scan.nii.gz", kind="image")


def test_info_prints_every_field_for_nifti(nifti, capsys):
    assert main(["info", str(nifti)]) == 0
    out = capsys.readouterr().out
    for line in [
        "format:      nifti1",
        "shape:       7 x 6 x 5",
        "channels:    1",
        "spacing:     0.8 x 0.9 x 2.5 mm",
        "orientation: LPS",
        "dtype:       float32",
        "range:       -3.0 .. 5.0 (finite voxels)",
        "non-finite:  0",
        "qform_code:  1",
        "sform_code:  1",
    ]:
        assert line in out


def test_info_json_for_dicom_and_output_file(tmp_path, capsys):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 100
    folder = write_dicom_series(data, Geometry.from_affine(_lps_affine(), SHAPE, "int16"), tmp_path / "series")
    report = tmp_path / "reports" / "info.json"
    assert main(["info", str(folder), "--json", "--output", str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report.read_text())
    assert printed["format"] == "dicom"
    assert printed["shape"] == [7, 6, 5]
    assert printed["orientation"] == "LPS"
    assert printed["spacing"] == pytest.approx([0.8, 0.9, 2.5])
    assert (printed["min"], printed["max"], printed["nonfinite"]) == (-100, 109, 0)
    assert printed["dtype"] == "int16" and printed["channels"] == 1
    assert printed["series_uid"].startswith("2.25.")
    np.testing.assert_allclose(printed["affine"], _lps_affine(), atol=1e-4)


def test_info_reports_channels_of_a_4d_file(tmp_path, capsys):
    data = np.zeros((3, *SHAPE), np.float32)
    path = save_like(data, Geometry.from_affine(_lps_affine(), SHAPE), tmp_path / "multi.nii.gz", kind="image")
    assert main(["info", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["channels"], printed["shape"]) == (3, [7, 6, 5])


def test_info_counts_nonfinite_voxels_instead_of_refusing(tmp_path, capsys):
    data = np.ones(SHAPE, np.float32)
    path = save_like(data, Geometry.from_affine(_lps_affine(), SHAPE), tmp_path / "x.nii", kind="image")
    import nibabel as nib

    image = nib.load(path)
    broken = np.asarray(image.dataobj).copy()
    broken[0, 0, :2] = np.nan
    nib.save(nib.Nifti1Image(broken, image.affine, image.header), path)
    assert main(["info", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["nonfinite"], printed["min"], printed["max"]) == (2, 1.0, 1.0)


def test_info_on_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not gzip at all")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["info", str(bad), "--output", str(out_dir / "info.json")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("medseg info: error: ") and "broken.nii.gz: not gzip data" in lines[0]
    assert "Traceback" not in captured.err
    assert list(out_dir.iterdir()) == []


def test_python_m_medseg_info_from_another_directory(nifti, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok = subprocess.run(
        [sys.executable, "-m", "medseg", "info", str(nifti), "--json"],
        cwd=elsewhere, capture_output=True, encoding="utf-8", errors="replace", timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["orientation"] == "LPS"
    missing = subprocess.run(
        [sys.executable, "-m", "medseg", "info", "no_such_file.nii.gz"],
        cwd=elsewhere, capture_output=True, encoding="utf-8", errors="replace", timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == "medseg info: error: no_such_file.nii.gz: file not found"
