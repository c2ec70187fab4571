"""End-to-end training on synthetic datasets: outputs in RUN_DIR and a model folder that reproduces the model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medseg.cli import main
from medseg.config import TrainConfig, load_train_config
from medseg.pipelines.checkpoint import load_checkpoint
from medseg.pipelines.model_folder import build_network, load_model_folder, load_weights
from medseg.pipelines.train import train


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    shape = ["--shape", "32", "32", "24", "--seed", "0"]
    assert main(["synth", "brats", str(root / "brats"), "--cases", "4", *shape]) == 0
    assert main(["synth", "synapse", str(root / "synapse"), "--cases", "4", *shape]) == 0
    assert main(["synth", "synapse", str(root / "transunet"), "--cases", "4", "--format", "transunet", *shape]) == 0
    return root


def _config(**changes) -> TrainConfig:
    base = dict(model="unet", variant="tiny", epochs=2, steps_per_epoch=2, batch_size=2, patch_size=[16, 16, 16],
                n_folds=2, num_workers=0, deterministic=True, device="cpu", progress=False)
    base.update(changes)
    return TrainConfig(**base)


CASES = {
    "brats": ("brats", _config(), "sigmoid", 4, ["TC", "WT", "ET"]),
    "synapse_raw_3d": ("synapse", _config(preprocessing={"spacing": None}, epochs=1), "softmax", 1, None),
    "transunet_2d": ("transunet", _config(model="transunet", patch_size=[32, 32], epochs=1), "softmax", 1, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_training_writes_run_outputs_and_a_reproducing_model_folder(datasets, tmp_path, name):
    dataset, config, activation, in_channels, regions = CASES[name]
    run = tmp_path / "run"
    result = train(datasets / dataset, run, config)

    assert result.epochs_completed == config.epochs
    assert result.global_step == config.epochs * config.steps_per_epoch
    assert not result.stopped_at_max_steps
    # Resolved configuration: reloadable, every None default filled in.
    resolved = load_train_config(run / "config.yaml")
    assert resolved.lr is not None and resolved.deep_supervision is not None
    assert resolved.patch_size == config.patch_size and resolved.epochs == config.epochs
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["train_cases"] and run_info["val_cases"]
    assert not set(run_info["train_cases"]) & set(run_info["val_cases"])
    # One metrics line per epoch with validation Dice per class.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(config.epochs))
    assert {"epoch", "step", "loss", "lr", "val_dice", "val_mean_dice", "time"} <= set(records[-1])
    model, model_config = load_model_folder(run / "model")
    assert model_config.output_activation == activation and model_config.in_channels == in_channels
    assert set(records[-1]["val_dice"]) == set(model_config.class_names[1 if activation == "softmax" else 0:])
    if regions is not None:
        assert list(model_config.regions) == regions
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == config.model

    # The model folder holds the weights of checkpoint_best and reproduces its outputs exactly.
    tensors, state = load_checkpoint(run / "checkpoint_best")
    twin = build_network(model_config)
    load_weights(twin, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, "best")
    twin.eval()
    x = torch.randn(2, in_channels, *model_config.patch_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
    assert state["statistics"]["best_epoch"] == result.best_epoch
    last_tensors, last_state = load_checkpoint(run / "checkpoint_last")
    assert last_state["position"]["global_step"] == result.global_step


def test_patch_that_does_not_fit_the_network_is_a_config_error(datasets, tmp_path):
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 4"):
        train(datasets / "brats", tmp_path / "run", _config(patch_size=[18, 16, 16]))
    assert not (tmp_path / "run").exists()


def test_2d_network_on_volumes_trains_on_slices_and_validates_slice_by_slice(datasets, tmp_path):
    result = train(datasets / "brats", tmp_path / "run", _config(patch_size=[32, 32], epochs=1))
    model, model_config = load_model_folder(tmp_path / "run" / "model")
    assert model_config.spatial_dims == 2 and model_config.patch_size == [32, 32]
    assert set(result.last_val_dice) == {"TC", "WT", "ET"}
