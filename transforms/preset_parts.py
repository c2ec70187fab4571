"""Pieces shared by the dataset presets: foreground crop, channel check, patch sampling, config checks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    DeleteItemsd,
    FgBgToIndicesd,
    MapTransform,
    RandCropByPosNegLabeld,
    SpatialCrop,
    SpatialPadd,
    SqueezeDimd,
)

from medseg.errors import ConfigError, InputError
from medseg.transforms.label_transforms import describe

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis labels for MONAI's ``Orientationd``: affines are voxel-to-RAS+ throughout medseg."""


class CropNonzerod(MapTransform):
    """Crop every key to the bounding box of the source key's nonzero voxels (any channel), plus a margin.

    Unlike MONAI's ``CropForegroundd`` this never pads (the box is clipped to the image) and keeps the whole
    image when it has no nonzero voxel, so an empty input yields an all-background prediction instead of
    an empty tensor. The crop is a MONAI ``SpatialCrop``, so ``MetaTensor`` affines follow it.

    Args:
        keys: keys to crop (channel-first, same spatial shape as the source).
        source_key: key whose nonzero voxels define the box.
        margin: voxels added on each side of the box (clipped to the image).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, source_key: str, margin: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(margin) < 0:
            raise ConfigError(f"crop margin must be >= 0, got {margin}")
        self.source_key = source_key
        self.margin = int(margin)

    def __call__(self, data: Mapping) -> dict:
        """Crop the keys; the box comes from ``data[source_key]`` ``(C, *spatial)``."""
        out = dict(data)
        source_shape = tuple(out[self.source_key].shape[1:])
        start, end = nonzero_box(out[self.source_key], self.margin)
        crop = SpatialCrop(roi_start=start, roi_end=end)
        for key in self.key_iterator(out):
            if tuple(out[key].shape[1:]) != source_shape:
                raise InputError(
                    f"{describe(out, key)} has spatial shape {tuple(out[key].shape[1:])}, "
                    f"{self.source_key} has {source_shape}"
                )
            out[key] = crop(out[key])
        return out


def nonzero_box(image: torch.Tensor | np.ndarray, margin: int = 0) -> tuple[list[int], list[int]]:
    """Bounding box of the nonzero voxels of a channel-first image, widened by ``margin`` and clipped.

    Args:
        image: ``(C, *spatial)`` array or tensor.
        margin: voxels added on each side.

    Returns:
        ``(start, end)`` voxel indices (end exclusive); the whole image when no voxel is nonzero.
    """
    mask = torch.as_tensor(image).as_subclass(torch.Tensor).ne(0).any(dim=0)
    shape = list(mask.shape)
    if not bool(mask.any()):
        return [0] * len(shape), shape
    start, end = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = torch.nonzero(mask.any(dim=others) if others else mask).flatten()
        start.append(max(int(present[0]) - margin, 0))
        end.append(min(int(present[-1]) + 1 + margin, shape[axis]))
    return start, end


class RequireChannelsd(MapTransform):
    """Raise unless each key has the expected number of channels (e.g. the 4 BraTS modalities).

    Args:
        keys: keys of channel-first items.
        channels: required channel count.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = int(channels)

    def __call__(self, data: Mapping) -> Mapping:
        """Check the channel counts; the data pass through unchanged."""
        for key in self.key_iterator(data):
            if data[key].shape[0] != self.channels:
                raise InputError(
                    f"{describe(data, key)} has {data[key].shape[0]} channel(s); this preset needs {self.channels}"
                )
        return data


def crop_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """The 3D box cut from a volume for a patch: the patch itself, or ``(h, w, 1)`` for a 2D patch ``(h, w)``.

    Args:
        patch_size: ``(d, h, w)`` or ``(h, w)``.

    Returns:
        The 3D crop size.
    """
    return tuple(patch_size) if len(patch_size) == 3 else (*patch_size, 1)


def patch_centres(keys: Sequence[Hashable], image_key: str, label_key: str, patch_size: Sequence[int]) -> list:
    """Transforms that zero-pad volumes smaller than a patch and list candidate patch centres.

    Put them before any intensity normalisation: candidates are voxels with a nonzero label channel
    (foreground) and voxels with label 0 but some image channel above 0 (tissue, not the zero-valued
    background outside the body). They are stored as flat indices under ``"<label_key>_fg_indices"`` and
    ``"<label_key>_bg_indices"`` for :func:`patch_crops`.

    Args:
        keys: keys to pad together.
        image_key: image key (raw intensities, >= 0 outside the body).
        label_key: label key (any nonzero channel is foreground).
        patch_size: ``(d, h, w)`` or ``(h, w)``.

    Returns:
        The list of transforms.
    """
    return [
        SpatialPadd(keys, spatial_size=crop_size(patch_size)),
        FgBgToIndicesd(label_key, image_key=image_key, image_threshold=0.0),
    ]


def patch_crops(
    keys: Sequence[Hashable], label_key: str, patch_size: Sequence[int], num_samples: int, pos: float, neg: float
) -> list:
    """Transforms that cut ``num_samples`` patches centred on foreground or tissue with odds ``pos:neg``.

    Needs the candidates listed by :func:`patch_centres` (on the same grid). A 3D ``patch_size`` gives
    ``(C, *patch_size)`` patches; a 2D one ``(h, w)`` gives slices: ``(h, w, 1)`` boxes with the last axis
    then dropped, ``(C, h, w)``.

    Args:
        keys: keys to crop together.
        label_key: label key used by :func:`patch_centres`.
        patch_size: ``(d, h, w)`` or ``(h, w)``.
        num_samples: patches per volume (the transform then returns a list of dicts).
        pos: weight of foreground-centred patches.
        neg: weight of tissue-centred patches.

    Returns:
        The list of transforms.
    """
    indices = [f"{label_key}_fg_indices", f"{label_key}_bg_indices"]
    parts = [
        RandCropByPosNegLabeld(
            keys,
            label_key=label_key,
            spatial_size=crop_size(patch_size),
            pos=pos,
            neg=neg,
            num_samples=num_samples,
            fg_indices_key=indices[0],
            bg_indices_key=indices[1],
        ),
        DeleteItemsd(indices),
    ]
    if len(patch_size) == 2:
        parts.append(SqueezeDimd(keys, dim=-1))
    return parts


def check_patch_size(patch_size: Sequence[int], dims: Sequence[int] = (2, 3)) -> tuple[int, ...]:
    """Validate a patch size: ``len in dims`` positive integers.

    Args:
        patch_size: the configured size.
        dims: allowed lengths.

    Returns:
        The size as a tuple of ints.

    Raises:
        ConfigError: wrong length or non-positive sizes.
    """
    size = tuple(int(n) for n in patch_size)
    if len(size) not in dims or any(n < 1 for n in size) or size != tuple(patch_size):
        raise ConfigError(f"patch_size must be {' or '.join(map(str, dims))} positive integers, got {patch_size!r}")
    return size


def check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float] | None:
    """Validate a target voxel spacing in mm: ``None`` or three positive numbers.

    Args:
        spacing: the configured spacing.

    Returns:
        The spacing as a tuple of floats, or None.

    Raises:
        ConfigError: wrong length or non-positive values.
    """
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"spacing must be None or three positive sizes in mm, got {spacing!r}")
    return values


def check_probability(name: str, value: float) -> None:
    """Raise ConfigError unless ``0 <= value <= 1``.

    Args:
        name: the option's name, for the message.
        value: its value.
    """
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ConfigError unless ``value >= 0``.

    Args:
        name: the option's name, for the message.
        value: its value.
    """
    if not float(value) >= 0.0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
