"""Shared preset pieces: foreground crop, channel check, medseg errors through MONAI's wrappers, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import apply_transform

from medseg.errors import ConfigError, InputError, UnsafeFileError
from medseg.io import Geometry, Volume
from medseg.transforms import (
    BratsTransformConfig,
    CropNonzerod,
    InvertToInputd,
    LoadSliced,
    PresetCompose,
    RequireChannelsd,
    SynapseTransformConfig,
    TransUNetSliceConfig,
    brats_inference_transforms,
    find_medseg_error,
    nonzero_box,
)


def test_nonzero_box_adds_margin_and_clips():
    image = np.zeros((2, 6, 5, 4))
    image[1, 2:4, 1, 3] = 7.0
    assert nonzero_box(image) == ([2, 1, 3], [4, 2, 4])
    assert nonzero_box(image, margin=2) == ([0, 0, 1], [6, 4, 4])


def test_empty_image_is_kept_whole_and_inverts_to_background():
    geometry = Geometry.from_affine(np.diag([1.0, 1.0, 1.0, 1.0]), (5, 4, 3))
    volume = Volume(np.zeros((4, 5, 4, 3), np.float32), geometry)
    data = brats_inference_transforms()({"image": volume})
    assert data["image"].shape == (4, 5, 4, 3)
    out = InvertToInputd("pred")({**data, "pred": torch.zeros(5, 4, 3, dtype=torch.int64)})
    assert out["pred"].shape == (5, 4, 3) and not out["pred"].any()


def test_crop_refuses_keys_of_different_shape():
    data = {"image": MetaTensor(torch.ones(1, 4, 4, 4)), "label": MetaTensor(torch.ones(1, 4, 4, 3))}
    with pytest.raises(InputError, match=r"label has spatial shape \(4, 4, 3\), image has \(4, 4, 4\)"):
        CropNonzerod(["image", "label"], source_key="image")(data)


def test_medseg_errors_pass_through_compose_and_are_found_behind_monai_wrappers():
    preset = PresetCompose([RequireChannelsd("image", 4)])
    item = {"image": torch.zeros(2, 3, 3), "case_id": "c9"}
    with pytest.raises(InputError, match=r"image of case c9 has 2 channel\(s\)"):
        preset(item)
    with pytest.raises(InputError):
        Dataset([item], transform=preset)[0]
    # MONAI's apply_transform (used by nested composes and caching datasets) wraps it in RuntimeError.
    with pytest.raises(RuntimeError) as caught:
        apply_transform(preset, item)
    assert isinstance(find_medseg_error(caught.value), InputError)
    assert find_medseg_error(RuntimeError("unrelated")) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: BratsTransformConfig(convention="brats2022"),
        lambda: BratsTransformConfig(patch_size=(16, 16, 16, 16)),
        lambda: BratsTransformConfig(patch_size=(16, 0, 16)),
        lambda: BratsTransformConfig(flip_prob=1.5),
        lambda: BratsTransformConfig(pos=0.0, neg=0.0),
        lambda: SynapseTransformConfig(label_set="btcv14"),
        lambda: SynapseTransformConfig(hu_window=(275, -125)),
        lambda: SynapseTransformConfig(spacing=(1.5, 1.5)),
        lambda: TransUNetSliceConfig(patch_size=(224, 224, 1)),
        lambda: TransUNetSliceConfig(fit="pad"),
    ],
)
def test_invalid_configs_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_slice_loader_refuses_pickled_arrays_and_names_missing_ones(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, image=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        LoadSliced("image")({"image": str(pickled)})
    plain = tmp_path / "plain.npz"
    np.savez(plain, image=np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match=r"no array named 'label'; it holds \['image'\]"):
        LoadSliced(["image", "label"], label_keys=["label"])({"image": str(plain), "label": str(plain)})
