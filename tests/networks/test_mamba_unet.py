"""Mamba U-Net: shapes in 2D and 3D, scan orders, causality, the selective scan kernel in use."""

from __future__ import annotations

import math

import pytest
import torch

import medseg.kernels
from medseg.errors import ConfigError
from medseg.networks import create
from medseg.networks.mamba_block import MambaBlock, ScanOrder, scan_orders


@pytest.mark.parametrize(("spatial_dims", "shape"), [(3, (2, 2, 16, 24, 8)), (2, (2, 2, 32, 24))])
def test_output_has_input_spatial_shape_and_out_channels(spatial_dims, shape):
    torch.manual_seed(0)
    net = create("mamba_unet", spatial_dims, 2, 5, variant="tiny")
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 5, *shape[2:])
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_scan_orders_are_distinct_and_invertible(spatial_dims):
    spatial = (2, 3, 4)[:spatial_dims]
    x = torch.arange(2 * math.prod(spatial), dtype=torch.float32).reshape(1, 2, *spatial)
    sequences = []
    for order in scan_orders(spatial_dims):
        tokens = order.flatten(x)
        assert tokens.shape == (1, 2, math.prod(spatial))
        assert torch.equal(order.unflatten(tokens, spatial), x)
        sequences.append(tuple(tokens[0, 0].tolist()))
    assert len(set(sequences)) == len(sequences) == (4 if spatial_dims == 2 else 3)


def test_scan_order_axes_give_row_column_and_reversed_sequences():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    assert ScanOrder((0, 1)).flatten(x).flatten().tolist() == [1, 2, 3, 4]
    assert ScanOrder((1, 0)).flatten(x).flatten().tolist() == [1, 3, 2, 4]
    assert ScanOrder((0, 1), reverse=True).flatten(x).flatten().tolist() == [4, 3, 2, 1]
    volume = torch.arange(8.0).reshape(1, 1, 2, 2, 2)  # value = 4 d + 2 h + w
    # axes (1, 2, 0): h slowest, then w, then d fastest
    assert ScanOrder((1, 2, 0)).flatten(volume).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_mamba_stages_call_the_selective_scan_kernel_once_per_block(monkeypatch):
    calls = []
    original = medseg.kernels.selective_scan

    def spy(u, *args, **kwargs):
        calls.append((tuple(u.shape), tuple(args[2].shape)))  # u and the grouped B
        return original(u, *args, **kwargs)

    monkeypatch.setattr(medseg.kernels, "selective_scan", spy)
    torch.manual_seed(0)
    net = create("mamba_unet", 3, 1, 2, variant="tiny")  # Mamba at levels 2 and 3, one block each
    net(torch.randn(1, 1, 32, 32, 32))
    expand = 2
    expected = [
        ((1, 3 * expand * c, (32 // 2**level) ** 3), (1, 3, 8, (32 // 2**level) ** 3))
        for level, c in ((2, net.channels[2]), (3, net.channels[3]))
    ]
    assert calls == expected


def test_each_scan_order_has_its_own_parameters_so_transposing_the_input_matters():
    torch.manual_seed(0)
    block = MambaBlock(2, 8, d_state=4)
    x = torch.randn(1, 8, 6, 6)
    # With parameters shared across the four orders, the sum over row/column orders would commute with
    # transposition; with one parameter set per order it does not.
    out = block(x)
    out_of_transposed = block(x.transpose(2, 3)).transpose(2, 3)
    assert (out - out_of_transposed).abs().max() > 1e-3
    with torch.no_grad():
        for p in (block.conv1d.weight, block.conv1d.bias, block.dt_bias, block.A_log, block.D):
            p.view(4, -1)[1:] = p.view(4, -1)[0]
        for p in (block.x_proj_weight, block.dt_proj_weight):
            p[1:] = p[0]
        torch.testing.assert_close(block(x.transpose(2, 3)).transpose(2, 3), block(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", scan_orders(2), ids=str)
def test_scan_output_depends_only_on_earlier_tokens_of_its_order(order):
    torch.manual_seed(0)
    block = MambaBlock(2, 4, d_state=4, orders=(order,))
    u, z = torch.randn(1, block.inner, 4, 5), torch.randn(1, block.inner, 4, 5)
    changed = u.clone()
    changed[..., 2, 1] += 1.0
    grid = torch.arange(20.0).reshape(1, 1, 4, 5)  # each voxel holds its row-major index
    position = order.flatten(grid)[0, 0].tolist().index(2 * 5 + 1)  # where voxel (2, 1) falls in this order
    with torch.no_grad():
        diff = (order.flatten(block.scan(changed, z)) - order.flatten(block.scan(u, z))).abs().amax(dim=1)[0]
    assert diff[:position].max() == 0
    assert diff[position] > 0


def test_mamba_parameters_start_as_in_mamba():
    block = MambaBlock(3, 16, d_state=8)
    torch.testing.assert_close(block.A_log[5], torch.log(torch.arange(1.0, 9.0)))
    assert torch.all(block.D == 1)
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    assert block.dt_rank == 1  # ceil(16 / 16)


def test_invalid_options_are_refused():
    with pytest.raises(ConfigError, match="mamba_depths"):
        create("mamba_unet", 2, 1, 2, channels=(8, 16), mamba_depths=(0, 1, 1))
    with pytest.raises(ConfigError, match="at least 2 levels"):
        create("mamba_unet", 2, 1, 2, channels=(8,))
