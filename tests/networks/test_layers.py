"""Dimension-indexed layer factories."""

from __future__ import annotations

import pytest
from torch import nn

from medseg.errors import ConfigError
from medseg.networks import layers


@pytest.mark.parametrize(
    ("factory", "classes"),
    [
        (layers.conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)),
        (layers.conv_transpose, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)),
        (layers.dropout, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)),
        (layers.max_pool, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)),
        (layers.avg_pool, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)),
    ],
)
def test_factories_return_class_for_each_dimension(factory, classes):
    assert tuple(factory(d) for d in (1, 2, 3)) == classes


def test_factories_reject_unknown_dimension():
    with pytest.raises(ConfigError, match="spatial_dims must be 1, 2 or 3"):
        layers.conv(4)


@pytest.mark.parametrize(
    ("name", "dims", "expected"),
    [
        ("instance", 3, nn.InstanceNorm3d),
        ("instance", 2, nn.InstanceNorm2d),
        ("batch", 3, nn.BatchNorm3d),
        ("group", 3, nn.GroupNorm),
        ("layer", 2, nn.GroupNorm),
        ("none", 3, nn.Identity),
    ],
)
def test_norm_builds_requested_layer(name, dims, expected):
    assert isinstance(layers.norm(name, dims, 16), expected)


def test_instance_norm_is_affine_as_in_nnunet():
    assert layers.norm("instance", 3, 8).affine


def test_group_norm_rejects_groups_not_dividing_channels():
    with pytest.raises(ConfigError, match="does not divide 12"):
        layers.norm("group", 3, 12, num_groups=8)


def test_unknown_norm_and_activation_list_valid_names():
    with pytest.raises(ConfigError, match="instance"):
        layers.norm("instnace", 3, 8)
    with pytest.raises(ConfigError, match="leaky_relu"):
        layers.activation("swish")


def test_leaky_relu_uses_nnunet_slope():
    assert layers.activation("leaky_relu").negative_slope == 0.01


def test_per_axis_expands_and_checks_length():
    assert layers.per_axis(2, 3, "stride") == (2, 2, 2)
    assert layers.per_axis((1, 2, 2), 3, "stride") == (1, 2, 2)
    with pytest.raises(ConfigError, match="one per spatial axis"):
        layers.per_axis((1, 2), 3, "stride")
    with pytest.raises(ConfigError, match=">= 1"):
        layers.per_axis(0, 2, "stride")


def test_same_padding_requires_odd_kernels():
    assert layers.same_padding((1, 3, 5)) == (0, 1, 2)
    with pytest.raises(ConfigError, match="odd"):
        layers.same_padding((2, 3))


def test_interpolate_mode_per_dimension():
    assert [layers.interpolate_mode(d) for d in (1, 2, 3)] == ["linear", "bilinear", "trilinear"]
