"""`medseg train` and `medseg export` on the command line: outputs, resume, Ctrl-C, config errors."""

from __future__ import annotations

import pytest

from medseg.cli import main
from medseg.config import load_train_config
from medseg.pipelines.train_loop import TrainingLoop


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats"
    assert main(["synth", "brats", str(root), "--cases", "3", "--shape", "32", "32", "24", "--seed", "3"]) == 0
    return root


TINY = ["--model", "unet", "--variant", "tiny", "--epochs", "2", "--steps-per-epoch", "1", "--patch", "16", "16", "16",
        "--batch-size", "2", "--n-folds", "2", "--device", "cpu", "--num-workers", "0", "--deterministic",
        "--no-progress"]


def test_train_resume_and_export(brats, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(brats), "--output", str(run), *TINY, "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "stopped after 1 steps" in out and "--resume" in out
    config = load_train_config(run / "config.yaml")
    assert config.variant == "tiny" and config.patch_size == [16, 16, 16] and config.deterministic

    assert main(["train", str(brats), "--output", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "trained 2 epoch(s), 2 steps" in out and str(run / "model") in out
    for name in ("config.yaml", "run.json", "metrics.jsonl", "checkpoint_last", "checkpoint_best", "model"):
        assert (run / name).exists(), name

    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "max |onnx - PyTorch|" in out and (run / "model.onnx").is_file()


def test_unknown_config_key_exits_2_listing_valid_keys(brats, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("epochs: 1\nlearning_rate: 0.1\n")
    assert main(["train", str(brats), "--output", str(tmp_path / "run"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "valid keys" in err and "lr" in err
    assert main(["train", str(brats), "--output", str(tmp_path / "run"), "--resume", "--config", str(config)]) == 2


def test_ctrl_c_exits_130_with_a_resume_hint(brats, tmp_path, capsys, monkeypatch):
    real_step = TrainingLoop._step

    def step(self, batch):
        if self.global_step == 1:
            raise KeyboardInterrupt
        real_step(self, batch)

    monkeypatch.setattr(TrainingLoop, "_step", step)
    run = tmp_path / "run"
    assert main(["train", str(brats), "--output", str(run), *TINY]) == 130
    err = capsys.readouterr().err
    assert "checkpoint saved" in err and "--resume" in err and str(run) in err
    monkeypatch.undo()
    assert main(["train", str(brats), "--output", str(run), "--resume"]) == 0
