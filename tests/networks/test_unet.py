"""The nnU-Net-style U-Net: stages, anisotropy, residual encoder, deep supervision, nnU-Net parity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError, InputError
from medseg.networks import create
from medseg.networks.unet import ResidualBlock


def test_divisor_is_product_of_strides_per_axis():
    net = create("unet", 3, 1, 2, features=(4, 8, 8), strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)))
    assert net.divisor == (2, 4, 4)


def test_anisotropic_first_stage_keeps_shape():
    net = create(
        "unet", 3, 1, 2, features=(4, 8, 8), strides=((1, 1, 1), (1, 2, 2), 2), kernel_sizes=((1, 3, 3), 3, 3)
    )
    assert net.encoder[0][0][0].kernel_size == (1, 3, 3)
    x = torch.randn(1, 1, 6, 12, 12)
    assert net(x).shape == (1, 2, 6, 12, 12)
    with pytest.raises(InputError, match="along axis 0; pad or crop to e.g. 4 or 6"):
        net(torch.randn(1, 1, 5, 12, 12))


def test_deep_supervision_returns_all_resolutions_in_training_only():
    net = create("unet", 2, 1, 3, variant="tiny", deep_supervision=True)
    x = torch.randn(2, 1, 16, 24)
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 24), (2, 3, 8, 12)]
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 3, 16, 24)


def test_full_resolution_output_is_the_same_with_and_without_deep_supervision_heads():
    torch.manual_seed(0)
    with_ds = create("unet", 2, 1, 3, variant="tiny", deep_supervision=True).eval()
    without = create("unet", 2, 1, 3, variant="tiny").eval()
    without.load_state_dict(with_ds.state_dict(), strict=False)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(with_ds(x), without(x))


def test_residual_encoder_uses_residual_blocks_and_runs():
    net = create("unet", 3, 2, 2, variant="resenc_tiny")
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 5
    assert net(torch.randn(1, 2, 8, 8, 8)).shape == (1, 2, 8, 8, 8)


def test_residual_block_skip_downsamples_and_projects():
    block = ResidualBlock(2, 4, 8, (3, 3), (2, 2), "instance", "leaky_relu")
    assert block(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    assert isinstance(block.skip[0], nn.AvgPool2d)


def test_default_variant_is_the_documented_benchmark_model():
    net = create("unet", 3, 4, 3)
    assert net.features == (16, 32, 64, 128, 256)
    assert net.divisor == (16, 16, 16)
    assert sum(p.numel() for p in net.parameters()) == 5_649_187


@pytest.mark.parametrize(
    ("message", "kwargs"),
    [
        ("at least 2 stages", {"features": (8,)}),
        ("strides has 2 entries but there are 3 stages", {"features": (4, 8, 16), "strides": (1, 2)}),
        ("unknown unet encoder", {"encoder": "dense"}),
        ("odd", {"kernel_sizes": 2}),
        ("first stage's stride must be 1", {"strides": (2, 2, 2)}),
        ("blocks_per_stage", {"encoder": "residual", "blocks_per_stage": (1, 0, 1), "features": (4, 8, 8)}),
    ],
)
def test_inconsistent_configuration_raises(message, kwargs):
    with pytest.raises(ConfigError, match=message):
        create("unet", 3, 1, 2, variant="tiny", **kwargs)


def _dna_kwargs(dims):
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    inorm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
    return dict(
        conv_op=conv,
        kernel_sizes=3,
        conv_bias=True,
        norm_op=inorm,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )


def _shapes(net):
    return sorted(tuple(p.shape) for p in net.parameters())


@pytest.mark.parametrize(("variant", "dims"), [("default", 3), ("nnunet_3d_fullres", 2)])
def test_plain_variants_match_nnunet_plain_conv_unet(variant, dims):
    unet_mod = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    ours = create("unet", dims, 4, 3, variant=variant, deep_supervision=True)
    n = len(ours.features)
    theirs = unet_mod.PlainConvUNet(
        4, n, ours.features, strides=[s[0] for s in ours.strides], n_conv_per_stage=2, num_classes=3,
        n_conv_per_stage_decoder=2, **_dna_kwargs(dims),
    )
    assert _shapes(ours) == _shapes(theirs)


def test_resenc_m_matches_nnunet_residual_encoder_unet():
    unet_mod = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    residual = pytest.importorskip("dynamic_network_architectures.building_blocks.residual")
    ours = create("unet", 2, 4, 3, variant="resenc_m", deep_supervision=True)
    theirs = unet_mod.ResidualEncoderUNet(
        4, 6, ours.features, strides=(1, 2, 2, 2, 2, 2), n_blocks_per_stage=(1, 3, 4, 6, 6, 6), num_classes=3,
        n_conv_per_stage_decoder=1, block=residual.BasicBlockD, **_dna_kwargs(2),
    )
    assert _shapes(ours) == _shapes(theirs)
