"""``medseg segment`` with nnU-Net v2 results folders matches nnU-Net's predictor; unsafe checkpoints are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2")

from medseg.cli import main  # noqa: E402
from medseg.errors import ConfigError, InputError, UnsafeFileError  # noqa: E402
from medseg.io import load_volume, read_geometry  # noqa: E402
from medseg.pipelines.nnunet_convert import convert_to_nnunet  # noqa: E402
from medseg.pipelines.nnunet_model import NnunetSegmenter, is_nnunet_model_folder  # noqa: E402
from medseg.pipelines.segment import SegmentOptions  # noqa: E402

CONFIGURATION = "3d_fullres"
FOLDER_NAME = f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
# nnU-Net blends in float16: window corners, where its Gaussian underflows, differ from medseg's float32 by
# up to ~0.4 in logits; a random network's small blobs are mostly such edges, so Dice is checked on labels
# of at least this many voxels (and every voxel counts in the overall agreement).
MIN_VOXELS_FOR_DICE = 1000


def _architecture(dims: int, strides: list[list[int]], features: list[int]) -> dict:
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": features,
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": [[3] * dims] * n,
            "strides": strides,
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _plans(configuration: dict, transpose_forward: list[int], intensity: dict, name: str = CONFIGURATION) -> dict:
    backward = [transpose_forward.index(a) for a in range(3)]
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_Test",
        "plans_name": "nnUNetPlans",
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": transpose_forward,
        "transpose_backward": backward,
        "configurations": {
            name: {
                "data_identifier": f"nnUNetPlans_{name}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "batch_dice": False,
                **configuration,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity,
    }


def _checkpoint_like_nnunet(network, plans: dict, dataset_json: dict, patch: list[int], channels: int,
                            name: str) -> dict:
    """What nnUNetTrainer.save_checkpoint writes, numpy scalars included."""
    import torch

    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    network(torch.randn(1, channels, *patch)).mean().backward()
    optimizer.step()
    heads = network.decoder.seg_layers[-1].out_channels
    now = time.time()
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float32(0.25)],
            "ema_fg_dice": [np.float32(0.025)],
            "dice_per_class_or_region": [[np.float32(0.25)] * heads],
            "train_losses": [np.float32(0.7)],
            "val_losses": [np.float32(0.75)],
            "lrs": [0.01],
            "epoch_start_timestamps": [now - 1.0],
            "epoch_end_timestamps": [now],
        },
        "_best_ema": np.float64(0.025),
        "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": name, "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": tuple(range(len(patch))),
    }


def _results_folder(root: Path, plans: dict, dataset_json: dict, folds: int = 1, seed: int = 0,
                    name: str = CONFIGURATION) -> Path:
    """A trained-looking nnU-Net results folder with randomly initialised PlainConvUNet weights."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He
    from torch import nn

    folder = root / f"nnUNetTrainer__nnUNetPlans__{name}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    config = plans["configurations"][name]
    dims = len(config["patch_size"])
    kwargs = dict(config["architecture"]["arch_kwargs"])
    kwargs.update(conv_op=getattr(nn, f"Conv{dims}d"), norm_op=getattr(nn, f"InstanceNorm{dims}d"),
                  nonlin=nn.LeakyReLU, dropout_op=None)
    channels = len(dataset_json["channel_names"])
    labels = dataset_json["labels"]
    region_based = any(isinstance(v, list) for v in labels.values())
    heads = sum(1 for v in labels.values() if v != 0) if region_based else len(labels)
    for fold in range(folds):
        torch.manual_seed(seed + fold)
        network = PlainConvUNet(input_channels=channels, num_classes=heads, deep_supervision=False, **kwargs)
        network.apply(InitWeights_He(1e-2))
        (folder / f"fold_{fold}").mkdir()
        checkpoint = _checkpoint_like_nnunet(network, plans, dataset_json, config["patch_size"], channels, name)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def _nnunet_prediction(folder: Path, images: list[Path], out_dir: Path, folds: tuple[int, ...] = (0,),
                       name: str = CONFIGURATION) -> np.ndarray:
    """nnU-Net's own nnUNetPredictor on the same files (no mirroring, step 0.5, CPU)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    manager = PlansManager(plans)
    configuration = manager.get_configuration(name)
    labels = manager.get_label_manager(dataset_json)
    network = get_network_from_plans(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import, len(dataset_json["channel_names"]),
        labels.num_segmentation_heads, allow_init=False, deep_supervision=False,
    )
    weights = [torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
               ["network_weights"] for f in folds]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, manager, configuration, weights, dataset_json, "nnUNetTrainer", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(p) for p in images]], [str(out_dir / "case")],
                                            save_probabilities=False, overwrite=True)
    return np.asarray(load_volume(out_dir / "case.nii.gz").array)


def _dice_per_label(ours: np.ndarray, theirs: np.ndarray, min_voxels: int) -> dict[int, float]:
    scores = {}
    for value in np.unique(theirs):
        if value == 0 or np.count_nonzero(theirs == value) < min_voxels:
            continue
        a, b = ours == value, theirs == value
        scores[int(value)] = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    return scores


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic BraTS 2021 case and a region-based results folder from its nnU-Net conversion."""
    root = tmp_path_factory.mktemp("nnunet_brats")
    assert main(["synth", "brats", str(root / "brats"), "--cases", "1", "--shape", "40", "44", "28",
                 "--seed", "3"]) == 0
    raw = convert_to_nnunet(root / "brats", root / "raw", 137)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    intensity = {str(c): {"mean": 0.0, "std": 1.0, "percentile_00_5": 0.0, "percentile_99_5": 1.0} for c in range(4)}
    configuration = {
        "patch_size": [16, 16, 16],
        # nnU-Net axes after transpose_forward [1, 0, 2]: (y, z, x); coarser than the 6 mm data, so resampled.
        "spacing": [7.0, 7.5, 6.5],
        "normalization_schemes": ["ZScoreNormalization"] * 4,
        "use_mask_for_norm": [True] * 4,
        "architecture": _architecture(3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [4, 8, 16]),
    }
    plans = _plans(configuration, [1, 0, 2], intensity)
    folder = _results_folder(root / "results", plans, dataset_json, folds=2)
    case = root / "brats" / "BraTS2021_00000"
    images = [case / f"BraTS2021_00000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    return {"root": root, "folder": folder, "case": case, "images": images, "dataset_json": dataset_json}


def test_brats_region_model_agrees_with_nnunet_predictor(brats: dict, tmp_path: Path) -> None:
    folder, case = brats["folder"], brats["case"]
    assert main(["segment", str(case), "--model", str(folder), "--output", str(tmp_path / "medseg"),
                 "--device", "cpu", "--folds", "0", "1"]) == 0
    ours = load_volume(tmp_path / "medseg" / "BraTS2021_00000.nii.gz")
    assert ours.geometry.matches(read_geometry(brats["images"][0]), atol=1e-6)
    theirs = _nnunet_prediction(folder, brats["images"], tmp_path / "nnunet", folds=(0, 1))
    # The converted dataset.json records BraTS 2021's values: medseg writes them back (1 <-> 2, 3 -> 4).
    table = np.zeros(4, dtype=np.uint8)
    for value, source in brats["dataset_json"]["medseg_source"]["nnunet_to_source"].items():
        table[int(value)] = source
    theirs = table[theirs]
    assert set(np.unique(ours.array)) <= {0, 1, 2, 4}
    assert np.mean(ours.array == theirs) >= 0.995
    scores = _dice_per_label(ours.array, theirs, min_voxels=MIN_VOXELS_FOR_DICE)
    assert len(scores) >= 2, f"too few labels predicted to compare: {np.unique(theirs, return_counts=True)}"
    summary = " ".join(f"{k}:{v:.4f}" for k, v in scores.items())
    print(f"voxel agreement {np.mean(ours.array == theirs):.5f}; Dice per label {summary}")
    assert min(scores.values()) >= 0.99, summary


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic thick-slice Synapse CT and a softmax results folder (CT normalisation, separate-z resampling)."""
    root = tmp_path_factory.mktemp("nnunet_synapse")
    assert main(["synth", "synapse", str(root / "syn"), "--cases", "1", "--shape", "64", "64", "10",
                 "--seed", "1"]) == 0
    raw = convert_to_nnunet(root / "syn", root / "raw", 8)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    del dataset_json["medseg_source"]  # plain nnU-Net labels: no conversion record
    intensity = {"0": {"mean": 60.0, "std": 120.0, "percentile_00_5": -900.0, "percentile_99_5": 300.0}}
    configuration = {
        "patch_size": [8, 32, 32],
        # (z, y, x): 19.2 x 5.6 x 5.6 mm -> 9.6 x 7 x 7 mm; anisotropic, so resampled in-plane, then along z.
        "spacing": [9.6, 7.0, 7.0],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "architecture": _architecture(3, [[1, 1, 1], [1, 2, 2], [2, 2, 2]], [4, 8, 16]),
    }
    plans = _plans(configuration, [0, 1, 2], intensity)
    folder = _results_folder(root / "results", plans, dataset_json, seed=7)
    slices = {**configuration, "patch_size": [32, 32], "spacing": [7.0, 7.0],
              "architecture": _architecture(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 16])}
    folder_2d = _results_folder(root / "results", _plans(slices, [0, 1, 2], intensity, "2d"), dataset_json,
                                seed=9, name="2d")
    image = root / "syn" / "RawData" / "Training" / "img" / "img0001.nii.gz"
    return {"folder": folder, "folder_2d": folder_2d, "image": image}


def test_synapse_softmax_model_agrees_with_nnunet_predictor(synapse: dict, tmp_path: Path) -> None:
    assert main(["segment", str(synapse["image"]), "--model", str(synapse["folder"]),
                 "--output", str(tmp_path / "medseg"), "--device", "cpu"]) == 0
    ours = load_volume(tmp_path / "medseg" / "img0001.nii.gz").array
    theirs = _nnunet_prediction(synapse["folder"], [synapse["image"]], tmp_path / "nnunet")
    assert np.mean(ours == theirs) >= 0.995
    scores = _dice_per_label(ours, theirs, min_voxels=MIN_VOXELS_FOR_DICE)
    assert len(scores) >= 2, f"too few labels predicted to compare: {np.unique(theirs, return_counts=True)}"
    summary = " ".join(f"{k}:{v:.4f}" for k, v in scores.items())
    print(f"voxel agreement {np.mean(ours == theirs):.5f}; Dice per label {summary}")
    assert min(scores.values()) >= 0.99, summary


def test_2d_configuration_segments_slice_by_slice_like_nnunet(synapse: dict, tmp_path: Path) -> None:
    assert main(["segment", str(synapse["image"]), "--model", str(synapse["folder_2d"]),
                 "--output", str(tmp_path / "medseg"), "--device", "cpu"]) == 0
    ours = load_volume(tmp_path / "medseg" / "img0001.nii.gz").array
    theirs = _nnunet_prediction(synapse["folder_2d"], [synapse["image"]], tmp_path / "nnunet", name="2d")
    scores = _dice_per_label(ours, theirs, min_voxels=MIN_VOXELS_FOR_DICE)
    summary = " ".join(f"{k}:{v:.4f}" for k, v in scores.items())
    print(f"voxel agreement {np.mean(ours == theirs):.5f}; Dice per label {summary}")
    assert np.mean(ours == theirs) >= 0.995
    assert len(scores) >= 2 and min(scores.values()) >= 0.99, summary


def test_probabilities_tta_and_largest_component_options_apply(brats: dict, tmp_path: Path) -> None:
    assert main(["segment", str(brats["case"]), "--model", str(brats["folder"]), "--output", str(tmp_path),
                 "--device", "cpu", "--folds", "0", "--tta", "--probabilities", "--keep-largest-component"]) == 0
    labels = load_volume(tmp_path / "BraTS2021_00000.nii.gz")
    with np.load(tmp_path / "BraTS2021_00000_probabilities.npz") as saved:
        probabilities, names = saved["probabilities"].astype(np.float32), list(saved["class_names"])
        np.testing.assert_allclose(saved["affine"], labels.geometry.affine)
    assert names == ["whole tumor", "tumor core", "enhancing tumor"]
    assert probabilities.shape == (3, *labels.geometry.shape)
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    # Every labelled voxel lies in a region (probability above 0.5, up to the float16 rounding of the file).
    assert np.all(probabilities.max(axis=0)[labels.array > 0] >= 0.5 - 1e-3)
    from scipy import ndimage

    for value in np.unique(labels.array[labels.array > 0]):
        assert ndimage.label(labels.array == value, structure=np.ones((3, 3, 3)))[1] == 1


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_foreign_pickled_object_is_refused_without_running_it(brats: dict, tmp_path: Path) -> None:
    import shutil

    import torch

    folder = tmp_path / FOLDER_NAME
    shutil.copytree(brats["folder"], folder)
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    marker = tmp_path / "marker"
    checkpoint["logging"]["evil"] = _WritesMarker(marker)
    torch.save(checkpoint, path)
    with pytest.raises(UnsafeFileError, match="posix.system|nt.system"):
        NnunetSegmenter(folder, SegmentOptions(device="cpu", folds=("0",)))
    assert main(["segment", str(brats["case"]), "--model", str(folder), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--folds", "0"]) == 2
    assert not marker.exists()


def test_results_folder_is_recognised_and_folds_are_checked(brats: dict, tmp_path: Path) -> None:
    folder = brats["folder"]
    assert is_nnunet_model_folder(folder)
    assert not is_nnunet_model_folder(tmp_path)
    segmenter = NnunetSegmenter(folder, SegmentOptions(device="cpu"))
    assert segmenter.folds == ["0", "1"]
    assert segmenter.modalities == ["T1", "T1ce", "T2", "Flair"]
    with pytest.raises(InputError, match="fold 4 has no final checkpoint"):
        NnunetSegmenter(folder, SegmentOptions(device="cpu", folds=("4",)))
    assert main(["segment", str(brats["case"]), "--model", str(folder), "--output", str(tmp_path / "o"),
                 "--folds", "x"]) == 2


def test_plans_naming_an_unknown_network_class_are_refused(brats: dict, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / FOLDER_NAME
    shutil.copytree(brats["folder"], folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"][CONFIGURATION]["architecture"]["network_class_name"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ConfigError, match="unknown network class"):
        NnunetSegmenter(folder, SegmentOptions(device="cpu"))
    plans["configurations"][CONFIGURATION]["architecture"]["network_class_name"] = (
        "dynamic_network_architectures.architectures.unet.PlainConvUNet")
    plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]["nonlin"] = "subprocess.Popen"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ConfigError, match="subprocess.Popen"):
        NnunetSegmenter(folder, SegmentOptions(device="cpu"))


@pytest.mark.parametrize("dataset", ["brats", "synapse"])
def test_preprocessing_equals_nnunets_default_preprocessor(dataset: str, request: pytest.FixtureRequest) -> None:
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medseg.io import load_case
    from medseg.pipelines.nnunet_plans import read_plans
    from medseg.pipelines.nnunet_preprocess import preprocess, to_nnunet_axes

    fixture = request.getfixturevalue(dataset)
    images = fixture["images"] if dataset == "brats" else [fixture["image"]]
    folder = fixture["folder"]
    plans = read_plans(folder / "plans.json")
    volume = load_case(images)
    data, spacing, _ = to_nnunet_axes(volume.array, volume.geometry, plans.reader)
    ours = preprocess(data, spacing, plans, plans.configuration(CONFIGURATION))
    manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    theirs, _, properties = DefaultPreprocessor(verbose=False).run_case(
        [str(p) for p in images], None, manager, manager.get_configuration(CONFIGURATION),
        json.loads((folder / "dataset.json").read_text()),
    )
    assert ours.bbox == [list(map(int, b)) for b in properties["bbox_used_for_cropping"]]
    assert ours.data.shape == theirs.shape
    assert ours.data.shape[1:] != ours.shape_after_cropping  # the data were resampled
    np.testing.assert_allclose(ours.data, theirs, atol=1e-5)


@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIO", "NibabelIOWithReorient"])
def test_axis_order_and_spacing_match_nnunets_readers(brats: dict, tmp_path: Path, reader: str) -> None:
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO, NibabelIOWithReorient
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from medseg.io import Geometry, load_case, save_like
    from medseg.pipelines.nnunet_preprocess import from_nnunet_axes, to_nnunet_axes

    # An oblique-free but permuted and flipped grid (k, i, j order, LPS -> mixed), besides the LPS original.
    original = load_volume(brats["images"][0])
    permuted = np.ascontiguousarray(np.flip(original.array.transpose(2, 0, 1), axis=1))
    affine = original.geometry.affine[:, [2, 0, 1, 3]].copy()
    affine[:3, 3] += affine[:3, 1] * (permuted.shape[1] - 1)
    affine[:3, 1] *= -1
    save_like(permuted, Geometry.from_affine(affine, permuted.shape, "int16"), tmp_path / "permuted.nii.gz",
              kind="image")
    io = {"SimpleITKIO": SimpleITKIO, "NibabelIO": NibabelIO, "NibabelIOWithReorient": NibabelIOWithReorient}[reader]
    for path in (brats["images"][0], tmp_path / "permuted.nii.gz"):
        volume = load_case([path])
        ours, spacing, change = to_nnunet_axes(volume.array, volume.geometry, reader)
        theirs, properties = io().read_images([str(path)])
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(spacing, properties["spacing"], rtol=1e-6)
        np.testing.assert_array_equal(from_nnunet_axes(ours, change), volume.array)
        np.testing.assert_array_equal(from_nnunet_axes(ours[0], change), volume.array[0])


def test_checkpoints_pickled_under_numpy_1_names_load(brats: dict, tmp_path: Path) -> None:
    import zipfile

    from medseg.pipelines.nnunet_checkpoint import load_checkpoint

    source = brats["folder"] / "fold_0" / "checkpoint_final.pth"
    target = tmp_path / "checkpoint_final.pth"
    new_name = b"cnumpy.core.multiarray\nscalar\n"  # what numpy 1.x writes for numpy scalars
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\nscalar\n" in data
                data = data.replace(b"cnumpy._core.multiarray\nscalar\n", new_name)
            zout.writestr(info, data)
    checkpoint = load_checkpoint(target)
    assert checkpoint.configuration == CONFIGURATION and checkpoint.mirroring_axes == (0, 1, 2)
    assert set(checkpoint.weights) == set(load_checkpoint(source).weights)
