"""Label maps evaluated per region, and summaries over cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg import metrics
from medseg.errors import ConfigError, GeometryError, InputError

BRATS2021 = {"ET": 4, "TC": (1, 4), "WT": (1, 2, 4)}


def _brats_reference():
    reference = np.zeros((10, 10, 10), dtype=np.uint8)
    reference[2:8, 2:8, 2:8] = 2  # edema
    reference[3:7, 3:7, 3:7] = 1  # necrosis
    reference[4:6, 4:6, 4:6] = 4  # enhancing tumour
    return reference


def test_regions_are_unions_of_their_label_values():
    reference = _brats_reference()
    prediction = reference.copy()
    prediction[prediction == 4] = 1  # enhancing tumour called necrosis: ET missed, TC and WT perfect
    rows = metrics.evaluate_case(prediction, reference, (1.0, 1.0, 1.0), BRATS2021, case_id="c1")
    by_region = {row["region"]: row for row in rows}
    assert [row["region"] for row in rows] == ["ET", "TC", "WT"]
    assert by_region["ET"]["dice"] == 0.0
    assert by_region["ET"]["hd95"] == pytest.approx(math.sqrt(300.0))  # missed: the image diagonal
    assert by_region["TC"]["dice"] == 1.0 and by_region["TC"]["hd95"] == 0.0
    assert by_region["WT"]["dice"] == 1.0
    assert by_region["WT"]["gt_volume_ml"] == pytest.approx(6**3 / 1000)
    assert all(row["case"] == "c1" for row in rows)
    assert set(rows[0]) == {"case", "region", *metrics.METRIC_NAMES}


def test_region_values_match_a_single_label_evaluation():
    rng = np.random.default_rng(3)
    prediction = rng.integers(0, 4, size=(7, 6, 5))
    reference = rng.integers(0, 4, size=(7, 6, 5))
    spacing = (0.9, 1.1, 2.5)
    rows = metrics.evaluate_case(prediction, reference, spacing, {"two": 2, "one_or_three": (1, 3)})
    expected_two = metrics.binary_metrics(prediction == 2, reference == 2, spacing)
    union = metrics.binary_metrics(np.isin(prediction, (1, 3)), np.isin(reference, (1, 3)), spacing)
    assert rows[0]["dice"] == expected_two.dice and rows[0]["hd95"] == expected_two.hd95
    assert rows[1]["nsd"] == union.nsd and rows[1]["hd95"] == union.hd95


def test_float_label_maps_with_integer_values_are_accepted():
    reference = _brats_reference()
    rows = metrics.evaluate_case(reference.astype(np.float32), reference, 1.0, BRATS2021)
    assert [row["dice"] for row in rows] == [1.0, 1.0, 1.0]


def test_probability_maps_are_refused():
    reference = _brats_reference()
    with pytest.raises(InputError, match="case 'x' prediction.*non-integer"):
        metrics.evaluate_case(reference * 0.3, reference, 1.0, BRATS2021, case_id="x")


def test_shape_mismatch_names_the_case():
    with pytest.raises(GeometryError, match="case 'x'.*shape"):
        metrics.evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), 1.0, {"a": 1}, case_id="x")


@pytest.mark.parametrize(
    ("labels", "message"),
    [({}, "no regions"), ({"a": 0}, "0 is background"), ({"a": (1.5,)}, "integers"), ({" ": 1}, "blank"),
     ({"a": ()}, "needs label values")],
)
def test_invalid_region_tables_are_refused(labels, message):
    with pytest.raises(ConfigError, match=message):
        metrics.normalise_regions(labels)


def test_region_tables_are_normalised_to_sorted_tuples():
    assert metrics.normalise_regions({"WT": [4, 1, 2, 1], "ET": np.int64(4)}) == {"WT": (1, 2, 4), "ET": (4,)}


def test_summary_statistics_per_region_and_metric():
    rows = [
        {"case": "a", "region": "R", "dice": 0.2},
        {"case": "b", "region": "R", "dice": 0.4},
        {"case": "c", "region": "R", "dice": 0.9},
        {"case": "d", "region": "R", "dice": math.nan},
        {"case": "a", "region": "S", "dice": math.nan},
    ]
    summary = metrics.summarise(rows, metrics=("dice",))
    r, s = summary
    assert (r["region"], r["metric"], r["n"]) == ("R", "dice", 3)
    assert r["mean"] == pytest.approx(0.5)
    assert r["median"] == pytest.approx(0.4)
    assert r["std"] == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert s["n"] == 0 and math.isnan(s["mean"]) and math.isnan(s["std"])
    assert tuple(r) == metrics.SUMMARY_COLUMNS
