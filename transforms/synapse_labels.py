"""Synapse multi-organ labels: the 13 original classes and TransUNet's 8-organ subset."""

from __future__ import annotations

import numpy as np
import torch

from medseg.data.labels import BTCV_LABELS, BTCV_TO_TRANSUNET, TRANSUNET_LABELS
from medseg.transforms.label_values import ArrayLike, check_label_values

SYNAPSE_ORGANS = tuple(name for value, name in sorted(BTCV_LABELS.items()) if value)
"""Names of Synapse labels 1..13 (0 is background)."""

TRANSUNET_ORGANS = tuple(name for value, name in sorted(TRANSUNET_LABELS.items()) if value)
"""Names of TransUNet labels 1..8 (0 is background)."""

# Index: Synapse label 0..13; value: TransUNet label (organs TransUNet does not evaluate become background).
_SYNAPSE_TO_TRANSUNET = np.zeros(len(BTCV_LABELS), dtype=np.uint8)
_SYNAPSE_TO_TRANSUNET[list(BTCV_TO_TRANSUNET)] = list(BTCV_TO_TRANSUNET.values())


def synapse_to_transunet(label: ArrayLike, what: str = "Synapse label map") -> ArrayLike:
    """Remap a 13-organ Synapse label map to TransUNet's 8 organs.

    1 spleen -> 1, 2 right kidney -> 2, 3 left kidney -> 3, 4 gallbladder -> 4, 6 liver -> 5, 7 stomach -> 6,
    8 aorta -> 7, 11 pancreas -> 8; the other organs (5, 9, 10, 12, 13) become background 0.

    Args:
        label: label map of any shape with values 0..13, numpy array or torch tensor.
        what: names the map in error messages.

    Returns:
        uint8 label map of the same shape with values 0..8, a tensor on ``label``'s device when ``label``
        is a tensor, else a numpy array.

    Raises:
        InputError: if ``label`` holds values outside 0..13, naming them.
    """
    check_label_values(label, range(len(SYNAPSE_ORGANS) + 1), what)
    if isinstance(label, torch.Tensor):
        table = torch.as_tensor(_SYNAPSE_TO_TRANSUNET, device=label.device)
        return table[label.as_subclass(torch.Tensor).long()]
    return _SYNAPSE_TO_TRANSUNET[np.asarray(label).astype(np.int64)]
