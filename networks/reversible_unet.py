"""Memory-efficient U-Net built from reversible mobile inverted bottlenecks.

Follows Pendse et al., "Memory Efficient 3D U-Net with Reversible Mobile Inverted Bottlenecks for Brain
Tumor Segmentation" (BrainLes / BraTS 2020): every encoder and decoder stage is a sequence of reversible
blocks (:mod:`medseg.networks.reversible_block`) whose activations are rebuilt in the backward pass instead
of stored, so training memory hardly depends on how many blocks a stage has.

Layout, chosen so that the reversible sequences hold almost all of the activations of a plain network:

- a stem convolution (stride ``stem_stride``) to ``channels[0]``, so no stage runs at full resolution;
- per level a ``2^d`` stride-2 convolution (levels below the first), then ``blocks_per_stage`` reversible
  blocks; these convolutions keep only their input, which is the previous stage's output, stored anyway;
- per decoder level a ``2^d`` stride-2 transposed convolution, the skip **added** (a concatenation would
  need a stored tensor of twice the width), then ``blocks_per_stage`` reversible blocks;
- a transposed convolution of kernel and stride ``stem_stride`` from ``channels[0]`` to the logits.

``reversible=False`` (or :meth:`ReversibleUNet.set_reversible`) runs the same modules with plain autograd:
the non-reversible twin used to check gradients and to compare memory (``benchmarks/reversible_memory.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.errors import ConfigError
from medseg.networks import layers
from medseg.networks.base import SegmentationNetwork
from medseg.networks.registry import register_network
from medseg.networks.reversible_block import ReversibleSequence, make_reversible_sequence

REVERSIBLE_UNET_VARIANTS = {
    # Four levels at 1/2 .. 1/16 resolution; 1.74M parameters in 3D (4 -> 3 channels), 1.29M in 2D.
    # The model of benchmarks/reversible_memory.py.
    "default": {"channels": (32, 64, 128, 256), "blocks_per_stage": 2, "expansion": 4},
    "tiny": {"channels": (8, 16, 32), "blocks_per_stage": 1, "expansion": 2},
}


@register_network(
    "reversible_unet",
    spatial_dims=(2, 3),
    variants=REVERSIBLE_UNET_VARIANTS,
    paper="Pendse et al., Memory Efficient 3D U-Net with Reversible Mobile Inverted Bottlenecks, BrainLes 2020",
    description="U-Net of reversible mobile inverted bottlenecks; activation memory independent of depth",
)
class ReversibleUNet(SegmentationNetwork):
    """U-Net of reversible inverted-bottleneck stages: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Each spatial size must be a multiple of :attr:`divisor` ``= stem_stride * 2^(len(channels) - 1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: output channels (classes or regions).
        channels: even channel counts per level, shallowest first (level 0 at ``1/stem_stride``
            resolution); at least two levels.
        blocks_per_stage: reversible blocks per encoder and per decoder stage, one int or one per level.
        expansion: expansion ratio of the inverted bottlenecks ``F`` and ``G`` (hidden channels are
            ``expansion * C / 2``).
        kernel_size: odd depthwise kernel size.
        stem_stride: stride of the stem convolution and of the final transposed convolution (1 keeps level 0
            at full resolution; 2 halves the memory-heaviest level).
        norm: ``"instance"`` or ``"group"`` (batch norm is refused: recomputation would update it twice).
        num_groups: groups for ``norm="group"``.
        reversible: rebuild activations in the backward pass (``False`` builds the plain-autograd twin).
        kernel_backend: backend of the depthwise convolution and coupling kernels (``"auto"``, ``"cupy"``,
            ``"torch"``).

    Raises:
        ConfigError: fewer than two levels, an odd channel count, a bad ``blocks_per_stage`` list,
            ``stem_stride < 1`` or an invalid bottleneck option.
    """

    supports_grad_checkpointing = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        blocks_per_stage: int | Sequence[int] = 2,
        expansion: float = 4,
        kernel_size: int = 3,
        stem_stride: int = 2,
        norm: str = "instance",
        num_groups: int = 8,
        reversible: bool = True,
        kernel_backend: str = "auto",
    ) -> None:
        levels = len(channels)
        if levels < 2:
            raise ConfigError(f"reversible_unet needs at least 2 levels (channels); got {tuple(channels)}")
        if stem_stride < 1:
            raise ConfigError(f"stem_stride must be >= 1; got {stem_stride}")
        super().__init__(spatial_dims, in_channels, out_channels, stem_stride * 2 ** (levels - 1))
        blocks = _per_level(blocks_per_stage, levels)
        self.channels = tuple(int(c) for c in channels)
        self.blocks_per_stage = tuple(blocks)
        conv, conv_t = layers.conv(spatial_dims), layers.conv_transpose(spatial_dims)

        def stage(level: int) -> ReversibleSequence:
            return make_reversible_sequence(
                spatial_dims,
                self.channels[level],
                blocks[level],
                expansion=expansion,
                kernel_size=kernel_size,
                norm=norm,
                num_groups=num_groups,
                reversible=reversible,
                backend=kernel_backend,
            )

        stem_kernel = 3 if stem_stride == 1 else stem_stride + 1
        self.stem = conv(in_channels, self.channels[0], stem_kernel, stride=stem_stride, padding=stem_kernel // 2)
        self.down = nn.ModuleList(
            conv(self.channels[i], self.channels[i + 1], 2, stride=2) for i in range(levels - 1)
        )
        self.encoder = nn.ModuleList(stage(i) for i in range(levels))
        # up[i] and decoder[i] bring level i + 1 back to level i.
        self.up = nn.ModuleList(
            conv_t(self.channels[i + 1], self.channels[i], 2, stride=2) for i in range(levels - 1)
        )
        self.decoder = nn.ModuleList(stage(i) for i in range(levels - 1))
        self.head = conv_t(self.channels[0], out_channels, stem_stride, stride=stem_stride)

    @property
    def reversible(self) -> bool:
        """Whether the stages rebuild their activations in the backward pass."""
        return all(seq.reversible for seq in self._sequences())

    def set_reversible(self, enable: bool = True) -> None:
        """Switch between the reversible backward pass and plain autograd (same weights, same outputs).

        Args:
            enable: ``True`` for the memory-saving reversible backward pass.
        """
        for seq in self._sequences():
            seq.reversible = bool(enable)

    def _sequences(self) -> list[ReversibleSequence]:
        return [*self.encoder, *self.decoder]

    def _run(self, seq: ReversibleSequence, x: torch.Tensor) -> torch.Tensor:
        # Reversible stages already recompute instead of storing; checkpointing helps only the plain twin.
        if self.grad_checkpointing and not seq.reversible and self.training and torch.is_grad_enabled():
            return checkpoint(seq, x, use_reentrant=False)
        return seq(x)

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
        for level, seq in enumerate(self.encoder):
            if level > 0:
                h = self.down[level - 1](h)
            h = self._run(seq, h)
            skips.append(h)
        for level in range(len(self.decoder) - 1, -1, -1):
            h = self._run(self.decoder[level], self.up[level](h) + skips[level])
        return self.head(h)


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    """``blocks_per_stage`` as one non-negative int per level."""
    entries = [int(value)] * levels if isinstance(value, int) else [int(v) for v in value]
    if len(entries) != levels:
        raise ConfigError(f"blocks_per_stage has {len(entries)} entries but there are {levels} levels (channels)")
    if any(n < 0 for n in entries):
        raise ConfigError(f"blocks_per_stage must be >= 0 per level; got {entries}")
    return entries
