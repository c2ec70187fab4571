"""BraTS presets: four MRI modalities -> z-scored channels, labels -> TC/WT/ET region channels.

Data dictionaries come from ``medseg.data.index``: ``{"image": [one path per modality], "label": path,
"case_id": ...}`` with the modalities in the dataset spec's fixed order, which is the channel order.
"""

from __future__ import annotations

from dataclasses import dataclass

from monai.transforms import (
    BorderPadd,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
)

from medseg.errors import ConfigError
from medseg.transforms.brats_regions import brats_convention
from medseg.transforms.compose import PresetCompose
from medseg.transforms.grids import RecordGridd
from medseg.transforms.label_transforms import LabelsToRegionsd
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


@dataclass(frozen=True)
class BratsTransformConfig:
    """Options of the BraTS presets.

    Args:
        convention: label convention of the dataset, ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3).
        modalities: number of image channels a case must have.
        patch_size: training patch ``(d, h, w)``, or ``(h, w)`` for 2D slices.
        num_samples: patches drawn per volume.
        pos: weight of patches centred on tumour.
        neg: weight of patches centred on brain background.
        spacing: resample to this voxel size in mm (``None``: keep the grid; BraTS is already 1 mm).
        crop_margin: voxels kept around the brain's bounding box.
        border_pad: training only: zero voxels added on every side of the brain crop before patches are
            drawn, so that patches near the brain's edge hold background, as the windows of a whole-volume
            sliding-window inference (MONAI's stock one) do; nnU-Net's training patches likewise reach past
            the data. 0 (default) keeps patches inside the crop, which suits ``medseg segment`` (it tiles the
            crop). A model meant for whole-volume inference should be trained with about half the patch
            (docs/benchmarks.md, "Inference (CPU and GPU)").
        flip_prob: probability of a flip along each spatial axis.
        intensity_scale: random intensity scaling factor range, ``x * (1 + U(-s, s))``.
        intensity_shift: random intensity offset range, ``x + U(-o, o)`` (in z-score units).
        intensity_prob: probability of each intensity augmentation.
        nonfinite: NaN/inf policy when loading (``"reject"``, ``"replace"``, ``"keep"``).
    """

    convention: str = "brats2021"
    modalities: int = 4
    patch_size: tuple[int, ...] = (128, 128, 128)
    num_samples: int = 2
    pos: float = 1.0
    neg: float = 1.0
    spacing: tuple[float, float, float] | None = None
    crop_margin: int = 0
    border_pad: int = 0
    flip_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    intensity_prob: float = 1.0
    nonfinite: str = "reject"

    def __post_init__(self) -> None:
        brats_convention(self.convention)
        object.__setattr__(self, "patch_size", check_patch_size(self.patch_size))
        object.__setattr__(self, "spacing", check_spacing(self.spacing))
        if self.modalities < 1 or self.num_samples < 1 or self.crop_margin < 0 or self.border_pad < 0:
            raise ConfigError(
                f"modalities and num_samples must be >= 1, crop_margin and border_pad >= 0, got {self.modalities}, "
                f"{self.num_samples}, {self.crop_margin}, {self.border_pad}"
            )
        for name in ("pos", "neg", "intensity_scale", "intensity_shift"):
            check_non_negative(name, getattr(self, name))
        if self.pos + self.neg <= 0:
            raise ConfigError("pos + neg must be > 0")
        check_probability("flip_prob", self.flip_prob)
        check_probability("intensity_prob", self.intensity_prob)


def _deterministic(config: BratsTransformConfig, keys: list[str], label_key: str | None, inference: bool) -> list:
    image_key = keys[0]
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    parts = [
        LoadVolumed(
            keys, label_keys=[label_key] if label_key else [], keep_geometry=inference, nonfinite=config.nonfinite
        ),
        RequireChannelsd(image_key, config.modalities),
        Orientationd(keys, axcodes="RAS", labels=RAS_LABELS),
    ]
    if inference:
        parts.append(RecordGridd(keys))
    if config.spacing is not None:
        parts.append(Spacingd(keys, pixdim=config.spacing, mode=modes))
        if inference:
            parts.append(RecordGridd(keys))
    if label_key:
        parts.append(LabelsToRegionsd(label_key, config.convention))
    parts.append(CropNonzerod(keys, source_key=image_key, margin=config.crop_margin))
    if inference:
        parts.append(RecordGridd(keys))
    else:
        if config.border_pad:
            parts.append(BorderPadd(keys, spatial_border=config.border_pad, mode="constant", value=0))
        # Patch centres are chosen on raw intensities, where brain tissue is > 0 and background 0.
        parts.extend(patch_centres(keys, image_key, label_key, config.patch_size))
    parts.append(NormalizeIntensityd(image_key, nonzero=True, channel_wise=True))
    return parts


def brats_train_transforms(
    config: BratsTransformConfig | None = None, image_key: str = "image", label_key: str = "label"
) -> PresetCompose:
    """Training preset: load, RAS, (resample), regions, crop to brain, z-score, random patches and augmentation.

    Output per patch: ``image`` float32 ``(modalities, *patch_size)``, ``label`` uint8 ``(3, *patch_size)``
    with channels TC, WT, ET. With ``num_samples > 1`` the transform returns a list of such dicts (collate
    with ``monai.data.list_data_collate``).

    Args:
        config: preset options (defaults: :class:`BratsTransformConfig`).
        image_key: key of the modality paths.
        label_key: key of the label map path.

    Returns:
        The preset (a MONAI ``Compose`` that raises medseg errors unwrapped).
    """
    config = config or BratsTransformConfig()
    keys = [image_key, label_key]
    spatial_dims = len(config.patch_size)
    return PresetCompose(
        [
            *_deterministic(config, keys, label_key, inference=False),
            *patch_crops(keys, label_key, config.patch_size, config.num_samples, config.pos, config.neg),
            *[RandFlipd(keys, prob=config.flip_prob, spatial_axis=axis) for axis in range(spatial_dims)],
            RandScaleIntensityd(image_key, factors=config.intensity_scale, prob=config.intensity_prob),
            RandShiftIntensityd(image_key, offsets=config.intensity_shift, prob=config.intensity_prob),
            EnsureTyped(image_key, dtype="float32", track_meta=True),
        ]
    )


def brats_inference_transforms(config: BratsTransformConfig | None = None, image_key: str = "image") -> PresetCompose:
    """Inference preset: the deterministic part of the training preset on the image only.

    The output ``image`` is a float32 ``MetaTensor`` ``(modalities, *spatial)`` that remembers the input's
    Geometry and the grids it went through, so that
    :func:`~medseg.transforms.inversion.invert_to_input` maps a prediction back onto the input grid.

    Args:
        config: preset options (defaults: :class:`BratsTransformConfig`); only the deterministic ones apply.
        image_key: key of the modality paths (or of a loaded ``medseg.io.Volume``).

    Returns:
        The preset (a MONAI ``Compose`` that raises medseg errors unwrapped).
    """
    config = config or BratsTransformConfig()
    return PresetCompose(
        [
            *_deterministic(config, [image_key], None, inference=True),
            EnsureTyped(image_key, dtype="float32", track_meta=True),
        ]
    )
