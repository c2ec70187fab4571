"""``medseg train --max-minutes``: a wall-clock budget that ends the run at an epoch boundary, resumable."""

from __future__ import annotations

import json

import pytest

from medseg.cli import main
from medseg.config import TrainConfig
from medseg.errors import ConfigError
from medseg.pipelines.model_folder import load_model_folder

TRAIN = ["--model", "unet", "--variant", "tiny", "--patch", "16", "16", "16", "--steps-per-epoch", "1",
         "--batch-size", "1", "--n-folds", "2", "--num-workers", "0", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "brats"
    assert main(["synth", "brats", str(root), "--cases", "2", "--shape", "24", "24", "16", "--seed", "0"]) == 0
    return root


def _epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_exhausted_budget_stops_after_the_first_epoch_with_a_usable_model_folder(brats, tmp_path, capsys):
    run = tmp_path / "run"
    # A budget far shorter than one epoch: the first epoch always runs, the second would overrun it.
    assert main(["train", str(brats), "--output", str(run), "--epochs", "3", "--max-minutes", "1e-6", *TRAIN]) == 0
    assert "another epoch would overrun --max-minutes" in capsys.readouterr().out
    assert _epochs(run) == [0]
    assert (run / "checkpoint_last").is_dir()
    load_model_folder(run / "model")

    # The budget applies to one session: a resume without it trains the remaining epochs.
    assert main(["train", str(brats), "--output", str(run), "--resume", "--no-progress"]) == 0
    assert _epochs(run) == [0, 1, 2]


def test_generous_budget_changes_nothing(brats, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(brats), "--output", str(run), "--epochs", "2", "--max-minutes", "60", *TRAIN]) == 0
    assert "trained 2 epoch(s)" in capsys.readouterr().out
    assert _epochs(run) == [0, 1]


@pytest.mark.parametrize("minutes", [0.0, -1.0, float("nan"), float("inf")])
def test_budget_must_be_a_positive_number(minutes):
    with pytest.raises(ConfigError, match="max_minutes must be a positive number"):
        TrainConfig(max_minutes=minutes).validate()
