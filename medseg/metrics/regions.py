"""Label maps evaluated region by region, and per-region summaries over cases.

A *region* is a named set of label values whose union is compared, so one class (``{"liver": 6}``) and a
union of classes (the BraTS 2021 tumour core ``{"TC": (1, 4)}``) are handled alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.metrics.binary import DEFAULT_NSD_TOLERANCE_MM, METRIC_NAMES, binary_metrics
from medseg.metrics.surface import check_same_shape

#: Columns of the summary rows of :func:`summarise`.
SUMMARY_COLUMNS: tuple[str, ...] = ("region", "metric", "n", "mean", "median", "std")


def normalise_regions(labels: Mapping[str, int | Iterable[int]]) -> dict[str, tuple[int, ...]]:
    """Check a region table and return every region as a sorted tuple of distinct label values.

    Args:
        labels: region name -> label value or label values, e.g. ``{"ET": 4, "TC": (1, 4)}``.

    Returns:
        ``{name: (value, ...)}`` in the input order.

    Raises:
        ConfigError: if the table is empty, a name is blank, or a region has no value, a value that is not an
            integer, or a value <= 0 (label 0 is background).
    """
    if not labels:
        raise ConfigError("no regions to evaluate: give at least one region NAME=VALUE[,VALUE...]")
    regions: dict[str, tuple[int, ...]] = {}
    for name, values in labels.items():
        if not str(name).strip():
            raise ConfigError(f"region names must not be blank, got {name!r}")
        region = _as_label_values(values)
        if region is None:
            raise ConfigError(f"region {name!r}: label values must be integers, got {values!r}")
        if not region or region[0] <= 0:
            raise ConfigError(f"region {name!r}: needs label values > 0 (0 is background), got {values!r}")
        regions[str(name)] = region
    return regions


def region_mask(label_map: np.ndarray, values: int | Iterable[int]) -> np.ndarray:
    """The binary mask of a region: voxels whose label is one of ``values``.

    Args:
        label_map: label map, any shape.
        values: one label value or several (their union).

    Returns:
        Boolean array of the same shape.
    """
    chosen = (values,) if isinstance(values, (int, np.integer)) else tuple(values)
    return np.isin(label_map, np.asarray(chosen))


def check_label_map(array: np.ndarray, what: str) -> None:
    """Raise unless ``array`` holds integer labels (integer dtype, or floats with integer values).

    Args:
        array: the label map.
        what: names it in the message, e.g. ``"prediction case_001.nii.gz"``.

    Raises:
        InputError: for other dtypes, or floats that are not all integers (probabilities, images).
    """
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{what}: label map has dtype {array.dtype}; expected integer labels")
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise InputError(
            f"{what}: label map holds non-integer values (dtype {array.dtype}); "
            "expected a label map, not probabilities or an image"
        )


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float],
    labels: Mapping[str, int | tuple[int, ...]],
    *,
    case_id: str = "",
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    convention: str = "brats",
) -> list[dict[str, object]]:
    """Evaluate a predicted label map against a reference label map, region by region.

    Args:
        pred: predicted label map, shape ``(i, j, k)`` (any number of axes), integer labels.
        gt: reference label map of the same shape.
        spacing: millimetres per voxel along each axis.
        labels: region name -> label value or tuple of label values (a region is the union of its values,
            e.g. BraTS 2021 ``{"ET": 4, "TC": (1, 4), "WT": (1, 2, 4)}``).
        case_id: the case identifier written into every row and named in errors.
        nsd_tolerance_mm: NSD tolerance in millimetres.
        convention: empty-mask convention, ``"brats"`` or ``"nnunet"``.

    Returns:
        One row per region, in the order of ``labels``: ``{"case", "region", *METRIC_NAMES}``.

    Raises:
        GeometryError: if the shapes differ.
        InputError: if a map does not hold integer labels, or the spacing does not fit.
        ConfigError: for an invalid region table, convention or tolerance.
    """
    regions = normalise_regions(labels)
    pred_map, gt_map = np.asarray(pred), np.asarray(gt)
    check_same_shape(pred_map, gt_map, case_id)
    where = f"case {case_id!r} " if case_id else ""
    check_label_map(pred_map, f"{where}prediction")
    check_label_map(gt_map, f"{where}reference")
    rows: list[dict[str, object]] = []
    for name, values in regions.items():
        result = binary_metrics(
            region_mask(pred_map, values),
            region_mask(gt_map, values),
            spacing,
            nsd_tolerance_mm=nsd_tolerance_mm,
            convention=convention,
        )
        rows.append({"case": case_id, "region": name, **asdict(result)})
    return rows


def summarise(
    rows: Iterable[Mapping[str, object]], metrics: Sequence[str] = METRIC_NAMES
) -> list[dict[str, object]]:
    """Mean, median and standard deviation of every metric per region, leaving NaN values out.

    The standard deviation is the population one (``ddof=0``). Under the ``"nnunet"`` convention a region
    empty in both masks is NaN and does not count; ``n`` says how many values entered each statistic.

    Args:
        rows: rows of :func:`evaluate_case` (any number of cases).
        metrics: the metric columns to summarise.

    Returns:
        One row per region and metric (regions in first-seen order, metrics in the given order) with the
        keys of :data:`SUMMARY_COLUMNS`; the statistics are NaN when ``n`` is 0.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        per_metric = values.setdefault(str(row["region"]), {metric: [] for metric in metrics})
        for metric in metrics:
            per_metric[metric].append(float(row[metric]))  # type: ignore[arg-type]
    summary: list[dict[str, object]] = []
    for region, per_metric in values.items():
        for metric in metrics:
            column = np.asarray(per_metric[metric], dtype=np.float64)
            column = column[~np.isnan(column)]
            if column.size:
                mean, median, std = float(column.mean()), float(np.median(column)), float(column.std())
            else:
                mean = median = std = math.nan
            summary.append(
                {"region": region, "metric": metric, "n": int(column.size), "mean": mean, "median": median, "std": std}
            )
    return summary


def _as_label_values(values: int | Iterable[int]) -> tuple[int, ...] | None:
    """Sorted distinct integer label values, or None if any value is not an integer."""
    if isinstance(values, bool):
        return None
    if isinstance(values, (int, np.integer)):
        return (int(values),)
    if isinstance(values, str):
        return None
    converted: set[int] = set()
    try:
        for value in values:
            if isinstance(value, bool) or not float(value).is_integer():
                return None
            converted.add(int(value))
    except (TypeError, ValueError):
        return None
    return tuple(sorted(converted))
