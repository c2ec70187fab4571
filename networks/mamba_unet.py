"""Mamba U-Net for 2D and 3D: convolutional full-resolution stage and decoder, Mamba encoder and bottleneck.

After VM-UNet (Ruan & Xiang, "VM-UNet: Vision Mamba UNet for Medical Image Segmentation", 2024) in 2D and
SegMamba (Xing et al., "SegMamba: Long-range Sequential Modeling Mamba for 3D Medical Image
Segmentation", MICCAI 2024) in 3D, from one implementation:

- level 0 at full resolution: a 3x3(x3) stem convolution and a residual convolution block;
- each further level: instance norm and a 2x2(x2) stride-2 convolution, then ``mamba_depths[level]``
  multi-order Mamba blocks (:class:`medseg.networks.mamba_block.MambaBlock`: four scan orders in 2D, three
  axis orientations in 3D), or a residual convolution block where the depth is 0; the last level is the
  bottleneck;
- a convolutional decoder: transposed convolution, concatenated skip, residual convolution block per level,
  and a 1x1 convolution to the logits.

The selective scan runs through :func:`medseg.kernels.selective_scan` (CUDA kernel where available, plain
PyTorch otherwise); the ``mamba-ssm`` package is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.errors import ConfigError
from medseg.networks import layers
from medseg.networks.base import SegmentationNetwork
from medseg.networks.mamba_block import MambaBlock
from medseg.networks.registry import register_network
from medseg.networks.unet import ResidualBlock

MAMBA_UNET_VARIANTS = {
    # SegMamba's encoder widths (48-96-192-384 at 1/2..1/16 resolution, two Mamba blocks per level) under a
    # 32-channel full-resolution conv stage; 8.86M parameters in 3D (4 -> 3 channels), 5.62M in 2D.
    "default": {"channels": (32, 48, 96, 192, 384), "mamba_depths": (0, 2, 2, 2, 2)},
    # Mamba at 1/4 and 1/8 resolution only, so that a 32^3 / 64^2 input stays fast with the reference scan.
    "tiny": {"channels": (8, 16, 16, 32), "mamba_depths": (0, 0, 1, 1), "d_state": 8},
}


@register_network(
    "mamba_unet",
    spatial_dims=(2, 3),
    variants=MAMBA_UNET_VARIANTS,
    paper="Ruan & Xiang, VM-UNet, 2024 (2D); Xing et al., SegMamba, MICCAI 2024 (3D); Gu & Dao, Mamba, 2023",
    description="U-Net with multi-order Mamba (selective state space) encoder stages and a conv decoder",
)
class MambaUNet(SegmentationNetwork):
    """Mamba U-Net: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Each spatial size must be a multiple of :attr:`divisor` ``= 2^(len(channels) - 1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: output channels (classes or regions).
        channels: channels per level, full resolution first; at least two levels.
        mamba_depths: Mamba blocks per level (one int or one per level); 0 makes that level a residual
            convolution block. Level 0 runs at full resolution, where a long token sequence is costly.
        d_state: SSM state size of the Mamba blocks.
        d_conv: kernel size of the causal token convolution.
        expand: inner channel expansion of the Mamba blocks.
        norm: normalisation of the convolutional parts (``"instance"``, ``"group"``, ``"batch"``).
        act: nonlinearity of the convolutional parts (``"leaky_relu"``, ``"relu"``, ``"gelu"``).
        kernel_backend: backend of the selective scan (``"auto"``, ``"cupy"``, ``"torch"``).

    Raises:
        ConfigError: fewer than two levels, a ``mamba_depths`` list of the wrong length or with negative
            entries, or invalid block sizes.
    """

    supports_grad_checkpointing = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 48, 96, 192, 384),
        mamba_depths: int | Sequence[int] = (0, 2, 2, 2, 2),
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        norm: str = "instance",
        act: str = "leaky_relu",
        kernel_backend: str = "auto",
    ) -> None:
        levels = len(channels)
        if levels < 2:
            raise ConfigError(f"mamba_unet needs at least 2 levels (channels); got {tuple(channels)}")
        super().__init__(spatial_dims, in_channels, out_channels, 2 ** (levels - 1))
        depths = [int(mamba_depths)] * levels if isinstance(mamba_depths, int) else [int(d) for d in mamba_depths]
        if len(depths) != levels or any(d < 0 for d in depths):
            raise ConfigError(
                f"mamba_depths must be one int or {levels} non-negative ints (one per level); got {mamba_depths!r}"
            )
        self.channels = tuple(int(c) for c in channels)
        self.mamba_depths = tuple(depths)
        conv, conv_t = layers.conv(spatial_dims), layers.conv_transpose(spatial_dims)
        k3, ones = (3,) * spatial_dims, (1,) * spatial_dims

        def body(level: int) -> nn.Sequential:
            c = self.channels[level]
            if depths[level] == 0:
                return nn.Sequential(ResidualBlock(spatial_dims, c, c, k3, ones, norm, act))
            return nn.Sequential(
                *(MambaBlock(spatial_dims, c, d_state, d_conv, expand, backend=kernel_backend) for _ in range(depths[level]))
            )

        self.stem = conv(in_channels, self.channels[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(
                layers.norm(norm, spatial_dims, self.channels[i]),
                conv(self.channels[i], self.channels[i + 1], 2, stride=2),
            )
            for i in range(levels - 1)
        )
        self.encoder = nn.ModuleList(body(i) for i in range(levels))
        # up[i] and decoder[i] bring level i + 1 back to level i.
        self.up = nn.ModuleList(conv_t(self.channels[i + 1], self.channels[i], 2, stride=2) for i in range(levels - 1))
        self.decoder = nn.ModuleList(
            ResidualBlock(spatial_dims, 2 * self.channels[i], self.channels[i], k3, ones, norm, act)
            for i in range(levels - 1)
        )
        self.head = conv(self.channels[0], out_channels, 1)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(B, in_channels, *S)``; every spatial size a multiple of :attr:`divisor`.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        h = self.stem(x)
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                h = self.down[level - 1](h)
            for block in stage:  # checkpointed block by block
                h = self._run(block, h)
            skips.append(h)
        for level in range(len(self.decoder) - 1, -1, -1):
            h = self._run(self.decoder[level], torch.cat((self.up[level](h), skips[level]), dim=1))
        return self.head(h)
