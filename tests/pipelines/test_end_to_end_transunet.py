"""End to end through the command line on TransUNet's preprocessed Synapse layout: train the 2D TransUNet on
the ``train_npz`` slices, segment the ``test_vol_h5`` volumes, evaluate against their ``label`` datasets."""

from __future__ import annotations

import csv
import dataclasses

import h5py
import numpy as np
import pytest

from medseg.cli import main
from medseg.data.labels import transunet_normalise
from medseg.io import load_volume
from medseg.pipelines.inference_preset import inference_preset
from medseg.pipelines.model_folder import load_model_folder

ORGANS = ["spleen", "right kidney", "left kidney", "gallbladder", "liver", "stomach", "aorta", "pancreas"]
SHAPE = ["--shape", "32", "32", "16", "--seed", "0"]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two masks, 1 when both are empty (medseg evaluate's default convention)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("transunet_e2e")
    data = root / "transunet"
    codes = {"synth": main(["synth", "synapse", str(data), "--cases", "4", "--format", "transunet", *SHAPE])}
    codes["train"] = main([
        "train", str(data), "--output", str(root / "run"), "--model", "transunet", "--variant", "tiny",
        "--patch", "32", "32", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
        "--n-folds", "2", "--num-workers", "0", "--device", "cpu", "--no-progress",
    ])
    codes["segment"] = main(["segment", str(data / "test_vol_h5"), "--model", str(root / "run" / "model"),
                             "--output", str(root / "pred"), "--device", "cpu"])
    codes["evaluate"] = main(["evaluate", str(root / "pred"), str(data / "test_vol_h5"), "--dataset", "transunet",
                              "--output", str(root / "metrics.csv")])
    # TransUNet's recipe: whole slices resized to a smaller patch (its 512 x 512 slices become 224 x 224).
    codes["train_resized"] = main([
        "train", str(data), "--output", str(root / "run16"), "--model", "transunet", "--variant", "tiny",
        "--patch", "16", "16", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
        "--n-folds", "2", "--num-workers", "0", "--device", "cpu", "--no-progress", "--val-interval", "0",
    ])
    codes["segment_resized"] = main(["segment", str(data / "test_vol_h5"), "--model", str(root / "run16" / "model"),
                                     "--output", str(root / "pred16"), "--device", "cpu"])
    return root, codes


def test_every_step_exits_with_zero(flow):
    _, codes = flow
    assert codes == {"synth": 0, "train": 0, "segment": 0, "evaluate": 0, "train_resized": 0, "segment_resized": 0}


def test_model_is_2d_and_trained_on_the_slices(flow):
    root, _ = flow
    _, config = load_model_folder(root / "run" / "model")
    assert config.spatial_dims == 2 and config.patch_size == [32, 32]
    assert config.preprocessing["preset"] == "transunet_slices" and config.class_names[1:] == ORGANS


def test_each_h5_volume_gets_a_nifti_label_map_on_its_identity_grid(flow):
    root, _ = flow
    volumes = sorted((root / "transunet" / "test_vol_h5").iterdir())
    assert volumes, "the synthetic TransUNet set must hold test volumes"
    assert sorted(p.name for p in (root / "pred").iterdir()) == [p.name.replace(".npy.h5", ".nii.gz") for p in volumes]
    for path in volumes:
        stored_shape = h5py.File(path, "r")["image"].shape  # (slices, H, W)
        predicted = load_volume(root / "pred" / path.name.replace(".npy.h5", ".nii.gz"))
        assert predicted.array.shape == (stored_shape[1], stored_shape[2], stored_shape[0])
        np.testing.assert_array_equal(predicted.geometry.affine, np.eye(4))
        assert set(np.unique(predicted.array)) <= set(range(9))


def test_metrics_csv_scores_each_organ_against_the_h5_label_dataset(flow):
    root, _ = flow
    rows = list(csv.DictReader((root / "metrics.csv").open()))
    volumes = sorted((root / "transunet" / "test_vol_h5").iterdir())
    cases = [p.name.replace(".npy.h5", "") for p in volumes]
    assert [(r["case"], r["region"]) for r in rows] == [(c, organ) for c in cases for organ in ORGANS]
    for path in volumes:
        with h5py.File(path, "r") as handle:
            reference = np.transpose(handle["label"][()], (1, 2, 0))  # read independently of medseg.io
        predicted = load_volume(root / "pred" / path.name.replace(".npy.h5", ".nii.gz")).array
        case = path.name.replace(".npy.h5", "")
        for row in (r for r in rows if r["case"] == case):
            value = ORGANS.index(row["region"]) + 1
            assert float(row["dice"]) == pytest.approx(dice(predicted == value, reference == value), abs=1e-12)


def test_segmenting_one_h5_file_gives_the_same_labels_as_the_folder_run(flow, tmp_path):
    root, _ = flow
    volume = sorted((root / "transunet" / "test_vol_h5").iterdir())[0]
    assert main(["segment", str(volume), "--model", str(root / "run" / "model"), "--output", str(tmp_path),
                 "--device", "cpu"]) == 0
    name = volume.name.replace(".npy.h5", ".nii.gz")
    np.testing.assert_array_equal(load_volume(tmp_path / name).array, load_volume(root / "pred" / name).array)


def test_h5_volumes_are_not_windowed_again_but_nifti_ct_is(flow, tmp_path):
    root, _ = flow
    _, config = load_model_folder(root / "run" / "model")
    preset = inference_preset(config)
    volume = load_volume(sorted((root / "transunet" / "test_vol_h5").iterdir())[0])
    # The stored image is already CT windowed to [0, 1]: the network must see it unchanged.
    np.testing.assert_array_equal(np.asarray(preset({"image": volume})["image"])[0], volume.array)
    assert main(["synth", "synapse", str(tmp_path / "raw"), "--cases", "1", *SHAPE]) == 0
    ct_path = tmp_path / "raw" / "RawData" / "Training" / "img" / "img0001.nii.gz"
    ct = load_volume(ct_path)
    assert ct.geometry.orientation == "LPS"  # the preset turns it to RAS: flip i and j back to compare
    windowed = np.asarray(preset({"image": ct})["image"])[0][::-1, ::-1, :]
    np.testing.assert_allclose(windowed, transunet_normalise(ct.array), atol=1e-6)
    np.testing.assert_allclose(np.asarray(preset({"image": str(ct_path)})["image"])[0][::-1, ::-1, :], windowed)


def test_slices_are_resized_to_the_patch_as_in_training_and_labels_come_back_on_the_input_grid(flow):
    root, _ = flow
    _, config = load_model_folder(root / "run16" / "model")
    path = sorted((root / "transunet" / "test_vol_h5").iterdir())[0]
    volume = load_volume(path)
    assert np.asarray(inference_preset(config)({"image": volume})["image"]).shape == (1, 16, 16, volume.array.shape[2])
    predicted = load_volume(root / "pred16" / path.name.replace(".npy.h5", ".nii.gz"))
    assert predicted.array.shape == volume.array.shape
    volume.geometry.require_match(predicted.geometry, "prediction vs h5 volume")
    # Trained on native-scale crops instead, the network sees native slices.
    crops = dataclasses.replace(config, preprocessing={**config.preprocessing,
                                                       "config": {**config.preprocessing["config"], "fit": "crop"}})
    np.testing.assert_array_equal(np.asarray(inference_preset(crops)({"image": volume})["image"])[0], volume.array)
