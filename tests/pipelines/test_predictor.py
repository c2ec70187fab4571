"""``predict_probabilities``: MONAI's blending of logits, bfloat16 within tolerance, 2D-on-3D, mirroring, MetaTensors."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError
from medseg.networks import create
from medseg.pipelines.predictor import (
    InferenceOptions,
    autocast_dtype,
    cpu_has_native_bfloat16,
    predict_logits,
    predict_probabilities,
)

EXACT = InferenceOptions(precision="float32", buffer="float32")
# bfloat16 keeps 8 significant bits: logits of the tiny U-Net move by about 1e-2, probabilities by less.
BF16_PROBABILITY_TOL = 0.03


@pytest.fixture(scope="module")
def unet3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return create("unet", 3, 4, 3, variant="tiny").eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(4, 21, 18, 13, generator=torch.Generator().manual_seed(1))


def test_float32_probabilities_are_monai_blended_logits_through_the_activation(unet3d, image):
    with torch.no_grad():
        logits = sliding_window_inference(image[None], (16, 16, 16), 1, unet3d, overlap=0.5, mode="gaussian")[0]
    for activation, expected in (("sigmoid", torch.sigmoid(logits)), ("softmax", torch.softmax(logits, dim=0))):
        probs = predict_probabilities(unet3d, image, (16, 16, 16), activation, EXACT)
        torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_autocast_stays_close_to_float32(unet3d, image):
    exact = predict_probabilities(unet3d, image, (16, 16, 16), "sigmoid", EXACT)
    fast = predict_probabilities(unet3d, image, (16, 16, 16), "sigmoid", InferenceOptions(precision="bfloat16"))
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert float((fast - exact).abs().max()) <= BF16_PROBABILITY_TOL


def test_a_metatensor_input_gives_the_plain_tensor_result(unet3d, image):
    plain = predict_logits(unet3d, image, (16, 16, 16), EXACT)
    meta = predict_logits(unet3d, MetaTensor(image.clone()), (16, 16, 16), EXACT)
    assert type(meta) is torch.Tensor
    torch.testing.assert_close(meta, plain, rtol=0, atol=0)


def test_2d_network_segments_a_volume_slice_by_slice(image):
    torch.manual_seed(2)
    net2d = create("unet", 2, 4, 3, variant="tiny").eval()
    options = InferenceOptions(precision="float32", buffer="float32", batch_size=4)
    probs = predict_probabilities(net2d, image, (16, 16), "softmax", options)
    slices = image.permute(3, 0, 1, 2)
    with torch.no_grad():
        logits = sliding_window_inference(slices, (16, 16), 4, net2d, overlap=0.5, mode="gaussian")
    expected = torch.softmax(logits, dim=1).permute(1, 2, 3, 0)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-5)


def test_mirroring_averages_the_logits_of_every_flip(unet3d):
    volume = torch.randn(4, 16, 16, 16, generator=torch.Generator().manual_seed(3))  # one window: no blending
    tta = predict_logits(unet3d, volume, (16, 16, 16), InferenceOptions(precision="float32", buffer="float32", tta=True))
    flips = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    with torch.no_grad():
        outs = [torch.flip(unet3d(torch.flip(volume, f)[None])[0], f) for f in flips]
    torch.testing.assert_close(tta, torch.stack(outs).mean(0), rtol=1e-5, atol=1e-5)


def test_autocast_dtype_follows_the_device_and_the_cpu(monkeypatch):
    native = torch.bfloat16 if cpu_has_native_bfloat16() else None
    assert autocast_dtype("auto", torch.device("cpu")) == native
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert autocast_dtype("auto", torch.device("cpu")) is None  # emulated bfloat16 would be slower
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16  # AMP on GPUs, as nnU-Net
    assert autocast_dtype("float32", torch.device("cpu")) is None
    assert autocast_dtype("float16", torch.device("cpu")) == torch.float16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 1.0}, "overlap"),
        ({"batch_size": 0}, "batch size"),
        ({"blend": "linear"}, "blend mode"),
        ({"precision": "int8"}, "inference precision"),
        ({"buffer": "bfloat16"}, "buffer dtype"),
    ],
)
def test_invalid_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        InferenceOptions(**kwargs)


def test_a_window_of_the_wrong_rank_is_a_config_error(unet3d):
    with pytest.raises(ConfigError, match="cannot segment"):
        predict_probabilities(unet3d, torch.zeros(4, 16, 16), (16, 16, 16), "sigmoid")
