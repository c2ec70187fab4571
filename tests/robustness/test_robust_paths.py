"""Names from files (case ids, modality files) and options cannot make medseg write outside the folder it was
given: segment, evaluate, synth and convert keep every new file inside their output; leftovers of killed
atomic writes (hidden ``.<name>.<random>.tmp.nii.gz``) are ignored by every folder scan.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import ct_phantom, only_files, write_nifti

from medseg.errors import ConfigError, InputError

AFFINE = np.diag([1.5, 1.5, 2.5, 1.0])
SHAPE = (16, 16, 10)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _scan(path: Path, seed: int = 0) -> Path:
    return write_nifti(path, ct_phantom(SHAPE, seed), AFFINE)


@pytest.mark.parametrize("case_id", ["../evil", "/tmp/evil", "sub/../../evil", "..", ""])
def test_output_path_refuses_ids_that_leave_the_output_folder(case_id, tmp_path):
    from medseg.pipelines.segment import output_path

    with pytest.raises(InputError):
        output_path(tmp_path / "out", case_id, ".nii.gz")


@pytest.mark.parametrize("name", ["..evil.nii.gz", "a..b.nii.gz", "-rf.nii.gz", "spaced name.nii.gz"])
def test_segment_refuses_file_names_that_are_not_safe_case_ids(name, ct_model, cli, tmp_path):
    source = _scan(tmp_path / "in" / name)
    before = _tree(tmp_path)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert "cannot be used as an output file name" in err
    assert _tree(tmp_path) - before <= {"out"}  # at most the (empty) output folder appeared
    assert only_files(tmp_path / "out") == []


def test_segment_replaces_a_symlink_in_the_output_folder_without_touching_its_target(ct_model, cli, tmp_path):
    victim = tmp_path / "elsewhere" / "precious.nii.gz"
    victim.parent.mkdir()
    victim.write_bytes(b"must stay as it is")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "c1.nii.gz")
    source = _scan(tmp_path / "in" / "c1.nii.gz")
    code, _, err = cli("segment", source, "--model", ct_model, "--output", out, "--device", "cpu")
    assert victim.read_bytes() == b"must stay as it is"
    if code == 0:  # replaced the link by a regular file inside the output folder
        assert not (out / "c1.nii.gz").is_symlink() and (out / "c1.nii.gz").stat().st_size > 100
    else:  # or refused, naming the escape
        assert code == 2 and "outside the output folder" in err
    assert only_files(tmp_path / "elsewhere") == ["precious.nii.gz"]


def test_segment_folder_run_ignores_hidden_leftovers_of_killed_writes(ct_model, cli, tmp_path):
    inputs = tmp_path / "in"
    _scan(inputs / "c1.nii.gz")
    (inputs / ".c1.nii.gz.1a2b3c4d5e6f.tmp.nii.gz").write_bytes(b"\x1f\x8b half a file")
    (inputs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    case = inputs / "c2"
    _scan(case / "c2.nii.gz", seed=1)
    (case / ".c2.nii.gz.0f0f0f0f0f0f.tmp.nii.gz").write_bytes(b"")
    code, _, err = cli("segment", inputs, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    assert only_files(tmp_path / "out") == ["c1.nii.gz", "c2.nii.gz"]


def test_evaluate_writes_only_the_three_tables_where_asked(cli, tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:9, 4:9, 3:6] = 1
    for folder in ("pred", "ref"):
        write_nifti(tmp_path / folder / "a..b.nii.gz", labels, AFFINE)  # odd but harmless case id
        write_nifti(tmp_path / folder / ".a..b.nii.gz.123456789abc.tmp.nii.gz", labels[:-1], AFFINE)  # ignored
    before = _tree(tmp_path)
    output = tmp_path / "res" / "s.csv"
    code, _, err = cli("evaluate", tmp_path / "pred", tmp_path / "ref", "--labels", "x=1", "--output", output)
    assert code == 0, err
    assert _tree(tmp_path) - before == {"res", "res/s.csv", "res/s_summary.csv", "res/s.json"}


def test_synth_writes_only_inside_its_output_folder(cli, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    before = _tree(tmp_path)
    code, _, err = cli("synth", "brats", "../data/./brats", "--cases", "1", "--shape", "8", "8", "8")
    assert code == 0, err
    new = _tree(tmp_path) - before
    assert new and all(p == "data" or p.startswith("data/brats") for p in new)


@pytest.mark.parametrize("name", ["../evil", "/abs", "a/b", ".."])
def test_convert_refuses_dataset_names_that_are_paths(name, tmp_path):
    from medseg.pipelines.nnunet_convert import dataset_folder_name

    with pytest.raises(ConfigError):
        dataset_folder_name(5, name)


def test_convert_writes_only_inside_the_new_dataset_folder(tmp_path):
    from medseg.pipelines.nnunet_convert import convert_to_nnunet
    from medseg.synth import write_brats

    write_brats(tmp_path / "brats", 1, shape=(8, 8, 8), seed=0)
    (tmp_path / "raw").mkdir()
    before = _tree(tmp_path)
    target = convert_to_nnunet(tmp_path / "brats", tmp_path / "raw", 7)
    assert target.parent == tmp_path / "raw"
    assert all(p.startswith(f"raw/{target.name}") for p in _tree(tmp_path) - before)


def test_dataset_check_ignores_hidden_leftovers_of_killed_writes(cli, tmp_path):
    from medseg.synth import write_brats

    root = tmp_path / "brats"
    (case,) = write_brats(root, 1, shape=(8, 8, 8), seed=0)
    (case / f".{case.name}_seg.nii.gz.0a0b0c0d0e0f.tmp.nii.gz").write_bytes(b"\x1f\x8b partial")
    (root / ".BraTS2021_99999").mkdir()  # a hidden staging folder is not a case either
    code, out, _ = cli("check", root)
    assert code == 0, out
    assert out.startswith("OK: 1 case(s)")
