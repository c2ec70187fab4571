"""``medseg convert`` writes an nnU-Net raw dataset and reports bad requests with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.cli import main


def test_convert_writes_the_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "brats", str(tmp_path / "brats"), "--cases", "1", "--shape", "16", "16", "12",
                 "--year", "2023"]) == 0
    assert main(["convert", str(tmp_path / "brats"), "--to", "nnunet", str(tmp_path / "raw"), "--dataset-id", "7",
                 "--name", "Glioma"]) == 0
    folder = tmp_path / "raw" / "Dataset007_Glioma"
    assert f"wrote nnU-Net dataset {folder}" in capsys.readouterr().out
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"BraTS-GLI-00000-000_{c:04d}.nii.gz" for c in range(4)
    ]
    assert (folder / "labelsTr" / "BraTS-GLI-00000-000.nii.gz").is_file()
    content = json.loads((folder / "dataset.json").read_text())
    assert content["channel_names"] == {"0": "T1", "1": "T1C", "2": "T2W", "3": "T2F"}
    assert content["numTraining"] == 1


def test_convert_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "missing"), "--to", "nnunet", str(tmp_path / "raw"),
                 "--dataset-id", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medseg convert: error:") and "not found" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path), "--to", "monai", str(tmp_path / "raw"), "--dataset-id", "1"])
