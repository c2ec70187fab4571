"""The network registry: registration rules, lookups, variants and option overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError, InputError
from medseg.networks import create, get_info, list_networks, register_network, registry
from medseg.networks.base import SegmentationNetwork


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


class _Toy(SegmentationNetwork):
    def __init__(self, spatial_dims, in_channels, out_channels, width=4):
        super().__init__(spatial_dims, in_channels, out_channels, divisor=1)
        self.width = width
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        self.check_input(x)
        return self.conv(x)


def test_duplicate_registration_raises(scratch_registry):
    register_network("toy", spatial_dims=(2,), variants={"default": {}})(_Toy)
    with pytest.raises(ConfigError, match="already registered"):
        register_network("toy", spatial_dims=(2,), variants={"default": {}})(_Toy)


def test_builtin_name_cannot_be_registered_again(scratch_registry):
    with pytest.raises(ConfigError, match="'unet' is already registered"):
        register_network("unet", spatial_dims=(2, 3), variants={"default": {}})(_Toy)


def test_registration_requires_default_variant(scratch_registry):
    with pytest.raises(ConfigError, match="must include 'default'"):
        register_network("toy", spatial_dims=(2,), variants={"tiny": {}})


def test_variant_may_not_set_create_arguments(scratch_registry):
    with pytest.raises(ConfigError, match="in_channels"):
        register_network("toy", spatial_dims=(2,), variants={"default": {"in_channels": 3}})


def test_unknown_network_lists_valid_names_and_closest():
    with pytest.raises(ConfigError) as err:
        create("unnet", 3, 1, 2)
    message = str(err.value)
    for name in list_networks():
        assert name in message
    assert "Did you mean 'unet'" in message


def test_unknown_variant_lists_variants():
    with pytest.raises(ConfigError, match="unknown unet variant 'huge'.*default.*tiny"):
        create("unet", 3, 1, 2, variant="huge")


def test_unknown_option_lists_accepted_options():
    with pytest.raises(ConfigError, match="does not accept option.*'widths'.*features"):
        create("unet", 3, 1, 2, variant="tiny", widths=(4, 8))


def test_unsupported_dims_lists_supported(scratch_registry):
    register_network("toy", spatial_dims=(2,), variants={"default": {}})(_Toy)
    with pytest.raises(ConfigError, match="supports spatial_dims 2; got 3"):
        create("toy", 3, 1, 2)


def test_kwargs_override_variant(scratch_registry):
    register_network("toy", spatial_dims=(2,), variants={"default": {"width": 4}, "wide": {"width": 8}})(_Toy)
    assert create("toy", 2, 1, 2).width == 4
    assert create("toy", 2, 1, 2, variant="wide").width == 8
    assert create("toy", 2, 1, 2, variant="wide", width=16).width == 16


def test_get_info_describes_network_and_freezes_variants():
    info = get_info("unet")
    assert info.name == "unet" and info.spatial_dims == (2, 3)
    with pytest.raises(TypeError):
        info.variants["default"]["features"] = (1, 2)  # type: ignore[index]


def test_list_networks_is_sorted():
    assert list_networks() == sorted(list_networks())


def test_check_input_names_axis_and_valid_sizes():
    net = create("unet", 3, 1, 2, variant="tiny")  # divisor 4
    with pytest.raises(InputError) as err:
        net.check_input(torch.zeros(1, 1, 9, 8, 8))
    assert "spatial size (9, 8, 8) is not a multiple of 4 along axis 0; pad or crop to e.g. 8 or 12" in str(err.value)
