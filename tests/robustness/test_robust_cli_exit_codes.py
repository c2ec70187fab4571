"""Exit codes of the real ``python -m medseg`` process: 0 success, 1 some cases of a folder run failed,
2 usage or input error (one line on stderr, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import ct_phantom, write_nifti


def _medseg(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medseg", *map(str, args)], capture_output=True, encoding="utf-8", errors="replace", cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("robust_exit_codes")
    write_nifti(folder / "in" / "good.nii.gz", ct_phantom((16, 16, 10)), np.diag([1.5, 1.5, 2.5, 1.0]))
    (folder / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 a gzip header and nothing else")
    return folder


@pytest.mark.parametrize(
    ("args", "code", "stderr_has"),
    [
        (["info", "in/good.nii.gz"], 0, None),
        (["info", "in/broken.nii.gz"], 2, "medseg info: error: in/broken.nii.gz: "),
        (["info", "in/missing.nii.gz"], 2, "file not found"),
        (["info"], 2, "usage:"),  # argparse: a required argument is missing
        (["frobnicate"], 2, "invalid choice"),
        ([], 2, "usage:"),
        (["info", "in/good.nii.gz", "--max-voxels", "-3"], 2, "--max-voxels must be positive"),
    ],
    ids=["ok", "damaged-input", "missing-input", "missing-argument", "unknown-command", "no-command", "bad-option"],
)
def test_exit_codes_of_quick_commands(args, code, stderr_has, scans):
    result = _medseg(*args, cwd=scans)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    if stderr_has is not None:
        assert stderr_has in result.stderr
    if code == 2 and "usage:" not in result.stderr:
        assert result.stderr.count("\n") == 1  # a medseg error is one line naming what is wrong


def test_folder_run_with_a_failing_case_exits_1(scans, ct_model, tmp_path):
    args = ("segment", scans / "in", "--model", ct_model, "--output", tmp_path / "a", "--device", "cpu")
    folder_run = _medseg(*args, cwd=tmp_path)
    assert folder_run.returncode == 1, folder_run.stderr
    assert "broken: FAILED: " in folder_run.stderr and "1 case(s) failed: broken" in folder_run.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["good.nii.gz"]
    assert "Traceback" not in folder_run.stderr
