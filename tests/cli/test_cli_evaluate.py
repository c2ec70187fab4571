"""``medseg evaluate``: arguments, printed table, written files, exit codes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medseg import metrics
from medseg.cli import EXIT_OK, EXIT_USAGE, main
from medseg.cli import evaluate as cli_evaluate
from medseg.io import Geometry, save_like
from medseg.pipelines import evaluate as pipeline

SHAPE = (10, 9, 6)
GEOMETRY = Geometry.from_affine(np.diag([1.0, 1.0, 2.5, 1.0]), SHAPE, dtype="uint8")


def _two_cases(tmp_path):
    references, predictions = tmp_path / "gt", tmp_path / "pred"
    for index, case in enumerate(("case_0", "case_1")):
        reference = np.zeros(SHAPE, dtype=np.uint8)
        reference[2:7, 2:7, 1:4] = 1
        reference[3:5, 3:5, 2:3] = 2
        prediction = np.roll(reference, index + 1, axis=0)
        save_like(reference, GEOMETRY, references / f"{case}.nii.gz")
        save_like(prediction, GEOMETRY, predictions / f"{case}.nii.gz")
    return predictions, references


def test_evaluate_prints_the_summary_and_writes_csv_and_json(tmp_path, capsys):
    predictions, references = _two_cases(tmp_path)
    out = tmp_path / "out" / "metrics.csv"
    code = main(["evaluate", str(predictions), str(references), "--labels", "organ=1,2", "lesion=2",
                 "--output", str(out), "--nsd-tolerance", "2.5"])
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert "2 case(s), convention brats, NSD tolerance 2.5 mm" in printed
    assert any(line.split()[:3] == ["organ", "dice", "2"] for line in printed.splitlines())
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["case"], row["region"]) for row in rows] == [
        ("case_0", "organ"), ("case_0", "lesion"), ("case_1", "organ"), ("case_1", "lesion")
    ]
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["settings"]["nsd_tolerance_mm"] == 2.5
    assert document["regions"] == {"organ": [1, 2], "lesion": [2]}
    assert (tmp_path / "out" / "metrics_summary.csv").is_file()


def test_geometry_mismatch_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    predictions, references = _two_cases(tmp_path)
    moved = np.diag([1.0, 1.0, 2.5, 1.0])
    moved[2, 3] = 5.0
    moved_geometry = Geometry.from_affine(moved, SHAPE, dtype="uint8")
    save_like(np.zeros(SHAPE, np.uint8), moved_geometry, predictions / "case_1.nii.gz")
    out = tmp_path / "metrics.csv"
    code = main(["evaluate", str(predictions), str(references), "--labels", "organ=1", "--output", str(out)])
    assert code == EXIT_USAGE
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("medseg evaluate: error: case 'case_1'") and "geometry differs" in error
    assert list(tmp_path.glob("metrics*")) == []


def test_a_missing_prediction_exits_2_naming_the_case(tmp_path, capsys):
    predictions, references = _two_cases(tmp_path)
    (predictions / "case_0.nii.gz").unlink()
    assert main(["evaluate", str(predictions), str(references), "--labels", "organ=1"]) == EXIT_USAGE
    assert "no prediction for 1 reference case(s): case_0" in capsys.readouterr().err


@pytest.mark.parametrize("labels", [["organ"], ["organ=a"], ["organ=1", "organ=2"], ["=1"]])
def test_malformed_labels_exit_2(tmp_path, capsys, labels):
    predictions, references = _two_cases(tmp_path)
    assert main(["evaluate", str(predictions), str(references), "--labels", *labels]) == EXIT_USAGE
    assert "--labels" in capsys.readouterr().err


def test_labels_or_dataset_is_required(tmp_path, capsys):
    predictions, references = _two_cases(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(predictions), str(references)])
    assert exit_info.value.code == EXIT_USAGE


def test_parse_region_reads_name_and_values():
    assert cli_evaluate.parse_region("TC=1,4") == ("TC", (1, 4))
    assert cli_evaluate.parse_region(" ET = 4") == ("ET", (4,))


def test_cli_choices_equal_the_library_constants():
    assert cli_evaluate.EMPTY_CONVENTIONS == metrics.EMPTY_CONVENTIONS
    assert cli_evaluate.DEFAULT_NSD_TOLERANCE_MM == metrics.DEFAULT_NSD_TOLERANCE_MM
    assert cli_evaluate.DATASET_CHOICES == pipeline.DATASET_CHOICES
    assert cli_evaluate.MISSING_POLICIES == pipeline.MISSING_POLICIES
