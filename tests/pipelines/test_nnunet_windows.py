"""nnU-Net-style sliding windows: the same window starts and Gaussian as nnU-Net, and the same blended logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.pipelines.nnunet_windows import gaussian_weights, sliding_window_logits, window_starts

pytest.importorskip("nnunetv2")


@pytest.mark.parametrize(
    ("size", "patch"), [(s, p) for p in (16, 28) for s in (16, 17, 29, 40, 51, 100, 110) if s >= p]
)
@pytest.mark.parametrize("step", [0.5, 0.33])
def test_window_starts_match_nnunet(size: int, patch: int, step: float) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    (expected,) = compute_steps_for_sliding_window((size,), (patch,), step)
    assert window_starts(size, patch, step) == expected


@pytest.mark.parametrize("patch", [(16, 16, 16), (8, 32, 28), (20, 24)])
def test_gaussian_weights_are_nnunets_up_to_scale(patch: tuple[int, ...]) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    compute_gaussian.cache_clear()
    theirs = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=1.0, dtype=torch.float32,
                              device=torch.device("cpu"))
    ours = gaussian_weights(patch)
    assert ours.shape == patch and float(ours.max()) == 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def _tiny_unet(seed: int) -> torch.nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    torch.manual_seed(seed)
    return PlainConvUNet(
        input_channels=2, n_stages=2, features_per_stage=[4, 8], conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2], n_conv_per_stage=1, num_classes=3, n_conv_per_stage_decoder=1, conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
    ).eval()


@pytest.mark.parametrize("shape", [(20, 13, 18), (9, 8, 26)])
def test_constant_blend_logits_match_nnunet_predictor(shape: tuple[int, ...]) -> None:
    """With uniform weights nnU-Net's float16 accumulation is exact enough to compare logits directly."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    network = _tiny_unet(0)
    patch = (8, 12, 10)
    image = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_logits(network, image[None], patch, overlap=0.5, batch_size=3, blend="constant")[0]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=False, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)

    class _Configuration:
        patch_size = list(patch)

    class _Labels:
        num_segmentation_heads = 3

    predictor.network, predictor.configuration_manager, predictor.label_manager = network, _Configuration(), _Labels()
    predictor.allowed_mirroring_axes = None
    theirs = predictor.predict_sliding_window_return_logits(image).float()
    assert ours.shape == theirs.shape == (3, *shape)
    torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=4e-3)


def test_a_single_window_gives_the_network_logits() -> None:
    network = _tiny_unet(2)
    image = torch.randn(1, 2, 16, 16, 16)
    whole = sliding_window_logits(network, image, (16, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(whole, network(image), rtol=1e-5, atol=1e-5)  # one window: weights cancel


def test_window_rank_must_match_the_image() -> None:
    with pytest.raises(ConfigError, match="cannot tile"):
        sliding_window_logits(_tiny_unet(0), torch.zeros(1, 2, 8, 8), (8, 8, 8))
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_logits(_tiny_unet(0), torch.zeros(1, 2, 8, 8, 8), (8, 8, 8), overlap=1.0)
    assert np.array_equal(window_starts(5, 8, 0.5), [0])
