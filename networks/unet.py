"""nnU-Net-style U-Net for 2D and 3D: plain or residual encoder, per-stage strides and kernels.

Follows the architecture of nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021) and its residual-encoder presets
(Isensee et al., "nnU-Net Revisited", MICCAI 2024): per stage two 3x3(x3) convolutions with instance norm and
leaky ReLU (slope 0.01), downsampling by strided convolution, upsampling by transposed convolution,
concatenated skips, and optional deep-supervision heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.errors import ConfigError, unknown_choice
from medseg.networks import layers
from medseg.networks.base import SegmentationNetwork
from medseg.networks.registry import register_network

ENCODERS = ("plain", "residual")

_NNUNET_FEATURES = (32, 64, 128, 256, 320, 320)
UNET_VARIANTS = {
    # medseg's default 3D U-Net (about 5.7M parameters at 4 -> 3 channels); the inference benchmark model.
    "default": {"features": (16, 32, 64, 128, 256), "strides": (1, 2, 2, 2, 2)},
    "small": {"features": (8, 16, 32, 64), "strides": (1, 2, 2, 2)},
    "tiny": {"features": (4, 8, 16), "strides": (1, 2, 2)},
    # nnU-Net 3d_fullres topology for a 128^3 patch: six stages, 32..320 features.
    "nnunet_3d_fullres": {"features": _NNUNET_FEATURES, "strides": (1, 2, 2, 2, 2, 2)},
    # nnU-Net ResEnc M: residual encoder (1, 3, 4, 6, 6, 6) blocks, one conv per decoder stage.
    "resenc_m": {
        "features": _NNUNET_FEATURES,
        "strides": (1, 2, 2, 2, 2, 2),
        "encoder": "residual",
        "blocks_per_stage": (1, 3, 4, 6, 6, 6),
        "decoder_convs_per_stage": 1,
    },
    "resenc_tiny": {
        "features": (4, 8, 16),
        "strides": (1, 2, 2),
        "encoder": "residual",
        "blocks_per_stage": (1, 2, 2),
        "decoder_convs_per_stage": 1,
    },
}

AxisSpec = int | Sequence[int]


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation, nonlinearity: ``(B, C_in, *S) -> (B, C_out, *S / stride)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: per-axis odd kernel size.
        stride: per-axis stride.
        norm: normalisation name (see :func:`medseg.networks.layers.norm`).
        act: nonlinearity name, or ``"none"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        norm: str,
        act: str,
    ) -> None:
        super().__init__(
            layers.conv(spatial_dims)(
                in_channels, out_channels, kernel_size, stride=stride, padding=layers.same_padding(kernel_size)
            ),
            layers.norm(norm, spatial_dims, out_channels),
            layers.activation(act),
        )


class ResidualBlock(nn.Module):
    """nnU-Net's ``BasicBlockD``: two conv-norm layers plus a skip; the skip downsamples by average pooling.

    ``(B, C_in, *S) -> (B, C_out, *S / stride)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: per-axis odd kernel size.
        stride: per-axis stride of the first convolution (and of the skip's pooling).
        norm: normalisation name.
        act: nonlinearity name.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        norm: str,
        act: str,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, norm, act)
        ones = (1,) * spatial_dims
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, ones, norm, "none")
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(layers.avg_pool(spatial_dims)(stride, stride))
        if in_channels != out_channels:
            skip.append(layers.conv(spatial_dims)(in_channels, out_channels, 1, bias=False))
            skip.append(layers.norm(norm, spatial_dims, out_channels))
        self.skip = nn.Sequential(*skip)
        self.act = layers.activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class DecoderStage(nn.Module):
    """Upsample ``(B, C_low, *S)`` by a transposed convolution, concatenate the skip, convolve.

    Args:
        spatial_dims: 2 or 3.
        low_channels: channels of the lower-resolution input.
        skip_channels: channels of the skip (and of the output).
        stride: per-axis upsampling factor (kernel size of the transposed convolution).
        kernel_size: per-axis kernel of the convolutions after concatenation.
        n_convs: number of convolutions after concatenation.
        norm: normalisation name.
        act: nonlinearity name.
    """

    def __init__(
        self,
        spatial_dims: int,
        low_channels: int,
        skip_channels: int,
        stride: tuple[int, ...],
        kernel_size: tuple[int, ...],
        n_convs: int,
        norm: str,
        act: str,
    ) -> None:
        super().__init__()
        self.up = layers.conv_transpose(spatial_dims)(low_channels, skip_channels, stride, stride=stride)
        ones = (1,) * spatial_dims
        convs = [ConvNormAct(spatial_dims, 2 * skip_channels, skip_channels, kernel_size, ones, norm, act)]
        convs += [
            ConvNormAct(spatial_dims, skip_channels, skip_channels, kernel_size, ones, norm, act)
            for _ in range(n_convs - 1)
        ]
        self.convs = nn.Sequential(*convs)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat((self.up(low), skip), dim=1))


