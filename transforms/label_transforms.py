"""Dictionary transforms over label maps: BraTS regions, Synapse remapping, value checks.

Each wraps a plain function of :mod:`medseg.transforms.brats_regions`,
:mod:`medseg.transforms.synapse_labels` or :mod:`medseg.transforms.label_values` and keeps a MONAI
``MetaTensor``'s metadata (affine, file name, geometry) on its output.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.errors import InputError
from medseg.transforms.brats_regions import brats_convention, labels_to_regions, regions_to_labels
from medseg.transforms.label_values import check_label_values
from medseg.transforms.synapse_labels import synapse_to_transunet


def describe(data: Mapping, key: Hashable) -> str:
    """Name an item of a data dictionary for error messages: key, case id and source file when known.

    Args:
        data: the data dictionary (may hold ``"case_id"``).
        key: the item's key.

    Returns:
        A phrase such as ``"label of case BraTS-0001 (/data/seg.nii.gz)"``.
    """
    text = f"{key}"
    if "case_id" in data:
        text += f" of case {data['case_id']}"
    item = data.get(key)
    source = item.meta.get("filename_or_obj") if isinstance(item, MetaTensor) else None
    if source:
        text += f" ({source})"
    return text


def keep_meta(result: torch.Tensor, like: object) -> torch.Tensor:
    """Give ``result`` the metadata of ``like`` when ``like`` is a ``MetaTensor``.

    Args:
        result: the new tensor (its spatial shape must equal ``like``'s).
        like: the transform's input.

    Returns:
        ``result`` as a ``MetaTensor`` with ``like``'s meta dict and applied operations, or unchanged.
    """
    if isinstance(like, MetaTensor):
        return MetaTensor(result, meta=dict(like.meta), applied_operations=list(like.applied_operations))
    return result


def _single_channel(value: object, what: str) -> object:
    if value.ndim < 2 or value.shape[0] != 1:
        raise InputError(f"{what}: expected a channel-first label map of shape (1, *spatial), got {tuple(value.shape)}")
    return value[0]


class LabelsToRegionsd(MapTransform):
    """Replace a ``(1, *spatial)`` BraTS label map by its ``(3, *spatial)`` uint8 regions TC, WT, ET.

    Args:
        keys: keys of the label maps.
        convention: ``"brats2021"`` or ``"brats2023"``.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, convention: str, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.convention = brats_convention(convention).name

    def __call__(self, data: Mapping) -> dict:
        """Convert every key's label map; raises InputError naming the case for invalid label values."""
        out = dict(data)
        for key in self.key_iterator(out):
            what = describe(out, key)
            label = torch.as_tensor(_single_channel(out[key], what))
            out[key] = keep_meta(labels_to_regions(label, self.convention, what), out[key])
        return out


class RegionsToLabelsd(MapTransform):
    """Replace ``(3, *spatial)`` region masks or probabilities (TC, WT, ET) by a ``(1, *spatial)`` label map.

    See :func:`medseg.transforms.brats_regions.regions_to_labels` for how inconsistent regions resolve.

    Args:
        keys: keys of the region maps.
        convention: ``"brats2021"`` or ``"brats2023"``.
        threshold: region values strictly above it are inside.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, convention: str, threshold: float = 0.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.convention = brats_convention(convention).name
        self.threshold = float(threshold)

    def __call__(self, data: Mapping) -> dict:
        """Convert every key's region maps into a channel-first label map."""
        out = dict(data)
        for key in self.key_iterator(out):
            labels = regions_to_labels(torch.as_tensor(out[key]), self.convention, self.threshold)
            out[key] = keep_meta(labels[None], out[key])
        return out


class SynapseToTransUNetd(MapTransform):
    """Remap Synapse's 13 organ labels to TransUNet's 8 (see :func:`synapse_to_transunet`).

    Args:
        keys: keys of the label maps (any shape, values 0..13).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __call__(self, data: Mapping) -> dict:
        """Remap every key's label map; raises InputError naming the case for values outside 0..13."""
        out = dict(data)
        for key in self.key_iterator(out):
            remapped = synapse_to_transunet(torch.as_tensor(out[key]), describe(out, key))
            out[key] = keep_meta(remapped, out[key])
        return out


class CheckLabelsd(MapTransform):
    """Raise unless every label map holds only the given values (the data pass through unchanged).

    Args:
        keys: keys of the label maps.
        valid: the accepted label values.
        convention: names the label set in error messages (e.g. ``"synapse13"``).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, valid: Iterable[int], convention: str, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.valid = tuple(int(v) for v in valid)
        self.convention = convention

    def __call__(self, data: Mapping) -> Mapping:
        """Check every key's label map; raises InputError naming the case and the bad values."""
        for key in self.key_iterator(data):
            check_label_values(data[key], self.valid, f"{describe(data, key)} ({self.convention})")
        return data
