"""Reversible U-Net: exact gradients against its plain twin, inverse accuracy, memory that ignores depth."""

from __future__ import annotations

import pytest
import torch

import medseg.kernels
from medseg.errors import ConfigError
from medseg.networks import create
from medseg.networks.reversible_block import make_reversible_sequence


def _tiny_net(spatial_dims: int = 3, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create("reversible_unet", spatial_dims, 2, 3, variant="tiny", **overrides)
    _randomise_norms(net)
    return net


def _randomise_norms(module: torch.nn.Module) -> None:
    """Give every norm a random affine map, so no block starts as a near-identity."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, (torch.nn.InstanceNorm3d, torch.nn.InstanceNorm2d, torch.nn.GroupNorm)) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)


def _gradients(net: torch.nn.Module, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    (net(x) * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    grads["input"] = x.grad.clone()
    return grads


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_reversible_gradients_equal_plain_autograd_in_float64(spatial_dims):
    net = _tiny_net(spatial_dims, blocks_per_stage=2).double()
    shape = (2, 2, 16, 16, 16) if spatial_dims == 3 else (2, 2, 32, 32)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weights = torch.randn((2, 3, *shape[2:]), generator=gen, dtype=torch.float64)

    assert net.reversible
    reversible = _gradients(net, x, weights)
    net.set_reversible(False)
    plain = _gradients(net, x, weights)

    assert reversible.keys() == plain.keys()
    for name, grad in plain.items():
        assert grad.abs().max() > 0, name
        rel = (reversible[name] - grad).norm() / grad.norm()
        assert rel <= 1e-5, f"{name}: relative gradient difference {rel:.2e}"


def test_sequence_inverse_rebuilds_input_after_20_blocks_in_float32():
    torch.manual_seed(0)
    seq = make_reversible_sequence(3, 16, 20, expansion=4)
    x = torch.randn(2, 16, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = seq(x)
        rebuilt = seq.inverse(y)
    assert (y - x).abs().max() > 1.0  # the blocks really transform the input
    assert (rebuilt - x).abs().max() <= 1e-5


def test_reversible_training_stores_the_same_activations_whatever_the_depth():
    def saved_bytes(blocks: int, reversible: bool) -> int:
        net = _tiny_net(3, blocks_per_stage=blocks, reversible=reversible)
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            if not isinstance(t, torch.nn.Parameter):
                total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(torch.randn(1, 2, 16, 16, 16))
        out.sum().backward()  # outside the hooks: the backward's transient recomputation is not stored
        return total

    reversible_1, reversible_4 = saved_bytes(1, True), saved_bytes(4, True)
    plain_4 = saved_bytes(4, False)
    assert reversible_4 == reversible_1
    assert plain_4 > 3 * reversible_4


def test_no_grad_eval_and_twin_give_the_same_output():
    net = _tiny_net(3, blocks_per_stage=2)
    x = torch.randn(1, 2, 16, 16, 16)
    train_out = net(x)
    assert train_out.grad_fn is not None
    with torch.no_grad():
        no_grad_out = net.eval()(x)
    net.set_reversible(False)
    twin_out = net.train()(x)
    torch.testing.assert_close(no_grad_out, train_out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(twin_out, train_out, rtol=1e-5, atol=1e-5)


def test_frozen_parameters_get_no_gradient_and_the_rest_still_train():
    net = _tiny_net(3)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    net(torch.randn(1, 2, 16, 16, 16)).square().mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.decoder.parameters())
    assert net.stem.weight.grad is not None  # reached through the frozen reversible encoder


def test_blocks_use_the_kernel_ops(monkeypatch):
    calls = {"depthwise_conv3d": 0, "coupling_forward": 0, "coupling_inverse": 0}

    def spy(name):
        original = getattr(medseg.kernels, name)

        def wrapped(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapped

    for name in calls:
        monkeypatch.setattr(medseg.kernels, name, spy(name))
    net = _tiny_net(3)  # 5 stages of 1 block: 10 bottlenecks, 10 couplings forward
    net(torch.randn(1, 2, 16, 16, 16)).sum().backward()
    # backward rebuilds each block once (2 inverse couplings) and recomputes F and G once each
    assert calls == {"depthwise_conv3d": 20, "coupling_forward": 10, "coupling_inverse": 10}


def test_invalid_options_are_refused():
    with pytest.raises(ConfigError, match="batch norm"):
        create("reversible_unet", 3, 1, 2, variant="tiny", norm="batch")
    with pytest.raises(ConfigError, match="odd channel count"):
        create("reversible_unet", 3, 1, 2, channels=(8, 15))
    with pytest.raises(ConfigError, match="blocks_per_stage"):
        create("reversible_unet", 3, 1, 2, channels=(8, 16), blocks_per_stage=(1, 2, 3))


def test_divisor_is_stem_stride_times_the_downsampling():
    net = create("reversible_unet", 3, 1, 2, channels=(8, 16, 32), stem_stride=2)
    assert net.divisor == (8, 8, 8)
    out = net(torch.randn(1, 1, 8, 16, 24))
    assert out.shape == (1, 2, 8, 16, 24)
