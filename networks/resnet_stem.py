"""ResNet-v2-style CNN stem of the R50+ViT hybrid (Kolesnikov et al., BiT, ECCV 2020; used by ViT and
TransUNet): weight-standardised convolutions, group norm, bottleneck units, for 2D and 3D.

Module names mirror the official checkpoint (``root.conv``, ``root.gn``, ``body.block1.unit1.conv1`` ...)
so that :mod:`medseg.networks.transunet_weights` maps ``conv_root/kernel``, ``block1/unit1/conv1/kernel``
and the like one to one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.errors import ConfigError
from medseg.networks import layers

_WS_EPS = 1e-5
_GN_EPS = 1e-6


def standardize_weight(weight: torch.Tensor, eps: float = _WS_EPS) -> torch.Tensor:
    """Weight standardisation: zero mean, unit variance per output filter ``(O, I, *K)``."""
    dims = list(range(1, weight.ndim))
    var, mean = torch.var_mean(weight, dim=dims, keepdim=True, unbiased=False)
    return (weight - mean) / torch.sqrt(var + eps)


class StdConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose kernel is weight-standardised at every forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight), self.bias)


class StdConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose kernel is weight-standardised at every forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight), self.bias)


def std_conv(spatial_dims: int) -> type[nn.Module]:
    """The weight-standardised convolution class for ``spatial_dims`` (2 or 3)."""
    if spatial_dims == 2:
        return StdConv2d
    if spatial_dims == 3:
        return StdConv3d
    raise ConfigError(f"std_conv supports spatial_dims 2 and 3; got {spatial_dims}")


class Bottleneck(nn.Module):
    """Bottleneck unit ``(B, C_in, *S) -> (B, C_out, *S / stride)``: 1x1, 3x3 (strided), 1x1 StdConvs with
    group norm, a projected skip when the shape changes, ReLU after the sum (the hybrid's unit).

    Args:
        spatial_dims: 2 or 3.
        in_channels: ``C_in``.
        mid_channels: width of the 3x3 convolution.
        out_channels: ``C_out``.
        stride: stride of the 3x3 convolution and of the projection.
        groups: group-norm groups; must divide every width.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int, stride: int, groups: int
    ) -> None:
        super().__init__()
        conv = std_conv(spatial_dims)
        self.conv1 = conv(in_channels, mid_channels, 1, bias=False)
        self.gn1 = layers.norm("group", spatial_dims, mid_channels, num_groups=groups, eps=_GN_EPS)
        self.conv2 = conv(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.gn2 = layers.norm("group", spatial_dims, mid_channels, num_groups=groups, eps=_GN_EPS)
        self.conv3 = conv(mid_channels, out_channels, 1, bias=False)
        self.gn3 = layers.norm("group", spatial_dims, out_channels, num_groups=groups, eps=_GN_EPS)
        self.relu = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.conv_proj = conv(in_channels, out_channels, 1, stride=stride, bias=False)
            self.gn_proj = layers.norm("group", spatial_dims, out_channels, num_groups=groups, eps=_GN_EPS)
        else:
            self.conv_proj = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.conv_proj is None else self.gn_proj(self.conv_proj(x))
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        return self.relu(skip + self.gn3(self.conv3(y)))


class ResNetStem(nn.Module):
    """Root (7x7 stride-2 StdConv, group norm, ReLU, 3x3 stride-2 max pool) and three bottleneck stages.

    ``(B, C, *S) -> (B, 16 * width, *S / 16)`` plus the skip features at 1/2, 1/4 and 1/8 resolution.
    R50 of the hybrid: ``width=64``, ``blocks=(3, 4, 9)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width: root width; stage ``i`` has bottleneck width ``width * 2**i`` and ``4 * width * 2**i`` outputs.
        blocks: bottleneck units per stage (three stages).
        groups: group-norm groups (32 in the hybrid); must divide ``width``.

    Attributes:
        out_channels: channels of the 1/16 output.
        skip_channels: channels of the skips at 1/8, 1/4, 1/2 resolution (deepest first).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, width: int = 64, blocks: Sequence[int] = (3, 4, 9), groups: int = 32
    ) -> None:
        super().__init__()
        if len(blocks) != 3 or any(int(b) < 1 for b in blocks):
            raise ConfigError(f"resnet stem needs 3 stages of >= 1 units; got blocks={tuple(blocks)}")
        if width % groups:
            raise ConfigError(f"resnet stem: groups={groups} must divide width={width}")
        self.root = nn.Sequential(
            OrderedDict(
                conv=std_conv(spatial_dims)(in_channels, width, 7, stride=2, padding=3, bias=False),
                gn=layers.norm("group", spatial_dims, width, num_groups=groups, eps=_GN_EPS),
                relu=nn.ReLU(),
            )
        )
        # Zero-padding after a ReLU equals BiT's pad-then-pool: the inputs are >= 0.
        self.pool = layers.max_pool(spatial_dims)(3, stride=2, padding=1)
        stages = OrderedDict()
        channels = width
        for i, n_units in enumerate(blocks):
            mid, out = width * 2**i, 4 * width * 2**i
            units = OrderedDict()
            for u in range(int(n_units)):
                stride = 2 if (i > 0 and u == 0) else 1
                units[f"unit{u + 1}"] = Bottleneck(spatial_dims, channels, mid, out, stride, groups)
                channels = out
            stages[f"block{i + 1}"] = nn.Sequential(units)
        self.body = nn.Sequential(stages)
        self.out_channels = channels
        self.skip_channels = (8 * width, 4 * width, width)
        self.grad_checkpointing = False

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the 1/16 features and the skips ``[1/8, 1/4, 1/2]`` (deepest first)."""
        half = self.root(x)
        h = self.pool(half)
        skips = [half]
        stages = list(self.body)
        for stage in stages[:-1]:
            h = self._run(stage, h)
            skips.append(h)
        h = self._run(stages[-1], h)
        return h, skips[::-1]
