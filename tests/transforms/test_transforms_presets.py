"""Presets on tiny synthetic datasets in the official layouts: patch sizes, channels, labels, inversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import list_data_collate

from medseg.data import index
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io import Geometry, load_volume, save_like
from medseg.synth import write_brats, write_synapse
from medseg.transforms import (
    GEOMETRY_KEY,
    BratsTransformConfig,
    LoadVolumed,
    SynapseTransformConfig,
    TransUNetSliceConfig,
    brats_inference_transforms,
    brats_train_transforms,
    input_geometry,
    invert_to_input,
    regions_to_labels,
    synapse_inference_transforms,
    synapse_train_transforms,
    transunet_slice_train_transforms,
)

SHAPE = (32, 32, 24)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_brats(root / "brats2021", 1, shape=SHAPE, year=2021, seed=1)
    write_brats(root / "brats2023", 1, shape=SHAPE, year=2023, seed=2)
    write_synapse(root / "synapse", 1, shape=SHAPE, seed=3)
    write_synapse(root / "transunet", 2, shape=SHAPE, seed=4, output_format="transunet")
    return root


def _first_case(root) -> dict:
    return index(root)[0]


@pytest.mark.parametrize("year", [2021, 2023])
@pytest.mark.parametrize("patch_size", [(16, 16, 8), (16, 12)])
def test_brats_training_patches_have_patch_size_and_region_channels(datasets, year, patch_size):
    config = BratsTransformConfig(convention=f"brats{year}", patch_size=patch_size, num_samples=2)
    preset = brats_train_transforms(config)
    preset.set_random_state(0)
    patches = preset(_first_case(datasets / f"brats{year}"))
    assert len(patches) == 2
    for patch in patches:
        assert tuple(patch["image"].shape) == (4, *patch_size) and patch["image"].dtype == torch.float32
        assert tuple(patch["label"].shape) == (3, *patch_size) and patch["label"].dtype == torch.uint8
        assert set(torch.unique(patch["label"]).tolist()) <= {0, 1}
    batch = list_data_collate([patches])
    assert tuple(batch["image"].shape) == (2, 4, *patch_size)


def test_brats_positive_patches_contain_tumour(datasets):
    config = BratsTransformConfig(patch_size=(8, 8, 8), num_samples=4, pos=1.0, neg=0.0)
    preset = brats_train_transforms(config)
    preset.set_random_state(0)
    for patch in preset(_first_case(datasets / "brats2021")):
        assert patch["label"][1].any()  # centred on whole tumour


def test_brats_negative_patches_are_centred_on_brain_tissue(datasets):
    # Single-voxel patches are their own centre. Candidates are chosen before z-scoring, so brain voxels
    # darker than the mean in every channel (negative after z-scoring) are candidates too.
    config = BratsTransformConfig(patch_size=(1, 1, 1), num_samples=64, pos=0.0, neg=1.0, intensity_prob=0.0)
    preset = brats_train_transforms(config)
    preset.set_random_state(0)
    patches = preset(_first_case(datasets / "brats2021"))
    centres = torch.stack([patch["image"].flatten() for patch in patches])
    labels = torch.stack([patch["label"].flatten() for patch in patches])
    assert not labels.any()
    assert (centres != 0).any(dim=1).all()
    assert (centres < 0).all(dim=1).any()


def test_brats_convention_mismatch_raises_input_error_naming_the_value(datasets):
    case = _first_case(datasets / "brats2023")
    assert 3 in np.unique(load_volume(case["label"]).array)
    preset = brats_train_transforms(BratsTransformConfig(convention="brats2021", patch_size=(8, 8, 8)))
    with pytest.raises(InputError, match=r"label of case BraTS.*label values 3 are not valid"):
        preset(case)


def test_brats_preset_needs_four_modalities(datasets):
    case = _first_case(datasets / "brats2021")
    case["image"] = case["image"][:3]
    with pytest.raises(InputError, match=r"has 3 channel\(s\); this preset needs 4"):
        brats_inference_transforms()(case)


def test_brats_inference_and_inversion_restore_input_shape(datasets):
    case = _first_case(datasets / "brats2021")
    data = brats_inference_transforms()({"image": case["image"], "case_id": case["case_id"]})
    geometry = load_volume(case["image"][0]).geometry
    assert input_geometry(data) == geometry
    image = data["image"]
    assert image.shape[0] == 4 and image.dtype == torch.float32
    # Brain voxels are z-scored per channel.
    inside = image[0] != 0
    assert abs(float(image[0][inside].mean())) < 1e-4 and abs(float(image[0][inside].std()) - 1) < 1e-2
    probabilities = torch.sigmoid(image[:3])
    back = invert_to_input(probabilities, data, kind="probabilities")
    assert back.shape == (3, *geometry.shape)
    labels = invert_to_input(regions_to_labels(probabilities, "brats2021"), data)
    assert labels.shape == geometry.shape and labels.dtype == np.uint8


def test_brats_border_pad_surrounds_the_training_crop_with_background(datasets):
    # A patch as large as the padded crop is the whole padded crop: brain in the middle, `pad` zero voxels
    # (label 0) on every side, as the border windows of a whole-volume sliding window see it.
    case = _first_case(datasets / "brats2021")
    crop = brats_inference_transforms()({"image": case["image"]})["image"].shape[1:]
    pad = 3
    padded = tuple(n + 2 * pad for n in crop)
    config = BratsTransformConfig(patch_size=padded, num_samples=1, border_pad=pad, intensity_prob=0.0, flip_prob=0.0)
    (patch,) = brats_train_transforms(config)(case)
    image, label = patch["image"], patch["label"]
    assert tuple(image.shape[1:]) == padded
    inner = tuple(slice(pad, pad + n) for n in crop)
    border = torch.ones(padded, dtype=torch.bool)
    border[inner] = False
    assert not image[:, border].any() and not label[:, border].any()
    assert image[(slice(None), *inner)].any(dim=0).sum() > 0


def test_brats_border_pad_is_training_only(datasets):
    case = _first_case(datasets / "brats2021")
    plain = brats_inference_transforms()({"image": case["image"]})["image"]
    padded = brats_inference_transforms(BratsTransformConfig(border_pad=5))({"image": case["image"]})["image"]
    assert torch.equal(torch.as_tensor(plain), torch.as_tensor(padded))


def test_brats_negative_border_pad_is_refused():
    with pytest.raises(ConfigError, match="border_pad"):
        BratsTransformConfig(border_pad=-1)


@pytest.mark.parametrize("label_set, classes", [("synapse13", 14), ("transunet8", 9)])
@pytest.mark.parametrize("patch_size", [(16, 16, 8), (16, 16)])
def test_synapse_training_patches(datasets, label_set, classes, patch_size):
    config = SynapseTransformConfig(
        label_set=label_set, spacing=(15.0, 15.0, 10.0), patch_size=patch_size, num_samples=2, rotation_prob=1.0
    )
    preset = synapse_train_transforms(config)
    preset.set_random_state(0)
    patches = preset(_first_case(datasets / "synapse"))
    assert len(patches) == 2 and config.num_classes == classes
    for patch in patches:
        assert tuple(patch["image"].shape) == (1, *patch_size)
        assert float(patch["image"].min()) >= -1e-6 and float(patch["image"].max()) <= 1 + 1e-6
        assert tuple(patch["label"].shape) == (1, *patch_size) and patch["label"].dtype == torch.uint8
        assert int(patch["label"].max()) < classes
    list_data_collate([patches])


def test_synapse_inference_with_anisotropic_resampling_restores_shape(datasets):
    case = _first_case(datasets / "synapse")
    geometry = load_volume(case["image"][0]).geometry
    assert geometry.orientation == "LPS" and len(set(np.round(geometry.spacing, 3))) > 1
    data = synapse_inference_transforms(SynapseTransformConfig(spacing=(6.0, 9.0, 5.0)))({"image": case["image"]})
    assert data["image"].shape[1:] != geometry.shape
    logits = torch.randn(9, *data["image"].shape[1:], generator=torch.Generator().manual_seed(0))
    labels = invert_to_input(logits.argmax(0), data)
    assert labels.shape == geometry.shape
    probabilities = invert_to_input(torch.softmax(logits, 0), data, kind="probabilities", fill=[1.0] + [0.0] * 8)
    assert probabilities.shape == (9, *geometry.shape)


@pytest.mark.parametrize("fit", ["resize", "crop"])
def test_transunet_slices_fit_patch_size(datasets, fit):
    cases = index(datasets / "transunet")
    preset = transunet_slice_train_transforms(TransUNetSliceConfig(patch_size=(24, 20), fit=fit))
    preset.set_random_state(0)
    labelled = [c for c in cases if np.load(c["label"])["label"].any()][0]
    sample = preset(labelled)
    assert tuple(sample["image"].shape) == (1, 24, 20) and sample["image"].dtype == torch.float32
    assert tuple(sample["label"].shape) == (1, 24, 20) and sample["label"].dtype == torch.uint8
    assert int(sample["label"].max()) <= 8
    assert float(sample["image"].min()) >= -1e-6 and float(sample["image"].max()) <= 1 + 1e-6


def test_transunet_slices_reject_labels_beyond_classes(datasets, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, image=np.zeros((8, 8), np.float32), label=np.full((8, 8), 9, np.uint8))
    with pytest.raises(InputError, match=r"label values 9 are not valid"):
        preset = transunet_slice_train_transforms(TransUNetSliceConfig(patch_size=(8, 8)))
        preset({"image": str(path), "label": str(path)})


def test_loader_keeps_geometry_and_checks_label_grid(datasets, tmp_path):
    case = _first_case(datasets / "brats2021")
    data = LoadVolumed(["image", "label"], label_keys=["label"])(case)
    geometry = load_volume(case["label"]).geometry
    assert data["image"].shape == (4, *SHAPE) and data["label"].dtype == torch.uint8
    assert data["image"].meta[GEOMETRY_KEY] == load_volume(case["image"][0]).geometry
    np.testing.assert_array_equal(data["image"].affine.numpy(), geometry.affine)
    assert data["image"].meta["space"] == "RAS"
    # A label whose grid is shifted by a voxel is refused.
    shifted = geometry.affine.copy()
    shifted[:3, 3] += shifted[:3, 0]
    save_like(load_volume(case["label"]).array, Geometry.from_affine(shifted, SHAPE), tmp_path / "seg.nii.gz")
    with pytest.raises(GeometryError, match="origin"):
        LoadVolumed(["image", "label"], label_keys=["label"])({**case, "label": str(tmp_path / "seg.nii.gz")})
