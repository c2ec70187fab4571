"""End to end through the command line, as a user would: synth BraTS 2021, train the 3D U-Net, segment
held-out cases (another seed), evaluate TC/WT/ET."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medseg.cli import main
from medseg.io import load_volume

SHAPE = ["--shape", "32", "32", "24"]
REGIONS = {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two masks, 1 when both are empty (the BraTS convention, medseg evaluate's default)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats_e2e")
    codes = {
        "synth_train": main(["synth", "brats", str(root / "train"), "--cases", "3", *SHAPE, "--seed", "0"]),
        "synth_test": main(["synth", "brats", str(root / "test"), "--cases", "2", *SHAPE, "--seed", "1"]),
    }
    codes["train"] = main([
        "train", str(root / "train"), "--output", str(root / "run"), "--model", "unet", "--variant", "tiny",
        "--patch", "16", "16", "16", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "2",
        "--n-folds", "3", "--num-workers", "0", "--device", "cpu", "--no-progress",
    ])
    codes["segment"] = main(["segment", str(root / "test"), "--model", str(root / "run" / "model"),
                             "--output", str(root / "pred"), "--device", "cpu"])
    codes["evaluate"] = main(["evaluate", str(root / "pred"), str(root / "test"), "--dataset", "brats2021",
                              "--output", str(root / "metrics.csv")])
    return root, codes


def test_every_step_exits_with_zero(flow):
    _, codes = flow
    assert codes == {"synth_train": 0, "synth_test": 0, "train": 0, "segment": 0, "evaluate": 0}


def test_each_held_out_case_gets_a_label_map_on_its_input_grid(flow):
    root, _ = flow
    cases = sorted(p.name for p in (root / "test").iterdir())
    assert sorted(p.name for p in (root / "pred").iterdir()) == [f"{case}.nii.gz" for case in cases]
    for case in cases:
        image = load_volume(root / "test" / case / f"{case}_t1.nii.gz")
        predicted = load_volume(root / "pred" / f"{case}.nii.gz")
        image.geometry.require_match(predicted.geometry, f"prediction of {case}")
        assert predicted.array.dtype == np.uint8
        assert set(np.unique(predicted.array)) <= {0, 1, 2, 4}  # BraTS 2021 labels, ET written as 4


def test_metrics_csv_has_tc_wt_et_rows_matching_the_files(flow):
    root, _ = flow
    rows = list(csv.DictReader((root / "metrics.csv").open()))
    cases = sorted(p.name for p in (root / "test").iterdir())
    assert [(r["case"], r["region"]) for r in rows] == [(c, region) for c in cases for region in REGIONS]
    for row in rows:
        predicted = load_volume(root / "pred" / f"{row['case']}.nii.gz").array
        reference = load_volume(root / "test" / row["case"] / f"{row['case']}_seg.nii.gz").array
        values = REGIONS[row["region"]]
        expected = dice(np.isin(predicted, values), np.isin(reference, values))
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-12)
    assert (root / "metrics_summary.csv").is_file() and (root / "metrics.json").is_file()
