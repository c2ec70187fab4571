"""The evaluation pipeline: pairing by case id, geometry checks, dataset regions, written tables."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io import Geometry, save_like
from medseg.metrics import METRIC_NAMES, binary_metrics
from medseg.pipelines import evaluate as ev

SHAPE = (12, 10, 8)
SPACING = (1.0, 1.5, 3.0)
GEOMETRY = Geometry.from_affine(np.diag([*SPACING, 1.0]), SHAPE, dtype="uint8")


def _brats_label(seed: int, enhancing: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, dtype=np.uint8)
    a, b, c = (int(v) for v in rng.integers(2, 4, size=3))
    label[a : a + 7, b : b + 6, c : c + 4] = 2
    label[a + 1 : a + 5, b + 1 : b + 5, c + 1 : c + 3] = 1
    label[a + 2 : a + 4, b + 2 : b + 4, c + 1 : c + 3] = enhancing
    return label


def _write_brats2021(tmp_path, cases=("BraTS2021_00000", "BraTS2021_00001"), enhancing=4):
    """A BraTS-layout reference folder (images beside the labels) and a flat prediction folder."""
    references, predictions = tmp_path / "gt", tmp_path / "pred"
    expected = {}
    for index, case in enumerate(cases):
        reference = _brats_label(index, enhancing)
        prediction = np.roll(reference, 1, axis=index % 3)
        save_like(reference, GEOMETRY, references / case / f"{case}_seg.nii.gz")
        save_like(reference.astype(np.float32) * 10, GEOMETRY, references / case / f"{case}_flair.nii.gz", kind="image")
        save_like(prediction, GEOMETRY, predictions / f"{case}.nii.gz")
        expected[case] = (prediction, reference)
    return predictions, references, expected


@pytest.mark.parametrize(
    ("name", "case_id"),
    [
        ("BraTS2021_00000_seg.nii.gz", "BraTS2021_00000"),
        ("BraTS-GLI-00000-000-seg.nii.gz", "BraTS-GLI-00000-000"),
        ("BraTS-GLI-00000-000.nii.gz", "BraTS-GLI-00000-000"),
        ("label0001.nii.gz", "0001"),
        ("img0001.nii", "0001"),
        ("case_7.NII.GZ", "case_7"),
        ("segment.nii.gz", "segment"),
    ],
)
def test_case_ids_follow_the_documented_rules(name, case_id):
    assert ev.case_id_of(name) == case_id


def test_folders_pair_by_case_id_and_rows_match_the_metrics(tmp_path):
    predictions, references, expected = _write_brats2021(tmp_path)
    result = ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats2021"))
    assert [(row["case"], row["region"]) for row in result.rows] == [
        (case, region) for case in expected for region in ("TC", "WT", "ET")
    ]
    for row in result.rows:
        prediction, reference = expected[row["case"]]
        values = {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}[row["region"]]
        truth = binary_metrics(np.isin(prediction, values), np.isin(reference, values), SPACING)
        assert row["hd95"] == pytest.approx(truth.hd95)
        assert row["dice"] == pytest.approx(truth.dice)
        assert row["nsd"] == pytest.approx(truth.nsd)
        assert row["prediction_missing"] is False
    assert result.dataset == "brats2021"


def test_outputs_are_written_with_documented_columns(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path)
    out = tmp_path / "results" / "metrics.csv"
    result = ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats2021"), output=out)
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ev.CASE_COLUMNS
    assert len(rows) == 6
    assert float(rows[0]["dice"]) == result.rows[0]["dice"]  # full precision round trip
    with open(tmp_path / "results" / "metrics_summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 3 * len(METRIC_NAMES)
    document = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert document["regions"] == {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
    assert document["settings"] == {"convention": "brats", "nsd_tolerance_mm": 1.0, "missing": "error"}
    assert len(document["cases"]) == 6 and len(document["summary"]) == len(summary)
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_geometry_mismatch_is_an_error_and_nothing_is_written(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path)
    affine = np.diag([*SPACING, 1.0])
    affine[0, 3] = 2.0  # the same grid moved by 2 mm
    moved = Geometry.from_affine(affine, SHAPE, dtype="uint8")
    save_like(_brats_label(1), moved, predictions / "BraTS2021_00001.nii.gz")
    out = tmp_path / "metrics.csv"
    with pytest.raises(GeometryError, match="BraTS2021_00001.*origin"):
        ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats2021"), output=out)
    assert not list(tmp_path.glob("metrics*"))


def test_shape_mismatch_is_a_geometry_error(tmp_path):
    reference = tmp_path / "gt.nii.gz"
    prediction = tmp_path / "pred.nii.gz"
    save_like(_brats_label(0), GEOMETRY, reference)
    small = Geometry.from_affine(np.diag([*SPACING, 1.0]), (12, 10, 7), dtype="uint8")
    save_like(_brats_label(0)[..., :7], small, prediction)
    with pytest.raises(GeometryError, match="shape"):
        ev.evaluate(prediction, reference, ev.EvaluationSettings(labels={"tumour": (1, 2, 4)}))


def test_missing_predictions_are_listed_or_scored_as_empty(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path, cases=("A", "B", "C"))
    (predictions / "B.nii.gz").unlink()
    (predictions / "C.nii.gz").unlink()
    with pytest.raises(InputError, match=r"no prediction for 2 reference case\(s\): B, C"):
        ev.pair_cases(predictions, references)
    settings = ev.EvaluationSettings(labels={"WT": (1, 2, 4)}, missing="empty")
    result = ev.evaluate(predictions, references, settings)
    missed = [row for row in result.rows if row["prediction_missing"]]
    assert [row["case"] for row in missed] == ["B", "C"]
    assert all(row["dice"] == 0.0 and row["hd95"] == pytest.approx(math.hypot(12, 15, 24)) for row in missed)


def test_predictions_without_reference_are_an_error(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path)
    save_like(_brats_label(0), GEOMETRY, predictions / "BraTS2021_99999.nii.gz")
    with pytest.raises(InputError, match="without a reference.*BraTS2021_99999"):
        ev.pair_cases(predictions, references)


def test_duplicate_case_ids_in_a_folder_are_an_error(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path)
    save_like(_brats_label(0), GEOMETRY, predictions / "BraTS2021_00000.nii")
    with pytest.raises(InputError, match="two files give case id 'BraTS2021_00000'"):
        ev.pair_cases(predictions, references)


def test_file_and_folder_cannot_be_mixed(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path)
    with pytest.raises(InputError, match="two files or two folders"):
        ev.pair_cases(predictions / "BraTS2021_00000.nii.gz", references)


def test_brats_tells_2023_from_2021_and_refuses_a_mix(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path, cases=("a", "b"), enhancing=3)
    result = ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats"))
    assert result.dataset == "brats2023"
    assert result.regions["ET"] == (3,)
    assert min(row["dice"] for row in result.rows if row["region"] == "ET") > 0
    save_like(_brats_label(1, enhancing=4), GEOMETRY, references / "b" / "b_seg.nii.gz")
    save_like(_brats_label(1, enhancing=4), GEOMETRY, predictions / "b.nii.gz")
    with pytest.raises(InputError, match="'a' uses brats2023 labels but case 'b' uses brats2021"):
        ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats"))


def test_label_values_outside_the_dataset_are_an_error(tmp_path):
    predictions, references, _ = _write_brats2021(tmp_path, cases=("a",), enhancing=3)
    with pytest.raises(InputError, match=r"label value\(s\) \[3\] that brats2021 does not have"):
        ev.evaluate(predictions, references, ev.EvaluationSettings(dataset="brats2021"))


def test_synapse_regions_are_the_organs():
    regions = ev.dataset_regions("synapse")
    assert len(regions) == 13 and regions["spleen"] == (1,) and regions["left adrenal gland"] == (13,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either"),
        ({"labels": {"a": 1}, "dataset": "brats"}, "either"),
        ({"dataset": "brats2022"}, "valid: brats, brats2021"),
        ({"labels": {"a": 1}, "convention": "nnU-Net"}, "valid: brats, nnunet"),
        ({"labels": {"a": 1}, "nsd_tolerance_mm": -1}, "tolerance"),
        ({"labels": {"a": 1}, "missing": "skip"}, "valid: empty, error"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ev.EvaluationSettings(**kwargs)


def test_output_must_be_a_csv_path(tmp_path):
    with pytest.raises(ConfigError, match=r"ending in \.csv"):
        ev.output_paths(tmp_path / "metrics.json")


def test_summary_table_lists_each_region_and_metric():
    summary = [
        {"region": "ET", "metric": "dice", "n": 2, "mean": 0.5, "median": 0.5, "std": 0.25},
        {"region": "ET", "metric": "pred_volume_ml", "n": 2, "mean": 1.0, "median": 1.0, "std": 0.0},
    ]
    lines = ev.format_summary(summary).splitlines()
    assert lines[0].split() == ["region", "metric", "n", "mean", "median", "std"]
    assert lines[1].split() == ["ET", "dice", "2", "0.5000", "0.5000", "0.2500"]
    assert len(lines) == 2
