"""The empty-mask truth table of both conventions (docs/evaluation.md lists the same table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg import metrics

SHAPE = (6, 5, 4)
SPACING = (1.0, 2.0, 3.0)
DIAGONAL = math.sqrt(6.0**2 + 10.0**2 + 12.0**2)
NAN = math.nan

EMPTY = np.zeros(SHAPE, dtype=bool)
PRESENT = np.zeros(SHAPE, dtype=bool)
PRESENT[1:3, 1:3, 1:3] = True
VOLUME = 8 * 6.0 / 1000

# (prediction, reference, convention) -> (dice, hd95, nsd, precision, recall)
TRUTH_TABLE = [
    ("empty", "empty", "brats", (1.0, 0.0, 1.0, 1.0, 1.0)),
    ("empty", "present", "brats", (0.0, DIAGONAL, 0.0, 0.0, 0.0)),
    ("present", "empty", "brats", (0.0, DIAGONAL, 0.0, 0.0, 0.0)),
    ("empty", "empty", "nnunet", (NAN, NAN, NAN, NAN, NAN)),
    ("empty", "present", "nnunet", (0.0, DIAGONAL, 0.0, NAN, 0.0)),
    ("present", "empty", "nnunet", (0.0, DIAGONAL, 0.0, 0.0, NAN)),
]
MASKS = {"empty": EMPTY, "present": PRESENT}


@pytest.mark.parametrize(("pred", "gt", "convention", "expected"), TRUTH_TABLE)
def test_empty_mask_truth_table(pred, gt, convention, expected):
    result = metrics.binary_metrics(MASKS[pred], MASKS[gt], SPACING, convention=convention)
    got = (result.dice, result.hd95, result.nsd, result.precision, result.recall)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert result.pred_volume_ml == pytest.approx(VOLUME if pred == "present" else 0.0)
    assert result.gt_volume_ml == pytest.approx(VOLUME if gt == "present" else 0.0)


@pytest.mark.parametrize(("pred", "gt", "convention", "expected"), TRUTH_TABLE)
def test_single_metric_functions_follow_the_same_table(pred, gt, convention, expected):
    p, g = MASKS[pred], MASKS[gt]
    got = (
        metrics.dice(p, g, convention=convention),
        metrics.hd95(p, g, SPACING, convention=convention),
        metrics.normalized_surface_dice(p, g, SPACING, 1.0, convention=convention),
        metrics.precision(p, g, convention=convention),
        metrics.recall(p, g, convention=convention),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("convention", metrics.EMPTY_CONVENTIONS)
def test_a_missed_structure_never_drops_out_of_the_hd95_mean(convention):
    labels = {"A": 1}
    reference = np.zeros(SHAPE, dtype=np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    found = metrics.evaluate_case(reference, reference, SPACING, labels, case_id="found", convention=convention)
    missed = metrics.evaluate_case(
        np.zeros_like(reference), reference, SPACING, labels, case_id="missed", convention=convention
    )
    summary = {row["metric"]: row for row in metrics.summarise(found + missed)}
    assert summary["hd95"]["n"] == 2
    assert summary["hd95"]["mean"] == pytest.approx(DIAGONAL / 2)
    assert summary["dice"]["mean"] == pytest.approx(0.5)


def test_nnunet_convention_leaves_cases_empty_in_both_out_of_the_means():
    labels = {"A": 1}
    reference = np.zeros(SHAPE, dtype=np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    rows = metrics.evaluate_case(reference, reference, SPACING, labels, case_id="a", convention="nnunet")
    rows += metrics.evaluate_case(
        np.zeros_like(reference), np.zeros_like(reference), SPACING, labels, case_id="b", convention="nnunet"
    )
    summary = {row["metric"]: row for row in metrics.summarise(rows)}
    assert summary["dice"]["n"] == 1 and summary["dice"]["mean"] == 1.0
    assert summary["gt_volume_ml"]["n"] == 2  # volumes are never NaN
    brats_rows = metrics.evaluate_case(
        np.zeros_like(reference), np.zeros_like(reference), SPACING, labels, case_id="b", convention="brats"
    )
    assert brats_rows[0]["dice"] == 1.0 and brats_rows[0]["hd95"] == 0.0
