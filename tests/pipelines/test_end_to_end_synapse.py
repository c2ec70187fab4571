"""End to end through the command line on raw Synapse (BTCV) CT volumes with a 3D U-Net: synth, train on the
native grid, segment held-out scans (another seed), evaluate the 13 organs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medseg.cli import main
from medseg.data.spec import SYNAPSE
from medseg.io import load_volume

SHAPE = ["--shape", "32", "32", "16"]
ORGANS = [name for value, name in sorted(SYNAPSE.labels.items()) if value != 0]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("synapse_e2e")
    codes = {
        "synth_train": main(["synth", "synapse", str(root / "train"), "--cases", "3", *SHAPE, "--seed", "0"]),
        "synth_test": main(["synth", "synapse", str(root / "test"), "--cases", "2", *SHAPE, "--seed", "1"]),
    }
    # Keep the native grid (no resampling), as a user would with a YAML file of training options.
    config = root / "train.yaml"
    config.write_text("preprocessing:\n  spacing: null\n")
    codes["train"] = main([
        "train", str(root / "train"), "--output", str(root / "run"), "--config", str(config),
        "--model", "unet", "--variant", "tiny", "--patch", "16", "16", "16", "--epochs", "1",
        "--steps-per-epoch", "3", "--batch-size", "2", "--n-folds", "3", "--num-workers", "0",
        "--device", "cpu", "--no-progress",
    ])
    images = root / "test" / "RawData" / "Training" / "img"
    codes["segment"] = main(["segment", str(images), "--model", str(root / "run" / "model"),
                             "--output", str(root / "pred"), "--device", "cpu"])
    codes["evaluate"] = main(["evaluate", str(root / "pred"), str(root / "test" / "RawData" / "Training" / "label"),
                              "--dataset", "synapse", "--output", str(root / "metrics.csv")])
    return root, codes


def test_every_step_exits_with_zero(flow):
    _, codes = flow
    assert codes == {"synth_train": 0, "synth_test": 0, "train": 0, "segment": 0, "evaluate": 0}


def test_model_keeps_the_native_grid(flow):
    from medseg.pipelines.model_folder import load_model_folder

    root, _ = flow
    _, config = load_model_folder(root / "run" / "model")
    assert config.spatial_dims == 3 and config.target_spacing is None and config.out_channels == 14


def test_each_scan_gets_a_label_map_with_its_exact_geometry(flow):
    root, _ = flow
    images = sorted((root / "test" / "RawData" / "Training" / "img").iterdir())
    assert sorted(p.name for p in (root / "pred").iterdir()) == [p.name for p in images]
    for path in images:
        image, predicted = load_volume(path), load_volume(root / "pred" / path.name)
        # The preset reorients to RAS; the label map must come back on the scan's own (L, P, S) grid.
        assert image.geometry.orientation == "LPS"
        image.geometry.require_match(predicted.geometry, f"prediction of {path.name}")
        assert set(np.unique(predicted.array)) <= set(range(14))


def test_metrics_csv_has_a_row_per_scan_and_organ(flow):
    root, _ = flow
    rows = list(csv.DictReader((root / "metrics.csv").open()))
    scans = ["0001", "0002"]  # img0001 / label0001 pair by their digits
    assert [(r["case"], r["region"]) for r in rows] == [(s, organ) for s in scans for organ in ORGANS]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
