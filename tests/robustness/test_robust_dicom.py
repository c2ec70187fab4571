"""Irregular DICOM series (missing slice, duplicated position, two series in one folder, gantry tilt) are
refused by the commands unless the user opts in (``medseg info --allow-irregular`` / ``--series-uid``);
``medseg segment`` has no opt-in and refuses them, alone or inside a folder run.

The reader's own behaviour (messages, sheared affine of a tilt) is tested in tests/io/test_io_dicom.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import ct_phantom, only_files

from medseg.io import Geometry, read_geometry
from medseg.io.dicom_write import write_dicom_series

SHAPE = (20, 20, 8)
UID_A, UID_B = "1.2.826.0.1.3680043.2.1125.71", "1.2.826.0.1.3680043.2.1125.72"


def _affine(tilt_mm: float = 0.0) -> np.ndarray:
    affine = np.diag([-1.2, -1.2, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    affine[1, 2] = tilt_mm  # each slice shifts along y: a gantry tilt
    return affine


def _series(folder: Path, seed: int = 0, tilt_mm: float = 0.0, uid: str | None = None) -> Path:
    geometry = Geometry.from_affine(_affine(tilt_mm), SHAPE, "int16")
    return write_dicom_series(ct_phantom(SHAPE, seed), geometry, folder, series_uid=uid)


def _missing_slice(root: Path) -> Path:
    folder = _series(root / "series")
    (folder / "slice_0003.dcm").unlink()
    return folder


def _duplicated_position(root: Path) -> Path:
    folder = _series(root / "series", uid=UID_A)
    other = _series(root / "other", seed=1, uid=UID_A)
    shutil.copy(other / "slice_0004.dcm", folder / "second_echo.dcm")
    return folder


def _two_series(root: Path) -> Path:
    mixed = root / "series"
    mixed.mkdir()
    for name, uid, seed in (("a", UID_A, 0), ("b", UID_B, 1)):
        for file in _series(root / name, seed=seed, uid=uid).iterdir():
            shutil.copy(file, mixed / f"{name}_{file.name}")
    return mixed


def _gantry_tilt(root: Path) -> Path:
    return _series(root / "series", tilt_mm=0.8)


IRREGULAR = {
    "missing-slice": (_missing_slice, "non-uniform slice spacing", ["--allow-irregular"]),
    "duplicated-position": (_duplicated_position, r"duplicated slice position", None),  # never accepted
    "two-series": (_two_series, "2 DICOM series in one folder", ["--series-uid", UID_B]),
    "gantry-tilt": (_gantry_tilt, "gantry tilt", ["--allow-irregular"]),
}


@pytest.mark.parametrize("problem", sorted(IRREGULAR))
def test_info_refuses_irregular_series_unless_the_user_opts_in(problem, cli, tmp_path):
    make, message, opt_in = IRREGULAR[problem]
    folder = make(tmp_path)
    code, _, err = cli("info", folder, "--json")
    assert code == 2
    assert message in err and str(folder) in err and err.count("\n") == 1
    if opt_in is None:
        assert cli("info", folder, "--json", "--allow-irregular")[0] == 2
        return
    with pytest.warns(RuntimeWarning) if "--allow-irregular" in opt_in else contextlib.nullcontext():
        code, out, err = cli("info", folder, "--json", *opt_in)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["shape"][:2] == list(SHAPE[:2])
    if problem == "two-series":
        assert summary["series_uid"] == UID_B and summary["shape"] == list(SHAPE)


@pytest.mark.parametrize("problem", sorted(IRREGULAR))
def test_segment_refuses_irregular_series_and_writes_nothing(problem, ct_model, cli, tmp_path):
    make, message, _ = IRREGULAR[problem]
    folder = make(tmp_path)
    code, _, err = cli("segment", folder, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert message in err
    assert only_files(tmp_path / "out") == []


def test_a_regular_series_beside_an_irregular_one_is_segmented_on_its_own_grid(ct_model, cli, tmp_path):
    inputs = tmp_path / "in"
    good = _series(inputs / "good")
    tilted = _gantry_tilt(tmp_path / "tilt_src")
    shutil.move(str(tilted), str(inputs / "tilted"))
    code, _, err = cli("segment", inputs, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 1
    assert "tilted: FAILED: " in err and "gantry tilt" in err
    assert only_files(tmp_path / "out") == ["good.nii.gz"]
    written = read_geometry(tmp_path / "out" / "good.nii.gz")
    assert written.shape == SHAPE
    np.testing.assert_allclose(written.affine, read_geometry(good).affine, atol=1e-4)
