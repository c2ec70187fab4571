"""Exact resume: N steps in one run equal N/2 steps, a stop, a resume and the rest, bit for bit (CPU)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from medseg.cli import main
from medseg.config import TrainConfig
from medseg.errors import ConfigError
from medseg.pipelines.checkpoint import load_checkpoint
from medseg.pipelines.train import train


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats"
    assert main(["synth", "brats", str(root), "--cases", "4", "--shape", "32", "32", "24", "--seed", "1"]) == 0
    return root


CONFIG = TrainConfig(model="unet", variant="tiny", epochs=2, steps_per_epoch=2, batch_size=2, patch_size=[16, 16, 16],
                     n_folds=2, num_workers=0, deterministic=True, device="cpu", progress=False)


@pytest.fixture(scope="module")
def uninterrupted(brats, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "full"
    train(brats, run, CONFIG)
    return run


def _assert_same_training_state(run_a, run_b):
    a, state_a = load_checkpoint(run_a / "checkpoint_last")
    b, state_b = load_checkpoint(run_b / "checkpoint_last")
    assert set(a) == set(b)
    parameters = [k for k in a if k.startswith("model.")]
    assert parameters
    for key in a:
        if key.startswith(("model.", "optimizer.")):
            assert torch.equal(a[key], b[key]), key
    assert state_a["optimizer"] == state_b["optimizer"]
    assert state_a["position"] == state_b["position"]


@pytest.mark.parametrize("stop_after", [2, 3])  # at an epoch boundary, and in the middle of an epoch
def test_stop_and_resume_equals_uninterrupted_run_bitwise(brats, uninterrupted, tmp_path, stop_after):
    run = tmp_path / "run"
    first = train(brats, run, dataclasses.replace(CONFIG, max_steps=stop_after))
    assert first.stopped_at_max_steps and first.global_step == stop_after
    _, state = load_checkpoint(run / "checkpoint_last")
    assert state["position"]["global_step"] == stop_after

    second = train(brats, run, CONFIG, resume=True)
    assert second.global_step == 4 and not second.stopped_at_max_steps
    _assert_same_training_state(uninterrupted, run)
    # The model folders agree too, and so does the metrics log except for wall-clock times.
    weights_a = load_file(uninterrupted / "model" / "weights.safetensors")
    weights_b = load_file(run / "model" / "weights.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    def without_times(path):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("time", "epoch_time")} for r in records]

    assert without_times(uninterrupted / "metrics.jsonl") == without_times(run / "metrics.jsonl")


def test_a_different_seed_gives_different_weights(brats, uninterrupted, tmp_path):
    # Guards the test above against passing trivially.
    train(brats, tmp_path / "run", dataclasses.replace(CONFIG, seed=1, epochs=1))
    a, _ = load_checkpoint(uninterrupted / "checkpoint_best")
    b, _ = load_checkpoint(tmp_path / "run" / "checkpoint_last")
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_resume_refuses_a_changed_configuration_and_new_runs_refuse_a_used_folder(brats, tmp_path):
    run = tmp_path / "run"
    train(brats, run, dataclasses.replace(CONFIG, max_steps=1))
    with pytest.raises(ConfigError, match="lr"):
        train(brats, run, dataclasses.replace(CONFIG, lr=0.5), resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(brats, run, CONFIG)
    with pytest.raises(Exception, match="holds no checkpoint"):
        train(brats, tmp_path / "empty", CONFIG, resume=True)
