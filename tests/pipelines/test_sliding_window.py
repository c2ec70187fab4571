"""medseg's sliding window equals MONAI's ``sliding_window_inference``; float16 buffers stay within their bound."""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError
from medseg.pipelines.sliding_window import importance_map, sliding_window_predict, tile_boxes, window_starts

CASES = [
    # (spatial shape, window, overlap): larger than the window and not a multiple of it, smaller than the
    # window on some or all axes, exactly the window, anisotropic windows, and overlaps 0 to 0.7.
    ((13, 17, 9), (8, 8, 8), 0.5),
    ((5, 6, 7), (8, 8, 8), 0.25),
    ((16, 16, 16), (8, 8, 8), 0.0),
    ((20, 11, 9), (8, 6, 4), 0.7),
    ((9, 10, 11), (9, 4, 12), 0.5),
    ((8, 8, 8), (8, 8, 8), 0.5),
]


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 3, padding=1))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("shape", "window", "overlap"), CASES)
def test_equals_monai_sliding_window_inference(network, shape, window, overlap, blend):
    image = torch.randn(2, 2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = sliding_window_inference(image, window, 3, network, overlap=overlap, mode=blend)
    ours = sliding_window_predict(image, network, window, overlap, blend, batch_size=2)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_the_result(network):
    image = torch.randn(1, 2, 13, 17, 9, generator=torch.Generator().manual_seed(2))
    one = sliding_window_predict(image, network, (8, 8, 8), 0.5, batch_size=1)
    five = sliding_window_predict(image, network, (8, 8, 8), 0.5, batch_size=5)
    torch.testing.assert_close(one, five, rtol=1e-6, atol=1e-6)


def _windows_per_voxel(shape, window, overlap) -> int:
    count = torch.zeros(shape)
    for box in tile_boxes(shape, window, overlap):
        count[box] += 1
    return int(count.max())


@pytest.mark.parametrize(("shape", "window", "overlap"), CASES)
def test_float16_buffer_error_is_within_half_precision_rounding_of_each_sum(network, shape, window, overlap):
    # Each of the n windows over a voxel adds one float16 rounding (relative 2**-11) of a partial sum whose
    # magnitude is at most max|output|, so the blended value is off by at most n * 2**-11 * max|output|.
    image = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(3))
    exact = sliding_window_predict(image, network, window, overlap)
    half = sliding_window_predict(image, network, window, overlap, buffer_dtype=torch.float16)
    padded = tuple(max(s, w) for s, w in zip(shape, window))
    bound = _windows_per_voxel(padded, window, overlap) * 2.0**-11 * float(exact.abs().max())
    assert half.dtype == torch.float32
    assert float((half - exact).abs().max()) <= bound


@pytest.mark.parametrize(("size", "window", "overlap"), [(13, 8, 0.5), (17, 8, 0.25), (100, 32, 0.0), (9, 9, 0.5), (20, 8, 0.7)])
def test_window_starts_step_by_the_overlap_and_end_at_the_border(size, window, overlap):
    starts = window_starts(size, window, overlap)
    step = max(int(window * (1 - overlap)), 1)
    assert starts[0] == 0 and starts[-1] + window == size
    assert all(b - a == step for a, b in zip(starts[:-2], starts[1:-1]))
    if len(starts) > 1:
        assert 0 < starts[-1] - starts[-2] <= step


@pytest.mark.parametrize("window", [(8, 8, 8), (9, 4, 12), (128, 128, 128), (16, 24)])
def test_gaussian_importance_map_equals_monai(window):
    expected = compute_importance_map(window, mode="gaussian", sigma_scale=0.125)
    torch.testing.assert_close(importance_map(window, "gaussian"), expected, rtol=1e-6, atol=1e-7)


def test_invalid_arguments_raise_config_errors(network):
    image = torch.zeros(1, 2, 8, 8, 8)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_predict(image, network, (8, 8, 8), overlap=1.0)
    with pytest.raises(ConfigError, match="2D window"):
        sliding_window_predict(image, network, (8, 8))
    with pytest.raises(ConfigError, match="batch size"):
        sliding_window_predict(image, network, (8, 8, 8), batch_size=0)
    with pytest.raises(ConfigError, match="buffer dtype"):
        sliding_window_predict(image, network, (8, 8, 8), buffer_dtype=torch.bfloat16)
    with pytest.raises(ConfigError, match="blend mode"):
        importance_map((8, 8, 8), "triangle")