@register_network(
    "unet",
    spatial_dims=(2, 3),
    variants=UNET_VARIANTS,
    paper="Isensee et al., nnU-Net, Nature Methods 2021; ResEnc presets: nnU-Net Revisited, MICCAI 2024",
    description="nnU-Net-style U-Net, plain or residual encoder, deep supervision",
)
class UNet(SegmentationNetwork):
    """nnU-Net-style U-Net: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Each spatial size must be a multiple of :attr:`divisor`, the product of the strides per axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: output channels (classes or regions).
        features: channels per stage, shallowest first; the number of stages is its length.
        strides: one downsampling stride per stage (each an int or per-axis); the first stage's must be 1
            (the output has the input's resolution). Default: 1 then 2 for every later stage.
        kernel_sizes: convolution kernel: one int for all stages and axes, or a sequence with one entry per
            stage (each an int or per-axis), e.g. ``((1, 3, 3), 3, 3, 3, 3)`` for an anisotropic first stage.
        encoder: ``"plain"`` (``convs_per_stage`` conv-norm-act per stage) or ``"residual"``
            (nnU-Net ResEnc: a stem convolution then ``blocks_per_stage`` residual blocks).
        convs_per_stage: convolutions per plain encoder stage.
        blocks_per_stage: residual blocks per stage for ``encoder="residual"`` (one int or one per stage).
        decoder_convs_per_stage: convolutions per decoder stage after the skip concatenation.
        norm: ``"instance"``, ``"group"``, ``"batch"`` (see :func:`medseg.networks.layers.norm`).
        act: ``"leaky_relu"`` (slope 0.01), ``"relu"`` or ``"gelu"``.
        deep_supervision: in training mode return a list of logits ``[full, 1/2, 1/4, ...]``, one per decoder
            stage, highest resolution first; in eval mode only the full-resolution logits are returned.

    Raises:
        ConfigError: inconsistent stage lists, an unknown encoder/norm/activation, fewer than 2 stages.
    """

    supports_grad_checkpointing = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[AxisSpec] | None = None,
        kernel_sizes: AxisSpec | Sequence[AxisSpec] = 3,
        encoder: str = "plain",
        convs_per_stage: int = 2,
        blocks_per_stage: int | Sequence[int] = 2,
        decoder_convs_per_stage: int = 2,
        norm: str = "instance",
        act: str = "leaky_relu",
        deep_supervision: bool = False,
    ) -> None:
        n_stages = len(features)
        if n_stages < 2:
            raise ConfigError(f"unet needs at least 2 stages (features); got {tuple(features)}")
        if encoder not in ENCODERS:
            raise unknown_choice("unet encoder", encoder, ENCODERS)
        if strides is None:
            strides = (1,) + (2,) * (n_stages - 1)
        stage_strides = _per_stage(strides, n_stages, "strides")
        stage_kernels = _per_stage(kernel_sizes, n_stages, "kernel_sizes")
        strides_t = [layers.per_axis(s, spatial_dims, "stride") for s in stage_strides]
        if any(s != 1 for s in strides_t[0]):
            raise ConfigError(f"unet: the first stage's stride must be 1 (full-resolution output); got {strides_t[0]}")
        kernels_t = [layers.per_axis(k, spatial_dims, "kernel size") for k in stage_kernels]
        for k in kernels_t:
            layers.same_padding(k)
        divisor = tuple(math.prod(s[a] for s in strides_t) for a in range(spatial_dims))
        super().__init__(spatial_dims, in_channels, out_channels, divisor)
        if min(convs_per_stage, decoder_convs_per_stage) < 1:
            raise ConfigError("convs_per_stage and decoder_convs_per_stage must be >= 1")
        self.features = tuple(int(f) for f in features)
        self.strides = tuple(strides_t)
        self.kernel_sizes = tuple(kernels_t)
        self.deep_supervision = bool(deep_supervision)

        if encoder == "plain":
            ones = (1,) * spatial_dims
            self.stem = nn.Identity()
            self.encoder = nn.ModuleList()
            channels = in_channels
            for f, k, s in zip(self.features, kernels_t, strides_t):
                stage = [ConvNormAct(spatial_dims, channels, f, k, s, norm, act)]
                stage += [ConvNormAct(spatial_dims, f, f, k, ones, norm, act) for _ in range(convs_per_stage - 1)]
                self.encoder.append(nn.Sequential(*stage))
                channels = f
        else:
            blocks = _per_stage(blocks_per_stage, n_stages, "blocks_per_stage")
            if any(int(b) < 1 for b in blocks):
                raise ConfigError(f"blocks_per_stage must be >= 1 per stage; got {blocks}")
            ones = (1,) * spatial_dims
            self.stem = ConvNormAct(spatial_dims, in_channels, self.features[0], kernels_t[0], ones, norm, act)
            self.encoder = nn.ModuleList()
            channels = self.features[0]
            for f, k, s, n in zip(self.features, kernels_t, strides_t, blocks):
                stage = [ResidualBlock(spatial_dims, channels, f, k, s, norm, act)]
                stage += [ResidualBlock(spatial_dims, f, f, k, ones, norm, act) for _ in range(int(n) - 1)]
                self.encoder.append(nn.Sequential(*stage))
                channels = f

        # decoder[i] upsamples from stage i + 1 to stage i; heads[i] maps stage i's decoder output to logits.
        self.decoder = nn.ModuleList(
            DecoderStage(
                spatial_dims,
                self.features[i + 1],
                self.features[i],
                strides_t[i + 1],
                kernels_t[i],
                decoder_convs_per_stage,
                norm,
                act,
            )
            for i in range(n_stages - 1)
        )
        # Heads below full resolution exist only with deep supervision, so that every parameter is used.
        n_heads = n_stages - 1 if self.deep_supervision else 1
        self.heads = nn.ModuleList(layers.conv(spatial_dims)(self.features[i], out_channels, 1) for i in range(n_heads))
        self.apply(_init_weights)

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment a batch.

        Args:
            x: ``(B, in_channels, *S)``; every spatial size a multiple of :attr:`divisor`.

        Returns:
            Logits ``(B, out_channels, *S)``; with ``deep_supervision`` in training mode a list of logits at
            full, 1/2, 1/4, ... resolution (one per decoder stage, highest first).
        """
        self.check_input(x)
        skips = []
        h = self.stem(x)
        for stage in self.encoder:
            h = self._run(stage, h)
            skips.append(h)
        outputs = []
        want_all = self.deep_supervision and self.training
        for i in range(len(self.decoder) - 1, -1, -1):
            h = self._run(self.decoder[i], h, skips[i])
            if want_all or i == 0:
                outputs.append(self.heads[i](h))
        if want_all:
            return outputs[::-1]
        return outputs[-1]


def _per_stage(value: AxisSpec | Sequence[AxisSpec], n_stages: int, what: str) -> list[AxisSpec]:
    """One entry per stage: a scalar is repeated; a sequence must have ``n_stages`` entries."""
    if isinstance(value, int):
        return [value] * n_stages
    entries = list(value)
    if len(entries) != n_stages:
        raise ConfigError(f"{what} has {len(entries)} entries but there are {n_stages} stages (len(features))")
    return entries


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _init_weights(module: nn.Module) -> None:
    """He initialisation for the leaky-ReLU convolutions, zero biases (as nnU-Net)."""
    if isinstance(module, _CONV_TYPES):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
