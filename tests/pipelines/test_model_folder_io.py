"""Model folders: config.json + weights.safetensors, rebuilt without unpickling, clear errors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from medseg.config import ModelConfig
from medseg.errors import ConfigError, InputError
from medseg.pipelines.model_folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_network,
    load_model_config,
    load_model_folder,
    save_model_folder,
)


def _config(**changes) -> ModelConfig:
    values = dict(network="unet", spatial_dims=3, in_channels=2, out_channels=3, variant="tiny",
                  network_kwargs={"deep_supervision": True}, modalities=["t1", "t2"], dataset="brats2021",
                  output_activation="sigmoid", class_names=["TC", "WT", "ET"],
                  regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}, patch_size=[16, 16, 16])
    values.update(changes)
    return ModelConfig(**values)


def _trained_like(config: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_reloaded_model_gives_identical_outputs(tmp_path):
    config = _config()
    model = _trained_like(config)
    save_model_folder(tmp_path / "model", model, config, info={"epoch": 3})
    loaded, loaded_config = load_model_folder(tmp_path / "model")
    assert loaded_config == config
    assert not loaded.training
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert json.loads((tmp_path / "model" / "info.json").read_text()) == {"epoch": 3}


def test_pickle_files_in_the_folder_are_never_loaded(tmp_path):
    config = _config()
    save_model_folder(tmp_path / "model", _trained_like(config), config)
    # A malicious pickle beside the weights must not run: loading never looks at it.
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    for name in ("model.pt", "weights.pth", "state.pkl"):
        (tmp_path / "model" / name).write_bytes(pickle.dumps(Payload()))
    load_model_folder(tmp_path / "model")
    assert not marker.exists()


def test_invalid_config_json_is_a_clear_error(tmp_path):
    config = _config()
    save_model_folder(tmp_path / "model", _trained_like(config), config)
    path = tmp_path / "model" / CONFIG_NAME
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model_folder(tmp_path / "model")
    path.write_text(json.dumps({**config.to_dict(), "network": "unet9"}))
    with pytest.raises(ConfigError) as info:
        load_model_folder(tmp_path / "model")
    assert "unet9" in str(info.value) and "unet" in str(info.value) and CONFIG_NAME in str(info.value)


def test_missing_files_and_wrong_weights_are_refused(tmp_path):
    with pytest.raises(InputError, match="not a model folder"):
        load_model_config(tmp_path)
    config = _config()
    save_model_folder(tmp_path / "model", _trained_like(config), config)
    other = _config(out_channels=2, class_names=["a", "b"], regions={"a": [1], "b": [2]})
    (tmp_path / "model" / CONFIG_NAME).write_text(json.dumps(other.to_dict()))
    with pytest.raises(InputError, match="wrong shape"):
        load_model_folder(tmp_path / "model")
    (tmp_path / "model" / WEIGHTS_NAME).unlink()
    with pytest.raises(InputError, match=WEIGHTS_NAME):
        load_model_folder(tmp_path / "model")
