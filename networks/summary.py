"""Parameter counts and divisors of registered networks, cheap enough to list every variant."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medseg.networks.registry import create


@dataclass(frozen=True)
class VariantSummary:
    """Size facts of one network variant in one dimension.

    Attributes:
        name: registry name.
        variant: variant name.
        spatial_dims: 2 or 3.
        in_channels: input channels it was built with.
        out_channels: output channels it was built with.
        parameters: total number of parameter elements.
        divisor: per-axis multiple every input size must be.
    """

    name: str
    variant: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    parameters: int
    divisor: tuple[int, ...]


def build_shapes_only(
    name: str, spatial_dims: int, in_channels: int, out_channels: int, *, variant: str = "default"
) -> nn.Module:
    """Build a network on PyTorch's ``meta`` device (shapes only: no memory, no initialisation).

    A builder that cannot run on ``meta`` (MONAI's SwinUNETR reads a tensor value while building) is built
    on the CPU instead, so the result is always usable for counting, never for computing.

    Args:
        name: registry name.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        variant: variant name.

    Raises:
        ConfigError: unknown network or variant, or unsupported ``spatial_dims``.
    """
    try:
        with torch.device("meta"):
            return create(name, spatial_dims, in_channels, out_channels, variant=variant)
    except (RuntimeError, NotImplementedError):  # an operation without a meta implementation
        return create(name, spatial_dims, in_channels, out_channels, variant=variant)


def summarize(
    name: str, spatial_dims: int, in_channels: int = 4, out_channels: int = 3, *, variant: str = "default"
) -> VariantSummary:
    """Parameter count and divisor of a registered network variant.

    Args:
        name: registry name.
        spatial_dims: 2 or 3.
        in_channels: input channels (default 4, as BraTS).
        out_channels: output channels (default 3, as BraTS regions).
        variant: variant name.

    Returns:
        The :class:`VariantSummary`.

    Raises:
        ConfigError: unknown network or variant, or unsupported ``spatial_dims``.
    """
    net = build_shapes_only(name, spatial_dims, in_channels, out_channels, variant=variant)
    return VariantSummary(
        name=name,
        variant=variant,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        parameters=sum(p.numel() for p in net.parameters()),
        divisor=tuple(getattr(net, "divisor", ())),
    )
