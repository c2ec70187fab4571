"""Metrics of one binary prediction mask against one binary reference mask, with empty-mask conventions.

Definitions (``P`` prediction, ``G`` reference, both sets of voxels; surfaces as in
:mod:`medseg.metrics.surface`):

- Dice ``2|P & G| / (|P| + |G|)``; precision ``|P & G| / |P|``; recall ``|P & G| / |G|``.
- HD95: the 95th percentile (numpy's linear interpolation) of the distances from every surface voxel of
  ``P`` to the surface of ``G`` and from every surface voxel of ``G`` to the surface of ``P``, pooled:
  exactly ``medpy.metric.binary.hd95``.
- NSD at tolerance ``tau``: the number of surface voxels of both masks within ``tau`` (``<=``) of the other
  surface, divided by the number of surface voxels of both: the voxel-surface approximation of DeepMind's
  surfel-area NSD, equal to MONAI's ``compute_surface_dice(use_subvoxels=False)``.
- Volumes in millilitres: voxel count times voxel volume / 1000.

Empty masks follow :data:`EMPTY_CONVENTIONS`; a structure present in only one of the masks always gets the
image diagonal as HD95, so a missed structure never drops out of an HD95 mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError, unknown_choice
from medseg.metrics.surface import as_mask_pair, check_spacing, image_diagonal_mm, surface_distances

#: Conventions for empty masks.
#: ``"brats"``: both empty scores perfectly (Dice 1, HD95 0, NSD 1, precision 1, recall 1); exactly one empty
#: scores worst (Dice 0, HD95 = image diagonal, NSD 0, precision 0, recall 0).
#: ``"nnunet"``: both empty is NaN for every metric (left out of the means); exactly one empty gives Dice 0,
#: HD95 = image diagonal, NSD 0, and NaN for the ratio that is 0/0 (precision of an empty prediction,
#: recall of an empty reference), the other ratio being 0.
EMPTY_CONVENTIONS: tuple[str, ...] = ("brats", "nnunet")

#: Default NSD tolerance in millimetres.
DEFAULT_NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class BinaryMetrics:
    """All metrics of one prediction mask against one reference mask.

    Attributes:
        dice: Dice coefficient in [0, 1].
        hd95: 95th percentile of the pooled symmetric surface distances, in mm.
        nsd: normalised surface Dice at the requested tolerance, in [0, 1].
        precision: fraction of the prediction inside the reference.
        recall: fraction of the reference inside the prediction (sensitivity).
        pred_volume_ml: volume of the prediction in millilitres.
        gt_volume_ml: volume of the reference in millilitres.
    """

    dice: float
    hd95: float
    nsd: float
    precision: float
    recall: float
    pred_volume_ml: float
    gt_volume_ml: float


#: The metric fields of :class:`BinaryMetrics`, in output order.
METRIC_NAMES: tuple[str, ...] = tuple(BinaryMetrics.__dataclass_fields__)


def check_convention(convention: str) -> str:
    """Return ``convention`` if it names an empty-mask convention, else raise.

    Args:
        convention: ``"brats"`` or ``"nnunet"``.

    Returns:
        The convention, unchanged.

    Raises:
        ConfigError: for any other name, listing the valid ones.
    """
    if convention not in EMPTY_CONVENTIONS:
        raise unknown_choice("empty-mask convention", convention, EMPTY_CONVENTIONS)
    return convention


def check_tolerance(tolerance_mm: float) -> float:
    """Validate an NSD tolerance.

    Args:
        tolerance_mm: the tolerance in millimetres.

    Returns:
        The tolerance as a float.

    Raises:
        ConfigError: if it is negative or not finite.
    """
    value = float(tolerance_mm)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"NSD tolerance must be a finite number of millimetres >= 0, got {tolerance_mm!r}")
    return value


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a mask in millilitres (cubic centimetres).

    Args:
        mask: array of any shape; nonzero voxels are foreground.
        spacing: millimetres per voxel along each axis.

    Returns:
        The number of foreground voxels times the voxel volume, divided by 1000.
    """
    return float(np.count_nonzero(mask) * math.prod(spacing) / 1000.0)


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float],
    *,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    convention: str = "brats",
) -> BinaryMetrics:
    """Every metric of a prediction mask against a reference mask, computing the surfaces once.

    Args:
        pred: prediction mask, shape ``(i, j, k)`` (any number of axes); nonzero is foreground.
        gt: reference mask of the same shape.
        spacing: millimetres per voxel along each axis (or one number for all).
        nsd_tolerance_mm: NSD tolerance in millimetres.
        convention: empty-mask convention, ``"brats"`` or ``"nnunet"`` (see :data:`EMPTY_CONVENTIONS`).

    Returns:
        The metrics.

    Raises:
        GeometryError: if the shapes differ.
        InputError: if the spacing does not fit the arrays.
        ConfigError: for an unknown convention or an invalid tolerance.
    """
    pred_mask, gt_mask = as_mask_pair(pred, gt)
    sampling = check_spacing(spacing, pred_mask.ndim)
    tolerance = check_tolerance(nsd_tolerance_mm)
    check_convention(convention)
    counts = _Counts.of(pred_mask, gt_mask)

    if counts.pred and counts.gt:
        pooled = np.concatenate(surface_distances(pred_mask, gt_mask, sampling))
        hd = float(np.percentile(pooled, 95))
        nsd = float(np.count_nonzero(pooled <= tolerance) / pooled.size)
    elif counts.pred or counts.gt:
        # A structure present in only one mask gets the worst distance, under both conventions.
        hd = image_diagonal_mm(pred_mask.shape, sampling)
        nsd = 0.0
    else:
        hd = 0.0 if convention == "brats" else math.nan
        nsd = 1.0 if convention == "brats" else math.nan

    return BinaryMetrics(
        dice=_dice_from_counts(counts, convention),
        hd95=hd,
        nsd=nsd,
        precision=_ratio(counts.tp, counts.pred, counts, convention),
        recall=_ratio(counts.tp, counts.gt, counts, convention),
        pred_volume_ml=volume_ml(pred_mask, sampling),
        gt_volume_ml=volume_ml(gt_mask, sampling),
    )


