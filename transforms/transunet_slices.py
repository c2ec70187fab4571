"""2D preset for TransUNet's preprocessed Synapse slices (``train_npz/*.npz`` with ``image`` and ``label``).

The slices are already HU-windowed and scaled to [0, 1]; labels are TransUNet's 0..8. The preset follows
TransUNet's recipe: random 90-degree rotations and flips, a random small rotation, then a resize (or a
random crop) to the patch size.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
)

from medseg.errors import ConfigError, InputError, UnsafeFileError, unknown_choice
from medseg.transforms.compose import PresetCompose
from medseg.transforms.label_values import check_label_values
from medseg.transforms.preset_parts import check_non_negative, check_patch_size, check_probability
from medseg.transforms.synapse_labels import TRANSUNET_ORGANS

FITS = ("resize", "crop")


class LoadSliced(MapTransform):
    """Load 2D slices into channel-first tensors ``(1, H, W)``: float32 images, uint8 label maps.

    An item may be a path to an ``.npz`` file (the array named like the key is read, without unpickling),
    a one-element list of such a path, or a 2D array/tensor already in memory.

    Args:
        keys: keys to load.
        label_keys: those of ``keys`` that hold label maps (whole numbers 0..255).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, label_keys: Sequence[str] = (), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = tuple(label_keys)

    def __call__(self, data: Mapping) -> dict:
        """Load the slices; raises InputError naming the case/file for missing arrays or bad values."""
        out = dict(data)
        for key in self.key_iterator(out):
            array, where = _read_slice(out[key], str(key))
            if "case_id" in out:
                where = f"{where}, case {out['case_id']}"
            if array.ndim != 2:
                raise InputError(f"{where}: a 2D slice (H, W) is required, got shape {array.shape}")
            if array.dtype.kind not in "biuf":
                raise InputError(f"{where}: slice data must be numbers, got dtype {array.dtype}")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise InputError(f"{where}: slice has non-finite values")
            if key in self.label_keys:
                check_label_values(array, range(256), where)
                array = array.astype(np.uint8)
            else:
                array = array.astype(np.float32)
            out[key] = torch.from_numpy(np.ascontiguousarray(array[None]))
        return out


def _read_slice(item: object, key: str) -> tuple[np.ndarray, str]:
    if isinstance(item, (list, tuple)) and len(item) == 1:
        item = item[0]
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().numpy(), f"{key} (in memory)"
    if isinstance(item, np.ndarray):
        return item, f"{key} (in memory)"
    if not isinstance(item, (str, os.PathLike)):
        raise InputError(f"{key}: cannot load a {type(item).__name__}; give an .npz path or a 2D array")
    path = Path(item)
    if path.suffix != ".npz":
        raise InputError(f"{path}: expected an .npz file holding the array {key!r}")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise InputError(f"{path}: no array named {key!r}; it holds {sorted(archive.files)}")
            return archive[key], str(path)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafeFileError(f"{path}: array {key!r} is stored as pickled objects; refusing to unpickle") from exc
        raise InputError(f"{path}: cannot read {key!r} ({exc})") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc


@dataclass(frozen=True)
class TransUNetSliceConfig:
    """Options of the TransUNet 2D slice preset.

    Args:
        patch_size: output slice size ``(h, w)``.
        fit: ``"resize"`` (interpolate the whole slice: image linear, labels nearest) or ``"crop"``
            (zero-pad if smaller, then a random crop).
        rot90_prob: probability of a random rotation by 90, 180 or 270 degrees.
        flip_prob: probability of a flip along each axis.
        rotation_degrees: largest random small rotation (degrees).
        rotation_prob: probability of the small rotation.
        num_classes: classes including background (labels must be ``0 .. num_classes - 1``).
    """

    patch_size: tuple[int, int] = (224, 224)
    fit: str = "resize"
    rot90_prob: float = 0.5
    flip_prob: float = 0.5
    rotation_degrees: float = 20.0
    rotation_prob: float = 0.5
    num_classes: int = len(TRANSUNET_ORGANS) + 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", check_patch_size(self.patch_size, dims=(2,)))
        if self.fit not in FITS:
            raise unknown_choice("slice fit", self.fit, FITS)
        for name in ("rot90_prob", "flip_prob", "rotation_prob"):
            check_probability(name, getattr(self, name))
        check_non_negative("rotation_degrees", self.rotation_degrees)
        if not 2 <= self.num_classes <= 256:
            raise ConfigError(f"num_classes must be in 2..256, got {self.num_classes}")


class CheckSliceLabelsd(MapTransform):
    """Raise unless label slices hold only ``0 .. num_classes - 1``.

    Args:
        keys: label keys.
        num_classes: number of classes including background.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = int(num_classes)

    def __call__(self, data: Mapping) -> Mapping:
        """Check the label values; the data pass through unchanged."""
        for key in self.key_iterator(data):
            where = f"{key} of case {data['case_id']}" if "case_id" in data else str(key)
            check_label_values(data[key], range(self.num_classes), where)
        return data


def transunet_slice_train_transforms(
    config: TransUNetSliceConfig | None = None, image_key: str = "image", label_key: str = "label"
) -> PresetCompose:
    """Training preset for 2D slices: load, random rot90/flip/rotation, fit to the patch size.

    Output: ``image`` float32 ``(1, h, w)``, ``label`` uint8 ``(1, h, w)``.

    Args:
        config: preset options (defaults: :class:`TransUNetSliceConfig`).
        image_key: key of the slice (an ``.npz`` path or a 2D array).
        label_key: key of the label slice (the same ``.npz`` path, or a 2D array).

    Returns:
        The preset (a MONAI ``Compose`` that raises medseg errors unwrapped).
    """
    config = config or TransUNetSliceConfig()
    keys = [image_key, label_key]
    if config.fit == "resize":
        fit = [Resized(keys, spatial_size=config.patch_size, mode=["bilinear", "nearest-exact"])]
    else:
        fit = [
            SpatialPadd(keys, spatial_size=config.patch_size),
            RandSpatialCropd(keys, roi_size=config.patch_size, random_size=False),
        ]
    return PresetCompose(
        [
            LoadSliced(keys, label_keys=[label_key]),
            CheckSliceLabelsd(label_key, config.num_classes),
            RandRotate90d(keys, prob=config.rot90_prob, max_k=3),
            RandFlipd(keys, prob=config.flip_prob, spatial_axis=0),
            RandFlipd(keys, prob=config.flip_prob, spatial_axis=1),
            RandRotated(
                keys,
                range_x=float(np.deg2rad(config.rotation_degrees)),
                prob=config.rotation_prob,
                mode=["bilinear", "nearest"],
                padding_mode="zeros",
            ),
            *fit,
            EnsureTyped(keys, track_meta=False),
            CastToTyped(keys, dtype=[torch.float32, torch.uint8]),
        ]
    )
