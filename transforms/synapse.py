"""Synapse multi-organ CT presets: HU window to [0, 1], resampling, 13 labels or TransUNet's 8 organs.

Data dictionaries: ``{"image": CT path, "label": label path, "case_id": ...}`` (one modality).
No flips: left and right kidney are different labels, so mirroring would teach the wrong organ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    CastToTyped,
    EnsureTyped,
    Orientationd,
    RandRotated,
    ScaleIntensityRanged,
    Spacingd,
)

from medseg.errors import ConfigError, unknown_choice
from medseg.transforms.compose import PresetCompose
from medseg.transforms.grids import RecordGridd
from medseg.transforms.label_transforms import CheckLabelsd, SynapseToTransUNetd
from medseg.transforms.loading import LoadVolumed
from medseg.transforms.preset_parts import (
    RAS_LABELS,
    CropNonzerod,
    RequireChannelsd,
    check_non_negative,
    check_patch_size,
    check_probability,
    check_spacing,
    patch_centres,
    patch_crops,
)
from medseg.transforms.synapse_labels import SYNAPSE_ORGANS, TRANSUNET_ORGANS

LABEL_SETS = {"synapse13": len(SYNAPSE_ORGANS) + 1, "transunet8": len(TRANSUNET_ORGANS) + 1}
"""Label set name -> number of classes including background."""


@dataclass(frozen=True)
class SynapseTransformConfig:
    """Options of the Synapse presets.

    Args:
        label_set: ``"synapse13"`` (labels 0..13 as given) or ``"transunet8"`` (remapped to TransUNet's 8 organs).
        hu_window: CT intensities ``(low, high)`` in HU mapped linearly to [0, 1] and clipped.
        spacing: resample to this voxel size in mm (image linear, labels nearest); ``None`` keeps the grid.
        crop_foreground: crop to the bounding box of voxels above the window's low end (the body).
        crop_margin: voxels kept around that box.
        patch_size: training patch ``(d, h, w)``, or ``(h, w)`` for 2D slices.
        num_samples: patches drawn per volume.
        pos: weight of patches centred on an organ.
        neg: weight of patches centred on other tissue.
        rotation_degrees: largest random rotation about each axis (degrees; about the slice normal in 2D).
        rotation_prob: probability of a random rotation.
        nonfinite: NaN/inf policy when loading (``"reject"``, ``"replace"``, ``"keep"``).
    """

    label_set: str = "synapse13"
    hu_window: tuple[float, float] = (-125.0, 275.0)
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)
    crop_foreground: bool = True
    crop_margin: int = 0
    patch_size: tuple[int, ...] = (96, 96, 96)
    num_samples: int = 2
    pos: float = 1.0
    neg: float = 1.0
    rotation_degrees: float = 15.0
    rotation_prob: float = 0.3
    nonfinite: str = "reject"

    def __post_init__(self) -> None:
        if self.label_set not in LABEL_SETS:
            raise unknown_choice("Synapse label set", self.label_set, LABEL_SETS)
        low, high = (float(v) for v in self.hu_window)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ConfigError(f"hu_window must be (low, high) with low < high, got {self.hu_window!r}")
        object.__setattr__(self, "hu_window", (low, high))
        object.__setattr__(self, "patch_size", check_patch_size(self.patch_size))
        object.__setattr__(self, "spacing", check_spacing(self.spacing))
        if self.num_samples < 1 or self.crop_margin < 0:
            raise ConfigError(
                f"num_samples must be >= 1 and crop_margin >= 0, got {self.num_samples}, {self.crop_margin}"
            )
        for name in ("pos", "neg", "rotation_degrees"):
            check_non_negative(name, getattr(self, name))
        if self.pos + self.neg <= 0:
            raise ConfigError("pos + neg must be > 0")
        check_probability("rotation_prob", self.rotation_prob)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (14 or 9)."""
        return LABEL_SETS[self.label_set]


def _deterministic(config: SynapseTransformConfig, keys: list[str], label_key: str | None, inference: bool) -> list:
    image_key = keys[0]
    low, high = config.hu_window
    parts = [
        LoadVolumed(
            keys, label_keys=[label_key] if label_key else [], keep_geometry=inference, nonfinite=config.nonfinite
        ),
        RequireChannelsd(image_key, 1),
    ]
    if label_key:
        parts.append(CheckLabelsd(label_key, range(LABEL_SETS["synapse13"]), "synapse13"))
    parts.append(Orientationd(keys, axcodes="RAS", labels=RAS_LABELS))
    if inference:
        parts.append(RecordGridd(keys))
    if config.spacing is not None:
        parts.append(Spacingd(keys, pixdim=config.spacing, mode=["bilinear"] + ["nearest"] * (len(keys) - 1)))
        if inference:
            parts.append(RecordGridd(keys))
    parts.append(ScaleIntensityRanged(image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    if label_key and config.label_set == "transunet8":
        parts.append(SynapseToTransUNetd(label_key))
    if config.crop_foreground:
        parts.append(CropNonzerod(keys, source_key=image_key, margin=config.crop_margin))
        if inference:
            parts.append(RecordGridd(keys))
    return parts


def synapse_train_transforms(
    config: SynapseTransformConfig | None = None, image_key: str = "image", label_key: str = "label"
) -> PresetCompose:
    """Training preset: load, RAS, resample, HU window, (remap), crop to body, random patches and rotations.

    Output per patch: ``image`` float32 ``(1, *patch_size)`` in [0, 1], ``label`` uint8 ``(1, *patch_size)``
    with values ``0 .. config.num_classes - 1``. With ``num_samples > 1`` the transform returns a list of
    dicts (collate with ``monai.data.list_data_collate``).

    Args:
        config: preset options (defaults: :class:`SynapseTransformConfig`).
        image_key: key of the CT path.
        label_key: key of the label map path.

    Returns:
        The preset (a MONAI ``Compose`` that raises medseg errors unwrapped).
    """
    config = config or SynapseTransformConfig()
    keys = [image_key, label_key]
    angle = float(np.deg2rad(config.rotation_degrees))
    # In 2D, MONAI rotates about the slice normal with range_x alone.
    axes = ("range_x",) if len(config.patch_size) == 2 else ("range_x", "range_y", "range_z")
    angles = {axis: angle for axis in axes}
    return PresetCompose(
        [
            *_deterministic(config, keys, label_key, inference=False),
            *patch_centres(keys, image_key, label_key, config.patch_size),
            *patch_crops(keys, label_key, config.patch_size, config.num_samples, config.pos, config.neg),
            RandRotated(
                keys, prob=config.rotation_prob, mode=["bilinear", "nearest"], padding_mode="zeros", **angles
            ),
            EnsureTyped(image_key, dtype="float32", track_meta=True),
            CastToTyped(label_key, dtype=np.uint8),
        ]
    )


def synapse_inference_transforms(
    config: SynapseTransformConfig | None = None, image_key: str = "image"
) -> PresetCompose:
    """Inference preset: the deterministic part of the training preset on the image only.

    The output ``image`` is a float32 ``MetaTensor`` ``(1, *spatial)`` that remembers the input's Geometry
    and the grids it went through; :func:`~medseg.transforms.inversion.invert_to_input` maps a prediction
    back onto the input grid (undoing crop, resampling and orientation).

    Args:
        config: preset options (defaults: :class:`SynapseTransformConfig`); only the deterministic ones apply.
        image_key: key of the CT path (or of a loaded ``medseg.io.Volume``).

    Returns:
        The preset (a MONAI ``Compose`` that raises medseg errors unwrapped).
    """
    config = config or SynapseTransformConfig()
    return PresetCompose(
        [
            *_deterministic(config, [image_key], None, inference=True),
            EnsureTyped(image_key, dtype="float32", track_meta=True),
        ]
    )