def dice(pred: np.ndarray, gt: np.ndarray, *, convention: str = "brats") -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of two masks.

    Args:
        pred: prediction mask; nonzero is foreground.
        gt: reference mask of the same shape.
        convention: both empty gives 1 (``"brats"``) or NaN (``"nnunet"``).

    Returns:
        The Dice coefficient in [0, 1], or NaN.
    """
    counts = _Counts.of(*as_mask_pair(pred, gt))
    return _dice_from_counts(counts, check_convention(convention))


def precision(pred: np.ndarray, gt: np.ndarray, *, convention: str = "brats") -> float:
    """Precision ``|P & G| / |P|``: the fraction of the prediction that is correct.

    Args:
        pred: prediction mask; nonzero is foreground.
        gt: reference mask of the same shape.
        convention: for an empty prediction, ``"brats"`` gives 1 (reference empty too) or 0, ``"nnunet"`` NaN.

    Returns:
        The precision in [0, 1], or NaN.
    """
    counts = _Counts.of(*as_mask_pair(pred, gt))
    return _ratio(counts.tp, counts.pred, counts, check_convention(convention))


def recall(pred: np.ndarray, gt: np.ndarray, *, convention: str = "brats") -> float:
    """Recall (sensitivity) ``|P & G| / |G|``: the fraction of the reference that is found.

    Args:
        pred: prediction mask; nonzero is foreground.
        gt: reference mask of the same shape.
        convention: for an empty reference, ``"brats"`` gives 1 (prediction empty too) or 0, ``"nnunet"`` NaN.

    Returns:
        The recall in [0, 1], or NaN.
    """
    counts = _Counts.of(*as_mask_pair(pred, gt))
    return _ratio(counts.tp, counts.gt, counts, check_convention(convention))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float], *, convention: str = "brats") -> float:
    """95th percentile Hausdorff distance in millimetres (medpy's definition; see the module docstring).

    Args:
        pred: prediction mask; nonzero is foreground.
        gt: reference mask of the same shape.
        spacing: millimetres per voxel along each axis (or one number for all).
        convention: both empty gives 0 (``"brats"``) or NaN (``"nnunet"``); exactly one empty gives the
            image diagonal under both.

    Returns:
        HD95 in millimetres, or NaN.
    """
    return binary_metrics(pred, gt, spacing, convention=convention).hd95


def normalized_surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float],
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    *,
    convention: str = "brats",
) -> float:
    """Normalised surface Dice: the fraction of both surfaces within ``tolerance_mm`` of the other surface.

    Args:
        pred: prediction mask; nonzero is foreground.
        gt: reference mask of the same shape.
        spacing: millimetres per voxel along each axis (or one number for all).
        tolerance_mm: the tolerance in millimetres, ``>= 0``; a distance equal to it counts.
        convention: both empty gives 1 (``"brats"``) or NaN (``"nnunet"``); exactly one empty gives 0 under both.

    Returns:
        NSD in [0, 1], or NaN.
    """
    return binary_metrics(pred, gt, spacing, nsd_tolerance_mm=tolerance_mm, convention=convention).nsd


@dataclass(frozen=True)
class _Counts:
    """Voxel counts of a mask pair: true positives, prediction size, reference size."""

    tp: int
    pred: int
    gt: int

    @classmethod
    def of(cls, pred: np.ndarray, gt: np.ndarray) -> _Counts:
        return cls(int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred)), int(np.count_nonzero(gt)))


def _dice_from_counts(counts: _Counts, convention: str) -> float:
    if counts.pred + counts.gt == 0:
        return 1.0 if convention == "brats" else math.nan
    return 2.0 * counts.tp / (counts.pred + counts.gt)


def _ratio(numerator: int, denominator: int, counts: _Counts, convention: str) -> float:
    """``numerator / denominator`` with the convention's value for 0/0."""
    if denominator:
        return numerator / denominator
    if convention == "nnunet":
        return math.nan
    return 1.0 if counts.pred == 0 and counts.gt == 0 else 0.0
