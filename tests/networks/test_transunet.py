"""TransUNet: paper parameter count, position-embedding resampling, patch size, skips, 3D."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError
from medseg.networks import create, get_info
from medseg.networks.summary import build_shapes_only


def test_r50_vit_b16_matches_paper_size():
    # TransUNet (R50-ViT-B/16, Synapse: 3 -> 9 channels, 224x224): 105.28M parameters.
    net = build_shapes_only("transunet", 2, 3, 9, variant="r50_vit_b16")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 105.28
    assert net.divisor == (16, 16)
    assert len(net.encoder.layers) == 12
    assert [len(stage) for stage in net.stem.body] == [3, 4, 9]
    assert net.embeddings.position_embeddings.shape == (1, 14 * 14, 768)


def test_default_variant_is_r50_vit_b16():
    variants = get_info("transunet").variants
    assert variants["default"] == variants["r50_vit_b16"]


def test_position_embeddings_are_resampled_for_another_grid():
    torch.manual_seed(0)
    net = create("transunet", 2, 1, 2, variant="tiny")  # grid 2x2 -> 32x32 inputs
    table = net.embeddings.position_embedding_for((3, 5))
    assert table.shape == (1, 15, 32)
    assert net.embeddings.position_embedding_for((2, 2)) is net.embeddings.position_embeddings
    assert net(torch.randn(1, 1, 48, 80)).shape == (1, 2, 48, 80)


def test_constant_position_embedding_stays_constant_when_resampled():
    net = create("transunet", 3, 1, 2, variant="tiny")
    with torch.no_grad():
        net.embeddings.position_embeddings.fill_(0.5)
    torch.testing.assert_close(
        net.embeddings.position_embedding_for((3, 2, 4)), torch.full((1, 24, 32), 0.5)
    )


def test_patch_size_two_doubles_divisor_and_keeps_output_size():
    net = create("transunet", 2, 1, 2, variant="tiny", patch_size=2)
    assert net.divisor == (32, 32)
    assert net(torch.randn(1, 1, 64, 32)).shape == (1, 2, 64, 32)


@pytest.mark.parametrize("n_skip", [0, 1, 3])
def test_skip_count_changes_decoder_inputs(n_skip):
    net = create("transunet", 2, 1, 2, variant="tiny", n_skip=n_skip)
    skip_channels = [net.stem.skip_channels[i] if i < n_skip else 0 for i in range(3)]
    ins = [block.conv1[0].in_channels for block in net.decoder]
    assert ins[:3] == [c + s for c, s in zip([32, 16, 8], skip_channels)]
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_3d_uses_3d_layers_everywhere():
    net = create("transunet", 3, 1, 2, variant="tiny")
    assert net.stem.root.conv.weight.ndim == 5
    assert net.embeddings.patch.weight.ndim == 5


@pytest.mark.parametrize(
    ("message", "kwargs"),
    [
        ("4 decoder_channels", {"decoder_channels": (8, 8)}),
        ("n_skip", {"n_skip": 4}),
        ("num_heads=3 does not divide", {"num_heads": 3}),
        ("groups=3 must divide", {"stem_groups": 3}),
    ],
)
def test_invalid_configuration_raises(message, kwargs):
    with pytest.raises(ConfigError, match=message):
        create("transunet", 2, 1, 2, variant="tiny", **kwargs)
