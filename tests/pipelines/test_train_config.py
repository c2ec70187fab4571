"""TrainConfig / ModelConfig: YAML loading, unknown keys, types, overrides, round trips."""

from __future__ import annotations

import pytest

from medseg.config import (
    ModelConfig,
    TrainConfig,
    apply_overrides,
    field_names,
    load_train_config,
    train_config_to_yaml,
)
from medseg.errors import ConfigError, InputError


def test_yaml_values_replace_defaults(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 3\npatch_size: [32, 32, 16]\nlr: 0.01\noptimizer: sgd\npreprocessing: {spacing: null}\n")
    config = load_train_config(path)
    assert config.epochs == 3
    assert config.patch_size == [32, 32, 16]
    assert config.lr == 0.01 and config.optimizer == "sgd"
    assert config.preprocessing == {"spacing": None}
    assert config.batch_size == TrainConfig().batch_size


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert "learning_rate" in message and str(path) in message
    for key in ("lr", "epochs", "batch_size", "optimizer"):
        assert key in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("epochs: three\n", "epochs"),
        ("deterministic: 1\n", "deterministic"),
        ("patch_size: 64\n", "patch_size"),
        ("optimizer: adam\n", "adamw"),
        ("fold: 5\nn_folds: 5\n", "fold"),
        ("val_overlap: 1.0\n", "val_overlap"),
        ("device: tpu\n", "device"),
    ],
)
def test_invalid_values_are_config_errors(tmp_path, text, fragment):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_train_config(path)


def test_unreadable_yaml_is_input_error(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_train_config(path)
    with pytest.raises(InputError, match="cannot read"):
        load_train_config(tmp_path / "missing.yaml")


def test_overrides_ignore_none_and_validate():
    base = TrainConfig(epochs=7)
    config = apply_overrides(base, {"epochs": None, "batch_size": 4, "patch_size": (8, 8)})
    assert config.epochs == 7 and config.batch_size == 4 and config.patch_size == [8, 8]
    with pytest.raises(ConfigError, match="batch_size"):
        apply_overrides(base, {"batch_size": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(base, {"batch": 4})


def test_resolved_yaml_round_trips(tmp_path):
    config = TrainConfig(epochs=2, lr=3e-4, patch_size=[16, 16, 16], network_kwargs={"features": [4, 8, 16]},
                         deep_supervision=True, max_steps=5)
    path = tmp_path / "config.yaml"
    path.write_text(train_config_to_yaml(config))
    assert load_train_config(path) == config


def test_model_config_round_trip_and_checks():
    config = ModelConfig(network="unet", spatial_dims=3, in_channels=4, out_channels=3, modalities=["a", "b", "c", "d"],
                         output_activation="sigmoid", class_names=["TC", "WT", "ET"],
                         regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}, patch_size=[16, 16, 16])
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="modalities"):
        ModelConfig.from_dict({**config.to_dict(), "modalities": ["a"]})
    with pytest.raises(ConfigError, match="missing required key"):
        ModelConfig.from_dict({"network": "unet"})
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig.from_dict({**config.to_dict(), "weights": "x.pt"})
    assert field_names(ModelConfig)[0] == "network"
