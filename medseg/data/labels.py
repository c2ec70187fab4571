"""Label conventions of the supported datasets: values, names, BraTS regions and the TransUNet remap.

BraTS 2021 and 2023 label the same three tumour sub-regions; only the value of the enhancing tumour
differs (4 in 2021, 3 in 2023). The evaluated BraTS regions are unions of sub-regions: tumour core
TC = NCR + ET, whole tumour WT = NCR + ED + ET, enhancing tumour ET.

Synapse (BTCV, "Multi-Atlas Labeling Beyond the Cranial Vault") labels 13 abdominal organs; TransUNet
evaluates 8 of them, renumbered 1 to 8 (see :data:`BTCV_TO_TRANSUNET`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from medseg.errors import InputError

BRATS2021_LABELS: Mapping[int, str] = MappingProxyType(
    {0: "background", 1: "necrotic tumour core (NCR)", 2: "peritumoral oedema (ED)", 4: "enhancing tumour (ET)"}
)
BRATS2023_LABELS: Mapping[int, str] = MappingProxyType(
    {0: "background", 1: "necrotic tumour core (NCR)", 2: "peritumoral oedema (ED/SNFH)", 3: "enhancing tumour (ET)"}
)
BRATS2021_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType({"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)})
BRATS2023_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType({"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)})

BTCV_LABELS: Mapping[int, str] = MappingProxyType(
    {
        0: "background",
        1: "spleen",
        2: "right kidney",
        3: "left kidney",
        4: "gallbladder",
        5: "esophagus",
        6: "liver",
        7: "stomach",
        8: "aorta",
        9: "inferior vena cava",
        10: "portal and splenic veins",
        11: "pancreas",
        12: "right adrenal gland",
        13: "left adrenal gland",
    }
)
TRANSUNET_LABELS: Mapping[int, str] = MappingProxyType(
    {
        0: "background",
        1: "spleen",
        2: "right kidney",
        3: "left kidney",
        4: "gallbladder",
        5: "liver",
        6: "stomach",
        7: "aorta",
        8: "pancreas",
    }
)
# BTCV value -> TransUNet value; the five organs not listed (esophagus, IVC, portal/splenic veins and
# both adrenal glands) become background.
BTCV_TO_TRANSUNET: Mapping[int, int] = MappingProxyType({1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 8: 7, 11: 8})

# TransUNet's preprocessing: CT clipped to this window (HU), then scaled to [0, 1].
TRANSUNET_HU_WINDOW: tuple[float, float] = (-125.0, 275.0)


def btcv_to_transunet(label: np.ndarray) -> np.ndarray:
    """Renumber a 13-organ BTCV label map to TransUNet's 8 organs.

    Args:
        label: integer array of any shape with values 0 to 13.

    Returns:
        uint8 array of the same shape with values 0 to 8.

    Raises:
        InputError: if ``label`` holds a value outside 0 to 13.
    """
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= len(BTCV_LABELS)):
        raise InputError(f"BTCV labels must lie in 0..{len(BTCV_LABELS) - 1}, got {label.min()}..{label.max()}")
    table = np.zeros(len(BTCV_LABELS), dtype=np.uint8)
    for source, target in BTCV_TO_TRANSUNET.items():
        table[source] = target
    return table[label.astype(np.intp)]


def transunet_normalise(hounsfield: np.ndarray) -> np.ndarray:
    """Clip CT values to TransUNet's window and scale them to ``[0, 1]``.

    Args:
        hounsfield: CT array of any shape in Hounsfield units.

    Returns:
        float32 array of the same shape in ``[0, 1]``.
    """
    low, high = TRANSUNET_HU_WINDOW
    clipped = np.clip(np.asarray(hounsfield, dtype=np.float32), low, high)
    return (clipped - np.float32(low)) / np.float32(high - low)
