"""``convert_to_nnunet``: nnU-Net accepts the result, labels follow Dataset137, geometry is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.data import index
from medseg.errors import ConfigError, InputError
from medseg.io import load_volume, read_geometry
from medseg.pipelines.nnunet_convert import convert_to_nnunet


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("convert")
    assert main(["synth", "brats", str(root / "brats21"), "--cases", "2", "--shape", "24", "24", "16"]) == 0
    assert main(["synth", "brats", str(root / "brats23"), "--cases", "1", "--shape", "24", "24", "16",
                 "--year", "2023"]) == 0
    assert main(["synth", "synapse", str(root / "synapse"), "--cases", "2", "--shape", "32", "32", "8"]) == 0
    return root


def test_brats_and_synapse_conversions_pass_nnunets_integrity_check(datasets: Path, tmp_path: Path) -> None:
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    brats = convert_to_nnunet(datasets / "brats21", tmp_path, 137)
    synapse = convert_to_nnunet(datasets / "synapse", tmp_path, 8)
    assert (brats.name, synapse.name) == ("Dataset137_BraTS2021", "Dataset008_Synapse")
    verify_dataset_integrity(str(brats), num_processes=1)
    verify_dataset_integrity(str(synapse), num_processes=1)


@pytest.mark.parametrize(("source", "mapping"), [
    ("brats21", {0: 0, 1: 2, 2: 1, 4: 3}),
    ("brats23", {0: 0, 1: 2, 2: 1, 3: 3}),
])
def test_brats_labels_follow_nnunets_dataset137_convention(datasets: Path, tmp_path: Path, source: str,
                                                           mapping: dict[int, int]) -> None:
    folder = convert_to_nnunet(datasets / source, tmp_path, 42, name="Tumour")
    content = json.loads((folder / "dataset.json").read_text())
    assert content["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                 "enhancing tumor": [3]}
    assert content["regions_class_order"] == [1, 2, 3]
    assert content["file_ending"] == ".nii.gz"
    for case in index(datasets / source):
        original = load_volume(case["label"])
        converted = load_volume(folder / "labelsTr" / f"{case['case_id']}.nii.gz")
        expected = np.vectorize(mapping.get)(original.array)
        np.testing.assert_array_equal(converted.array, expected)
        assert converted.geometry.matches(original.geometry, atol=1e-6)
        assert set(np.unique(original.array)) - {0}, "synthetic case has no tumour"
    recorded = {int(k): v for k, v in content["medseg_source"]["nnunet_to_source"].items()}
    assert recorded == {v: k for k, v in mapping.items()}


def test_images_are_copied_in_medseg_modality_order_with_their_geometry(datasets: Path, tmp_path: Path) -> None:
    folder = convert_to_nnunet(datasets / "brats21", tmp_path, 137)
    content = json.loads((folder / "dataset.json").read_text())
    assert content["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}
    assert content["numTraining"] == 2
    for case in index(datasets / "brats21"):
        for channel, source in enumerate(case["image"]):
            target = folder / "imagesTr" / f"{case['case_id']}_{channel:04d}.nii.gz"
            assert target.read_bytes() == Path(source).read_bytes()
            assert read_geometry(target) == read_geometry(source)


def test_synapse_conversion_keeps_organ_values_and_names_the_channel_ct(datasets: Path, tmp_path: Path) -> None:
    folder = convert_to_nnunet(datasets / "synapse", tmp_path, 8)
    content = json.loads((folder / "dataset.json").read_text())
    assert content["channel_names"] == {"0": "CT"}  # nnU-Net's CT normalisation keys on this name
    assert content["labels"]["background"] == 0 and content["labels"]["left adrenal gland"] == 13
    assert "regions_class_order" not in content
    case = index(datasets / "synapse")[0]
    np.testing.assert_array_equal(load_volume(folder / "labelsTr" / f"{case['case_id']}.nii.gz").array,
                                  load_volume(case["label"]).array)


def test_refusals_name_the_problem(datasets: Path, tmp_path: Path) -> None:
    convert_to_nnunet(datasets / "synapse", tmp_path, 8)
    with pytest.raises(InputError, match="exists and is not empty"):
        convert_to_nnunet(datasets / "synapse", tmp_path, 8)
    with pytest.raises(InputError, match="already used by Dataset008_Synapse"):
        convert_to_nnunet(datasets / "brats21", tmp_path, 8)
    with pytest.raises(ConfigError, match="1..999"):
        convert_to_nnunet(datasets / "synapse", tmp_path, 1000)
    with pytest.raises(ConfigError, match="may hold only"):
        convert_to_nnunet(datasets / "synapse", tmp_path, 9, name="bad name")
    assert main(["synth", "synapse", str(tmp_path / "tu"), "--cases", "2", "--shape", "16", "16", "8",
                 "--format", "transunet"]) == 0
    with pytest.raises(InputError, match="TransUNet.*no voxel spacing"):
        convert_to_nnunet(tmp_path / "tu", tmp_path / "out", 10)


def test_labels_outside_the_convention_are_refused_naming_the_file(datasets: Path, tmp_path: Path) -> None:
    import shutil

    from medseg.io import save_like

    source = tmp_path / "brats"
    shutil.copytree(datasets / "brats21", source)
    case = index(source)[0]
    label = load_volume(case["label"])
    broken = label.array.copy()
    broken[0, 0, 0] = 3  # BraTS 2021 has no label 3
    save_like(broken, label.geometry, case["label"])
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label values \[3\]"):
        convert_to_nnunet(source, tmp_path / "out", 137)


def test_test_cases_go_to_images_ts_without_labels(datasets: Path, tmp_path: Path) -> None:
    import shutil

    source = tmp_path / "synapse"
    shutil.copytree(datasets / "synapse", source)
    testing = source / "RawData" / "Testing" / "img"
    testing.mkdir(parents=True)
    shutil.copyfile(source / "RawData" / "Training" / "img" / "img0001.nii.gz", testing / "img0061.nii.gz")
    folder = convert_to_nnunet(source, tmp_path / "out", 8)
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["case0061_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["case0001.nii.gz", "case0002.nii.gz"]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2
