"""``medseg check`` prints every problem as ``case_id: message`` and exits 0 (clean) or 2 (problems)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import main
from medseg.io import Geometry, load_volume, save_like
from medseg.synth import write_brats


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_check") / "brats"
    write_brats(root, 3, shape=(16, 16, 12), seed=2)
    return root


def test_check_clean_dataset_exits_zero(brats: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(brats)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 3 case(s) in the brats2021 layout")


def test_check_lists_each_broken_case_and_exits_two(
    brats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(brats, root)
    (root / "BraTS2021_00000/BraTS2021_00000_t2.nii.gz").unlink()
    seg_path = root / "BraTS2021_00001/BraTS2021_00001_seg.nii.gz"
    seg = load_volume(seg_path)
    labels = seg.array.copy()
    labels[-1, -1, -1] = 3
    save_like(labels, seg.geometry, seg_path)
    t1_path = root / "BraTS2021_00002/BraTS2021_00002_t1.nii.gz"
    t1 = load_volume(t1_path)
    tilted = t1.geometry.affine.copy()
    tilted[2, 3] -= 2.0
    save_like(t1.array, Geometry.from_affine(tilted, t1.geometry.shape, "int16"), t1_path, kind="image")

    assert main(["check", str(root)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("BraTS2021_00000: missing t2 image")
    assert lines[1].startswith("BraTS2021_00001: label BraTS2021_00001_seg.nii.gz has value(s) [3]")
    # The shifted file is named, not the four that still agree with each other.
    assert lines[2].startswith("BraTS2021_00002: t1 image BraTS2021_00002_t1.nii.gz is not on the grid of")
    assert "origin" in lines[2]
    assert lines[3].startswith("FAILED: 3 problem(s) in 3 case(s)")


def test_check_unknown_layout_name_and_missing_folder_exit_two(
    brats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(brats), "--layout", "brats2022"]) == 2
    assert "brats2021" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err


def test_check_against_the_wrong_layout_reports_problems(brats: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(brats), "--layout", "brats2023"]) == 2
    assert "does not follow the brats2023 layout" in capsys.readouterr().out
