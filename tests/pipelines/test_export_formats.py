"""Export to ONNX and TorchScript, checked against PyTorch; a mismatch writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import ModelConfig
from medseg.errors import ConfigError, InputError
from medseg.pipelines import export as export_module
from medseg.pipelines.export import export_model
from medseg.pipelines.model_folder import build_network, save_model_folder


def _model_folder(path, network="unet", spatial_dims=3, patch=(16, 16, 16)):
    config = ModelConfig(network=network, spatial_dims=spatial_dims, in_channels=2, out_channels=3, variant="tiny",
                         output_activation="softmax", class_names=["bg", "a", "b"], label_values=[0, 1, 2],
                         patch_size=list(patch))
    torch.manual_seed(0)
    model = build_network(config)
    if network == "transunet":  # give batch norm non-trivial running statistics
        with torch.no_grad():
            model.train()(torch.randn(2, 2, *patch))
    save_model_folder(path, model, config)
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_unet_export_matches_pytorch_and_runs(tmp_path, fmt):
    folder = _model_folder(tmp_path / "run" / "model")
    result = export_model(tmp_path / "run", fmt)
    assert result.matches and result.path is not None and result.path.is_file()
    assert result.max_abs_diff <= result.allowed_diff
    assert result.input_shape == (1, 2, 16, 16, 16)
    assert result.dynamic_shapes  # a U-Net runs on other multiples of its divisor

    from medseg.pipelines.model_folder import load_model_folder

    model, _ = load_model_folder(folder)
    x = torch.randn(2, 2, 32, 16, 24)
    with torch.no_grad():
        expected = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        produced = session.run(None, {"image": x.numpy()})[0]
    else:
        produced = torch.jit.load(str(result.path))(x).detach().numpy()
    assert np.max(np.abs(produced - expected)) < 1e-4


def test_transunet_onnx_export_falls_back_to_a_fixed_window(tmp_path):
    _model_folder(tmp_path / "model", network="transunet", spatial_dims=2, patch=(32, 32))
    result = export_model(tmp_path / "model", "onnx", output=tmp_path / "out" / "tu.onnx")
    assert result.matches and result.path == tmp_path / "out" / "tu.onnx" and result.path.is_file()
    assert result.input_shape == (1, 2, 32, 32)


def test_mismatching_export_is_not_written(tmp_path, monkeypatch):
    _model_folder(tmp_path / "model")
    real = export_module._torchscript_export

    def corrupted(model, model_config, window):
        data, run, dynamic = real(model, model_config, window)
        return data, (lambda array: run(array) + 1e-2), dynamic

    monkeypatch.setattr(export_module, "_torchscript_export", corrupted)
    result = export_model(tmp_path / "model", "torchscript")
    assert not result.matches and result.path is None
    assert result.max_abs_diff == pytest.approx(1e-2, rel=1e-3)
    assert not (tmp_path / "model" / "model.torchscript.pt").exists()


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="neither a run folder"):
        export_model(tmp_path, "onnx")
    _model_folder(tmp_path / "model")
    with pytest.raises(ConfigError, match="onnx"):
        export_model(tmp_path / "model", "tflite")
