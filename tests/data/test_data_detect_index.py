"""Layout detection and case indexing on every supported layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medseg.data import BRATS2021, BRATS2023, SYNAPSE, TRANSUNET, builtin_spec, detect, index
from medseg.data.nnunet import read_spec
from medseg.errors import ConfigError, InputError


def test_detect_recognises_each_layout(brats2021_dir, brats2023_dir, synapse_dir, transunet_dir, nnunet_dir) -> None:
    assert detect(brats2021_dir) == BRATS2021
    assert detect(brats2023_dir) == BRATS2023
    assert detect(synapse_dir) == SYNAPSE
    assert detect(synapse_dir / "RawData") == SYNAPSE
    assert detect(transunet_dir) == TRANSUNET
    spec = detect(nnunet_dir)
    assert spec.name == "nnunet" and spec.modalities == ("T1ce", "FLAIR")
    assert spec.allowed_labels == {0, 1, 2, 3} and not spec.region_based


def test_specs_describe_modalities_labels_and_regions() -> None:
    assert BRATS2021.modalities == ("t1", "t1ce", "t2", "flair")
    assert BRATS2023.modalities == ("t1n", "t1c", "t2w", "t2f")
    assert BRATS2021.allowed_labels == {0, 1, 2, 4} and BRATS2023.allowed_labels == {0, 1, 2, 3}
    assert dict(BRATS2021.regions) == {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}
    assert dict(BRATS2023.regions) == {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}
    assert BRATS2021.region_based and not SYNAPSE.region_based
    assert len(SYNAPSE.labels) == 14 and len(TRANSUNET.labels) == 9
    with pytest.raises(ConfigError, match="brats2021"):
        builtin_spec("brats2022")


def test_detect_lists_the_accepted_layouts_when_nothing_matches(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as error:
        detect(tmp_path)
    for name in ("brats2021", "brats2023", "synapse", "transunet", "nnunet"):
        assert name in str(error.value)
    with pytest.raises(InputError, match="not found"):
        detect(tmp_path / "absent")


def test_detect_refuses_a_folder_with_two_layouts(tmp_path: Path, brats2021_dir, brats2023_dir) -> None:
    shutil.copytree(brats2021_dir / "BraTS2021_00000", tmp_path / "BraTS2021_00000")
    shutil.copytree(brats2023_dir / "BraTS-GLI-00000-000", tmp_path / "BraTS-GLI-00000-000")
    with pytest.raises(InputError, match="several layouts"):
        detect(tmp_path)


def test_index_brats_gives_modalities_in_documented_order(brats2021_dir, brats2023_dir) -> None:
    cases = index(brats2021_dir)
    assert [c["case_id"] for c in cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    first = cases[0]
    assert [Path(p).name for p in first["image"]] == [
        "BraTS2021_00000_t1.nii.gz",
        "BraTS2021_00000_t1ce.nii.gz",
        "BraTS2021_00000_t2.nii.gz",
        "BraTS2021_00000_flair.nii.gz",
    ]
    assert Path(first["label"]).name == "BraTS2021_00000_seg.nii.gz"
    names_2023 = [Path(p).name for p in index(brats2023_dir)[1]["image"]]
    assert names_2023 == [f"BraTS-GLI-00001-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")]


def test_index_brats_without_seg_files_is_unlabelled(tmp_path: Path, brats2021_dir) -> None:
    shutil.copytree(brats2021_dir, tmp_path / "val")
    for seg in (tmp_path / "val").rglob("*_seg.nii.gz"):
        seg.unlink()
    assert all(c["label"] is None for c in index(tmp_path / "val"))


def test_index_synapse_raw(synapse_dir) -> None:
    cases = index(synapse_dir)
    assert [c["case_id"] for c in cases] == ["case0001", "case0002", "case0003"]
    assert Path(cases[0]["image"][0]).name == "img0001.nii.gz"
    assert Path(cases[0]["label"]).name == "label0001.nii.gz"


def test_index_transunet_slices_and_volumes(transunet_dir) -> None:
    train = index(transunet_dir)
    assert len(train) == 2 * 8  # two training volumes of 8 slices
    assert train[0] == {
        "image": str(transunet_dir / "train_npz" / "case0001_slice000.npz"),
        "label": str(transunet_dir / "train_npz" / "case0001_slice000.npz"),
        "case_id": "case0001_slice000",
        "group": "case0001",
    }
    test = index(transunet_dir, subset="test")
    assert [(c["case_id"], c["group"], Path(c["image"]).name) for c in test] == [
        ("case0003", "case0003", "case0003.npy.h5")
    ]


def test_index_nnunet_raw(nnunet_dir) -> None:
    cases = index(nnunet_dir)
    assert [c["case_id"] for c in cases] == ["BRAIN_000", "BRAIN_001", "BRAIN_002"]
    assert [Path(p).name for p in cases[2]["image"]] == ["BRAIN_002_0000.nii.gz", "BRAIN_002_0001.nii.gz"]
    assert Path(cases[2]["label"]).name == "BRAIN_002.nii.gz"
    assert index(nnunet_dir, "nnunet") == cases


def test_index_names_missing_files(tmp_path: Path, synapse_dir) -> None:
    shutil.copytree(synapse_dir, tmp_path / "s")
    (tmp_path / "s/RawData/Training/label/label0002.nii.gz").unlink()
    with pytest.raises(InputError, match="label0002.nii.gz"):
        index(tmp_path / "s")


def test_index_refuses_unknown_subset_and_brats_test_subset(brats2021_dir) -> None:
    with pytest.raises(ConfigError, match="subset"):
        index(brats2021_dir, subset="validation")
    with pytest.raises(ConfigError, match="single set"):
        index(brats2021_dir, subset="test")


def test_nnunet_region_based_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3},
        "regions_class_order": [1, 2, 3],
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }))
    spec = read_spec(tmp_path)
    assert spec.region_based and spec.allowed_labels == {0, 1, 2, 3}
    assert dict(spec.regions) == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "JSON"),
        (json.dumps({"labels": {"background": 0}, "file_ending": ".nii.gz"}), "channel_names"),
        (json.dumps({"channel_names": {"0": "CT"}, "labels": {"organ": 1}, "file_ending": ".nii.gz"}), "background"),
        (json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}), "file_ending"),
        (json.dumps({"channel_names": {"1": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}), "gaps"),
    ],
)
def test_nnunet_bad_dataset_json_is_an_input_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=message):
        detect(tmp_path)
