"""Training under failure: non-finite losses, Ctrl-C, and an exception while a checkpoint is written."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

from medseg.cli import main
from medseg.config import TrainConfig
from medseg.errors import TrainingError
from medseg.pipelines import checkpoint, train as train_module
from medseg.pipelines.checkpoint import MANIFEST_NAME, load_checkpoint
from medseg.pipelines.interrupts import TrainingInterrupted
from medseg.pipelines.losses import SegmentationLoss
from medseg.pipelines.train import train
from medseg.pipelines.train_loop import NonFiniteLossWarning, TrainingLoop


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats"
    assert main(["synth", "brats", str(root), "--cases", "3", "--shape", "32", "32", "24", "--seed", "2"]) == 0
    return root


CONFIG = TrainConfig(model="unet", variant="tiny", epochs=2, steps_per_epoch=2, batch_size=2, patch_size=[16, 16, 16],
                     n_folds=2, num_workers=0, deterministic=True, device="cpu", progress=False)


def _nan_loss_on(calls: set[int] | None):
    """A loss class that returns NaN on the given call numbers (all calls when ``None``)."""
    counter = {"n": 0}

    class NanOnSomeCalls(SegmentationLoss):
        def forward(self, outputs, target):
            loss = super().forward(outputs, target)
            counter["n"] += 1
            if calls is None or counter["n"] in calls:
                return loss * float("nan")
            return loss

    return NanOnSomeCalls


def _model_tensors(run):
    tensors, state = load_checkpoint(run / "checkpoint_last")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, state


def test_a_nan_loss_skips_the_step_with_a_warning(brats, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "SegmentationLoss", _nan_loss_on({2}))
    with pytest.warns(NonFiniteLossWarning, match="step skipped"):
        result = train(brats, tmp_path / "run", CONFIG)
    assert result.skipped_steps == 1 and result.global_step == 4
    tensors, _ = load_checkpoint(tmp_path / "run" / "checkpoint_last")
    assert float(tensors["optimizer.state.0.step"]) == 3  # AdamW stepped on 3 of the 4 steps
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert '"skipped_steps": 1' in lines[0] and '"skipped_steps": 0' in lines[1]


def test_consecutive_nan_losses_stop_without_touching_the_last_good_checkpoint(brats, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(brats, run, dataclasses.replace(CONFIG, epochs=1))
    manifest_before = (run / "checkpoint_last" / MANIFEST_NAME).read_bytes()
    weights_before, state_before = _model_tensors(run)
    model_before = (run / "model" / "weights.safetensors").read_bytes()

    monkeypatch.setattr(train_module, "SegmentationLoss", _nan_loss_on(None))
    with pytest.warns(NonFiniteLossWarning), pytest.raises(TrainingError, match="2 consecutive steps") as info:
        train(brats, run, dataclasses.replace(CONFIG, epochs=3, nonfinite_patience=2), resume=True)
    assert "checkpoint_last" in str(info.value)
    assert (run / "checkpoint_last" / MANIFEST_NAME).read_bytes() == manifest_before
    weights_after, state_after = _model_tensors(run)
    assert state_after == state_before
    assert all(torch.equal(weights_before[k], weights_after[k]) for k in weights_before)
    assert (run / "model" / "weights.safetensors").read_bytes() == model_before


def _interrupt_at(monkeypatch, global_step: int, how: str):
    real_step = TrainingLoop._step

    def step(self, batch):
        if self.global_step == global_step:
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the running step still completes
        real_step(self, batch)

    monkeypatch.setattr(TrainingLoop, "_step", step)


@pytest.mark.parametrize("how, saved_step", [("raise", 1), ("signal", 2)])
def test_ctrl_c_saves_a_checkpoint_and_resume_completes_identically(brats, tmp_path, monkeypatch, how, saved_step):
    full = tmp_path / "full"
    train(brats, full, CONFIG)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 1, how)
        with pytest.raises(TrainingInterrupted) as info:
            train(brats, run, CONFIG)
    assert info.value.checkpoint == run / "checkpoint_last"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _, state = load_checkpoint(run / "checkpoint_last")
    assert state["position"]["global_step"] == saved_step

    train(brats, run, CONFIG, resume=True)
    a, _ = _model_tensors(full)
    b, _ = _model_tensors(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_exception_while_saving_a_checkpoint_keeps_the_previous_one(brats, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_write = checkpoint._write_text
    saves = {"manifests": 0}

    def failing_write(path, text):
        if path.name == MANIFEST_NAME:
            saves["manifests"] += 1
            # Epoch 1 writes checkpoint_best then checkpoint_last; fail the first write of epoch 2.
            if saves["manifests"] == 3:
                raise OSError("disk full")
        real_write(path, text)

    monkeypatch.setattr(checkpoint, "_write_text", failing_write)
    with pytest.raises(OSError, match="disk full"):
        train(brats, run, CONFIG)
    monkeypatch.undo()
    _, state = load_checkpoint(run / "checkpoint_last")
    assert state["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 2, "steps_per_epoch": 2}
    result = train(brats, run, CONFIG, resume=True)
    assert result.global_step == 4


def test_a_corrupt_training_case_is_a_one_line_input_error(tmp_path, capsys):
    root = tmp_path / "brats"
    assert main(["synth", "brats", str(root), "--cases", "5", "--shape", "32", "32", "24", "--seed", "3"]) == 0
    for path in sorted(root.glob("*/*_t2.nii.gz")):
        path.write_bytes(path.read_bytes()[:200])  # truncated gzip in every case
    args = ["train", str(root), "--model", "unet", "--variant", "tiny", "--output", str(tmp_path / "run"),
            "--epochs", "1", "--steps-per-epoch", "1", "--patch", "16", "16", "16", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("medseg train: error:") and "_t2.nii.gz" in last, last
