"""``medseg synth`` writes the official layouts and refuses bad requests with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import main
from medseg.data import detect, index


@pytest.mark.parametrize(
    ("args", "layout", "n_cases"),
    [
        (["brats", "--cases", "2", "--year", "2021"], "brats2021", 2),
        (["brats", "--cases", "2", "--year", "2023"], "brats2023", 2),
        (["synapse", "--cases", "2"], "synapse", 2),
        (["synapse", "--cases", "2", "--format", "transunet"], "transunet", 1),
    ],
)
def test_synth_writes_a_dataset_that_detects_and_indexes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], layout: str, n_cases: int
) -> None:
    out = tmp_path / "ds"
    assert main(["synth", args[0], str(out), *args[1:], "--shape", "16", "16", "12", "--seed", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert detect(out).name == layout
    groups = {c.get("group", c["case_id"]) for c in index(out)}
    assert len(groups) == n_cases


def test_synth_same_seed_same_bytes_of_data(tmp_path: Path) -> None:
    import numpy as np

    for name in ("a", "b"):
        assert main(["synth", "synapse", str(tmp_path / name), "--cases", "1", "--shape", "16", "16", "8"]) == 0
    from medseg.io import load_volume

    image = "RawData/Training/img/img0001.nii.gz"
    np.testing.assert_array_equal(load_volume(tmp_path / "a" / image).array, load_volume(tmp_path / "b" / image).array)


def test_synth_refuses_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("x")
    assert main(["synth", "brats", str(tmp_path), "--cases", "1", "--shape", "16", "16", "12"]) == 2
    err = capsys.readouterr().err
    assert "medseg synth: error:" in err and "not empty" in err


def test_synth_refuses_bad_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "synapse", str(tmp_path / "t"), "--cases", "1", "--format", "transunet"]) == 2
    assert "--cases must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
