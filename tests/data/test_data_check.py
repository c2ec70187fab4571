"""``check`` passes clean datasets and reports every problem of broken ones, case by case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from medseg.data import DATASET_CASE_ID, check, check_dataset
from medseg.io import Geometry, load_volume, save_like


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def _by_case(problems) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in problems:
        found.setdefault(problem.case_id, []).append(problem.message)
    return found


@pytest.mark.parametrize("fixture", ["brats2021_dir", "brats2023_dir", "synapse_dir", "transunet_dir", "nnunet_dir"])
def test_clean_synthetic_datasets_pass(fixture: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(fixture)
    report = check_dataset(root)
    assert report.problems == []
    assert report.ok and report.cases > 0


def test_brats_broken_three_ways_reports_each_case_and_problem(tmp_path: Path, brats2021_dir: Path) -> None:
    root = _copy(brats2021_dir, tmp_path)
    # Case 0: a missing modality.
    (root / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").unlink()
    # Case 1: label 3, which BraTS 2021 does not use (its enhancing tumour is 4).
    seg_path = root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    seg = load_volume(seg_path)
    labels = seg.array.copy()
    labels[0, 0, 0] = 3
    save_like(labels, seg.geometry, seg_path, kind="label")
    # Case 2: one modality shifted by 5 mm.
    flair_path = root / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz"
    flair = load_volume(flair_path)
    shifted = flair.geometry.affine.copy()
    shifted[0, 3] += 5.0
    save_like(flair.array, Geometry.from_affine(shifted, flair.geometry.shape, "int16"), flair_path, kind="image")

    problems = check(root)
    found = _by_case(problems)
    assert sorted(found) == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert len(problems) == 3
    (missing,) = found["BraTS2021_00000"]
    assert "missing t1ce image BraTS2021_00000_t1ce.nii.gz" in missing
    (label,) = found["BraTS2021_00001"]
    assert "[3]" in label and "brats2021" in label and "allowed: 0, 1, 2, 4" in label
    (grid,) = found["BraTS2021_00002"]
    assert "flair" in grid and "origin" in grid and "BraTS2021_00002_t1.nii.gz" in grid


def test_brats_label_on_another_grid_nan_image_and_stray_file(tmp_path: Path, brats2023_dir: Path) -> None:
    root = _copy(brats2023_dir, tmp_path)
    case = root / "BraTS-GLI-00000-000"
    seg = load_volume(case / "BraTS-GLI-00000-000-seg.nii.gz")
    save_like(seg.array[:, :, :-1], Geometry.from_affine(seg.geometry.affine, seg.array[:, :, :-1].shape, "uint8"),
              case / "BraTS-GLI-00000-000-seg.nii.gz", kind="label")
    t2w = load_volume(case / "BraTS-GLI-00000-000-t2w.nii.gz")
    bad = t2w.array.astype(np.float32)
    bad[1, 1, 1] = np.nan
    _write_nan(bad, t2w.geometry, case / "BraTS-GLI-00000-000-t2w.nii.gz")
    (case / "notes.nii.gz").write_bytes(b"")
    (root / "BraTS-GLI-0007").mkdir()

    found = _by_case(check(root))
    messages = " | ".join(found["BraTS-GLI-00000-000"])
    assert "not on the grid" in messages and "shape" in messages
    assert "non-finite" in messages and "t2w" in messages
    assert "unexpected file notes.nii.gz" in messages
    assert "does not follow the brats2023 layout" in found["BraTS-GLI-0007"][0]
    assert "BraTS-GLI-00001-000" not in found


def _write_nan(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """save_like refuses non-finite images, as it should; write the broken file with nibabel directly."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, geometry.affine), str(path))


def test_synapse_missing_label_stray_and_orphan_label(tmp_path: Path, synapse_dir: Path) -> None:
    root = _copy(synapse_dir, tmp_path)
    training = root / "RawData" / "Training"
    (training / "label" / "label0002.nii.gz").rename(training / "label" / "label0009.nii.gz")
    (training / "img" / "img3.nii.gz").write_bytes(b"")
    found = _by_case(check(root))
    assert "missing label label0002.nii.gz" in found["case0002"][0]
    assert "has no image img0009.nii.gz" in found["case0009"][0]
    assert "unexpected entry img3.nii.gz" in found["img3.nii.gz"][0]


def test_unreadable_file_is_reported_not_raised(tmp_path: Path, synapse_dir: Path) -> None:
    root = _copy(synapse_dir, tmp_path)
    (root / "RawData/Training/img/img0001.nii.gz").write_bytes(b"this is not an image")
    (message,) = _by_case(check(root))["case0001"]
    assert "cannot use ct image img0001.nii.gz" in message


def test_transunet_list_and_array_problems(tmp_path: Path, transunet_dir: Path) -> None:
    root = _copy(transunet_dir, tmp_path)
    lists = root / "lists" / "lists_Synapse"
    train = (lists / "train.txt").read_text().split()
    (lists / "train.txt").write_text("\n".join(train[1:] + ["case0003_slice000"]) + "\n")  # unlist one, leak one
    np.savez(root / "train_npz" / "case0003_slice000.npz", image=np.full((16, 16), 2.0, np.float32),
             label=np.full((16, 16), 12, np.uint8))
    with h5py.File(root / "test_vol_h5" / "case0003.npy.h5", "r+") as handle:
        del handle["label"]
    found = _by_case(check(root))
    assert "not listed in train.txt" in found[train[0]][0]
    slice_problems = " | ".join(found["case0003_slice000"])
    assert "outside [0, 1]" in slice_problems and "[12]" in slice_problems
    case_problems = " | ".join(found["case0003"])
    assert "both a training volume" in case_problems and "no label dataset" in case_problems


def test_transunet_missing_list_file_is_a_dataset_problem(tmp_path: Path, transunet_dir: Path) -> None:
    root = _copy(transunet_dir, tmp_path)
    (root / "lists" / "lists_Synapse" / "test_vol.txt").unlink()
    problems = check(root)
    assert [p.case_id for p in problems] == [DATASET_CASE_ID]
    assert "missing list file" in problems[0].message


def test_nnunet_channel_and_count_problems(tmp_path: Path, nnunet_dir: Path) -> None:
    root = _copy(nnunet_dir, tmp_path)
    shutil.copy(root / "imagesTr" / "BRAIN_000_0001.nii.gz", root / "imagesTr" / "BRAIN_000_0002.nii.gz")
    (root / "imagesTr" / "BRAIN_001_0001.nii.gz").unlink()
    dataset = json.loads((root / "dataset.json").read_text())
    dataset["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(dataset))
    found = _by_case(check(root))
    assert "numTraining 5" in found[DATASET_CASE_ID][0]
    assert "channel 2 beyond the 2 channel(s)" in found["BRAIN_000"][0]
    assert "missing FLAIR image BRAIN_001_0001.nii.gz" in found["BRAIN_001"][0]
    assert "BRAIN_002" not in found


def test_empty_layout_folder_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "RawData" / "Training" / "img").mkdir(parents=True)
    problems = check(tmp_path)
    assert len(problems) == 1 and "no cases" in problems[0].message
