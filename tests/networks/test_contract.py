"""Contract every registered network keeps, checked on its "tiny" variant in each supported dimension.

A newly registered network is tested here without new code.
"""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.networks import SegmentationNetwork, create, get_info, list_networks

IN_CHANNELS, OUT_CHANNELS = 2, 3
CASES = [(name, dims) for name in list_networks() for dims in get_info(name).spatial_dims]
IDS = [f"{name}-{dims}d" for name, dims in CASES]


def build(name: str, dims: int, **kwargs) -> SegmentationNetwork:
    torch.manual_seed(0)
    return create(name, dims, IN_CHANNELS, OUT_CHANNELS, variant="tiny", **kwargs)


def test_size(net: SegmentationNetwork) -> tuple[int, ...]:
    """Smallest multiple of the divisor >= 16 per axis; the last axis doubled so no map shrinks to 1 voxel."""
    sizes = [-(-16 // d) * d for d in net.divisor]
    sizes[-1] *= 2
    return tuple(sizes)


test_size.__test__ = False  # a helper, not a test


def test_registry_is_not_empty():
    assert {"unet", "swin_unetr", "transunet"} <= set(list_networks())


@pytest.mark.parametrize("name", list_networks())
def test_network_declares_default_and_tiny_variants_and_paper(name):
    info = get_info(name)
    assert {"default", "tiny"} <= set(info.variants)
    assert info.paper and info.description
    assert set(info.spatial_dims) <= {2, 3}


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_network_exposes_common_interface(name, dims):
    net = build(name, dims)
    assert isinstance(net, SegmentationNetwork)
    assert (net.spatial_dims, net.in_channels, net.out_channels) == (dims, IN_CHANNELS, OUT_CHANNELS)
    assert len(net.divisor) == dims and all(d >= 1 for d in net.divisor)


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_output_shape_matches_input_in_train_and_eval(name, dims):
    net = build(name, dims)
    x = torch.randn(2, IN_CHANNELS, *test_size(net))
    assert net(x).shape == (2, OUT_CHANNELS, *x.shape[2:])
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, OUT_CHANNELS, *x.shape[2:])


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_backward_reaches_every_parameter(name, dims):
    net = build(name, dims)
    x = torch.randn(2, IN_CHANNELS, *test_size(net))
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_sliding_window_inference_on_size_not_multiple_of_window(name, dims):
    from monai.inferers import sliding_window_inference

    net = build(name, dims).eval()
    roi = test_size(net)
    volume = torch.randn(1, IN_CHANNELS, *(r + 3 + axis for axis, r in enumerate(roi)))
    with torch.no_grad():
        out = sliding_window_inference(volume, roi, sw_batch_size=4, predictor=net, overlap=0.25)
    assert out.shape == (1, OUT_CHANNELS, *volume.shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_eval_mode_is_deterministic(name, dims):
    net = build(name, dims).eval()
    x = torch.randn(1, IN_CHANNELS, *test_size(net))
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_wrong_channel_count_raises_clear_error(name, dims):
    net = build(name, dims)
    with pytest.raises(InputError, match=f"expects {IN_CHANNELS} input channel"):
        net(torch.randn(1, IN_CHANNELS + 1, *test_size(net)))


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_wrong_number_of_spatial_dims_raises_clear_error(name, dims):
    net = build(name, dims)
    with pytest.raises(InputError, match=f"{dims}D"):
        net(torch.randn(1, IN_CHANNELS, *test_size(net), 16))


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_size_not_multiple_of_divisor_raises_clear_error(name, dims):
    net = build(name, dims)
    axis = max(range(dims), key=lambda a: net.divisor[a])
    if net.divisor[axis] == 1:
        pytest.skip("this network accepts every size")
    size = list(test_size(net))
    size[axis] += 1
    with pytest.raises(InputError, match=f"not a multiple of {net.divisor[axis]} along axis {axis}"):
        net(torch.randn(1, IN_CHANNELS, *size))


@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_grad_checkpointing_keeps_outputs_and_gradients(name, dims):
    plain = build(name, dims)
    if not plain.supports_grad_checkpointing:
        with pytest.raises(ConfigError):
            plain.set_grad_checkpointing(True)
        return
    checkpointed = build(name, dims)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, IN_CHANNELS, *test_size(plain))
    outputs = []
    for net in (plain, checkpointed):
        torch.manual_seed(1)  # same dropout masks, if any
        y = net(x)
        y.square().mean().backward()
        outputs.append(y)
    torch.testing.assert_close(outputs[0], outputs[1])
    grads = dict(checkpointed.named_parameters())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads[n].grad, msg=f"gradient of {n} differs")


@pytest.mark.parametrize("name", list_networks())
def test_unsupported_spatial_dims_raises_listing_supported(name):
    unsupported = next(d for d in (1, 2, 3) if d not in get_info(name).spatial_dims)
    with pytest.raises(ConfigError, match="supports spatial_dims"):
        create(name, unsupported, IN_CHANNELS, OUT_CHANNELS, variant="tiny")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("name", "dims"), CASES, ids=IDS)
def test_cuda_output_matches_cpu(name, dims):
    net = build(name, dims).eval()
    x = torch.randn(1, IN_CHANNELS, *test_size(net))
    with torch.no_grad():
        expected = net(x)
        got = net.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)  # TF32 convolutions on the GPU
