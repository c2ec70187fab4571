"""BraTS label maps <-> the three nested tumour regions TC, WT, ET.

Label conventions:

* ``"brats2021"``: 0 background, 1 necrotic tumour core (NCR), 2 peritumoural edema (ED), 4 enhancing tumour (ET).
* ``"brats2023"``: the same with enhancing tumour stored as 3.

Regions, as channels in this order: ``TC`` (tumour core = NCR + ET), ``WT`` (whole tumour = NCR + ED + ET),
``ET`` (enhancing tumour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medseg.data.labels import BRATS2021_REGIONS, BRATS2023_REGIONS
from medseg.errors import InputError, unknown_choice
from medseg.transforms.label_values import ArrayLike, as_numpy, check_label_values

REGION_NAMES = ("TC", "WT", "ET")
NECROSIS = 1
EDEMA = 2


@dataclass(frozen=True)
class BratsConvention:
    """Label values of one BraTS release.

    Args:
        name: convention name, ``"brats2021"`` or ``"brats2023"``.
        enhancing: label value of enhancing tumour (4 in 2021, 3 in 2023).
    """

    name: str
    enhancing: int

    @property
    def labels(self) -> tuple[int, int, int, int]:
        """The valid label values: background, NCR, ED, ET."""
        return (0, NECROSIS, EDEMA, self.enhancing)


# The label tables live in medseg.data.labels; ET is the single label value of the ET region.
CONVENTIONS = {
    "brats2021": BratsConvention("brats2021", enhancing=BRATS2021_REGIONS["ET"][0]),
    "brats2023": BratsConvention("brats2023", enhancing=BRATS2023_REGIONS["ET"][0]),
}


def brats_convention(name: str) -> BratsConvention:
    """Look up a BraTS label convention by name.

    Args:
        name: ``"brats2021"`` or ``"brats2023"``.

    Returns:
        The convention.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    if name not in CONVENTIONS:
        raise unknown_choice("BraTS label convention", name, CONVENTIONS)
    return CONVENTIONS[name]


def labels_to_regions(label: ArrayLike, convention: str, what: str = "label map") -> ArrayLike:
    """Convert a BraTS label map into the region masks TC, WT, ET.

    Args:
        label: label map of shape ``(*spatial)`` (2D or 3D; no channel axis), numpy array or torch tensor,
            holding only the convention's values.
        convention: ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3).
        what: names the map in error messages (e.g. the case or file).

    Returns:
        ``(3, *spatial)`` uint8 masks (0/1), channels TC, WT, ET; a torch tensor on ``label``'s device when
        ``label`` is a tensor, else a numpy array.

    Raises:
        InputError: if ``label`` holds values outside the convention, naming them.
        ConfigError: for an unknown convention.
    """
    spec = brats_convention(convention)
    check_label_values(label, spec.labels, f"{what} ({spec.name})")
    if isinstance(label, torch.Tensor):
        values = label.as_subclass(torch.Tensor)
        et = values == spec.enhancing
        tc = (values == NECROSIS) | et
        wt = tc | (values == EDEMA)
        return torch.stack([tc, wt, et]).to(torch.uint8)
    values = np.asarray(label)
    et = values == spec.enhancing
    tc = (values == NECROSIS) | et
    wt = tc | (values == EDEMA)
    return np.stack([tc, wt, et]).astype(np.uint8)


def regions_to_labels(regions: ArrayLike, convention: str, threshold: float = 0.5) -> ArrayLike:
    """Convert region masks or region probabilities (TC, WT, ET) back into a BraTS label map.

    A voxel is inside a region when its value is strictly greater than ``threshold`` (booleans count as
    0/1). Labels are assigned hierarchically, outermost region first, which is the standard BraTS
    back-conversion:

    * outside WT -> 0 (background), whatever TC and ET say;
    * inside WT, outside TC -> 2 (edema);
    * inside WT and TC, outside ET -> 1 (necrosis);
    * inside WT, TC and ET -> the convention's enhancing label (4 for 2021, 3 for 2023).

    Inconsistent maps are thereby resolved by nesting: TC only counts inside WT, and ET only inside TC
    (a voxel marked ET but not TC becomes edema if in WT, background otherwise). For any valid label
    map, ``regions_to_labels(labels_to_regions(label, c), c)`` equals ``label``.

    Args:
        regions: ``(3, *spatial)`` masks or probabilities, channels TC, WT, ET; numpy array or torch tensor.
        convention: ``"brats2021"`` or ``"brats2023"``.
        threshold: values strictly above it are inside a region.

    Returns:
        ``(*spatial)`` uint8 label map, a torch tensor on ``regions``' device when given a tensor, else numpy.

    Raises:
        InputError: if ``regions`` does not have 3 channels first.
        ConfigError: for an unknown convention.
    """
    spec = brats_convention(convention)
    if regions.ndim < 2 or regions.shape[0] != len(REGION_NAMES):
        raise InputError(
            f"regions must have shape (3, *spatial) with channels {', '.join(REGION_NAMES)}; "
            f"got shape {tuple(regions.shape)}"
        )
    if isinstance(regions, torch.Tensor):
        values = regions.as_subclass(torch.Tensor)
        inside = (values.to(torch.uint8) if values.dtype == torch.bool else values) > threshold
        tc, wt, et = inside[0], inside[1], inside[2]
        label = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    else:
        values = as_numpy(regions)
        inside = (values.astype(np.uint8) if values.dtype == np.bool_ else values) > threshold
        tc, wt, et = inside[0], inside[1], inside[2]
        label = np.zeros(values.shape[1:], dtype=np.uint8)
    label[wt] = EDEMA
    label[wt & tc] = NECROSIS
    label[wt & tc & et] = spec.enhancing
    return label
