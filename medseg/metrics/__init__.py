"""Segmentation metrics on numpy arrays, with voxel spacing in millimetres (numpy and scipy only, no torch).

- :mod:`medseg.metrics.surface`: surfaces of masks and the distances between them.
- :mod:`medseg.metrics.binary`: Dice, HD95, normalised surface Dice, precision, recall and volumes of one
  mask pair, with the empty-mask conventions ``"brats"`` and ``"nnunet"``.
- :mod:`medseg.metrics.regions`: label maps evaluated per region (a region is a set of label values, such as
  the BraTS tumour core), and summaries over cases.

The definitions and the empty-mask truth table are in ``docs/evaluation.md``.
"""

from medseg.metrics.binary import (
    DEFAULT_NSD_TOLERANCE_MM,
    EMPTY_CONVENTIONS,
    METRIC_NAMES,
    BinaryMetrics,
    binary_metrics,
    check_convention,
    check_tolerance,
    dice,
    hd95,
    normalized_surface_dice,
    precision,
    recall,
    volume_ml,
)
from medseg.metrics.regions import (
    SUMMARY_COLUMNS,
    check_label_map,
    evaluate_case,
    normalise_regions,
    region_mask,
    summarise,
)
from medseg.metrics.surface import check_spacing, image_diagonal_mm, surface_distances, surface_voxels

__all__ = [
    "DEFAULT_NSD_TOLERANCE_MM",
    "EMPTY_CONVENTIONS",
    "METRIC_NAMES",
    "SUMMARY_COLUMNS",
    "BinaryMetrics",
    "binary_metrics",
    "check_convention",
    "check_label_map",
    "check_spacing",
    "check_tolerance",
    "dice",
    "evaluate_case",
    "hd95",
    "image_diagonal_mm",
    "normalise_regions",
    "normalized_surface_dice",
    "precision",
    "recall",
    "region_mask",
    "summarise",
    "surface_distances",
    "surface_voxels",
    "volume_ml",
]
