"""Swin UNETR (Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors
in MRI Images", BrainLes 2021), built on MONAI's implementation for 2D and 3D.

medseg wraps :class:`monai.networks.nets.SwinUNETR` rather than reimplementing it: the wrapper adds the
common network interface (input checks, divisor, switchable gradient checkpointing) and named variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medseg.errors import ConfigError
from medseg.networks.base import SegmentationNetwork
from medseg.networks.registry import register_network

SWIN_UNETR_VARIANTS = {
    # The BraTS 2021 recipe of the paper: feature size 48, depths (2, 2, 2, 2), heads (3, 6, 12, 24), window 7.
    "default": {"feature_size": 48},
    "small": {"feature_size": 24},
    "tiny": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 4},
}


@register_network(
    "swin_unetr",
    spatial_dims=(2, 3),
    variants=SWIN_UNETR_VARIANTS,
    paper="Hatamizadeh et al., Swin UNETR, BrainLes (MICCAI workshop) 2021",
    description="Swin transformer encoder + CNN decoder (MONAI's SwinUNETR)",
)
class SwinUNETR(SegmentationNetwork):
    """Swin UNETR: ``(B, in_channels, *S) -> (B, out_channels, *S)``, every spatial size a multiple of 32.

    The MONAI model is the submodule ``model`` (its state-dict keys carry the prefix ``model.``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        feature_size: embedding width of the first stage; a multiple of 12 (MONAI's requirement).
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage; each must divide ``feature_size * 2**stage``.
        window_size: attention window (tokens per axis).
        drop_rate: dropout rate.
        attn_drop_rate: attention dropout rate.
        dropout_path_rate: stochastic-depth rate.
        norm_name: normalisation of the CNN decoder blocks (MONAI name, e.g. ``"instance"``).
        normalize: layer-normalise the Swin stage outputs before the decoder.
        use_v2: MONAI's SwinUNETR-v2 (adds a residual convolution block before each Swin stage).

    Raises:
        ConfigError: ``feature_size`` not a multiple of 12, or a head count that does not divide its width.
    """

    supports_grad_checkpointing = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        norm_name: str = "instance",
        normalize: bool = True,
        use_v2: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, divisor=32)
        if feature_size % 12:
            raise ConfigError(f"swin_unetr feature_size must be a multiple of 12; got {feature_size}")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ConfigError(f"swin_unetr needs 4 depths and 4 num_heads; got {tuple(depths)}, {tuple(num_heads)}")
        for stage, heads in enumerate(num_heads):
            if (feature_size * 2**stage) % heads:
                raise ConfigError(
                    f"swin_unetr stage {stage}: {heads} heads do not divide its width {feature_size * 2**stage}"
                )
        from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

        self.model = MonaiSwinUNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            feature_size=feature_size,
            norm_name=norm_name,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            dropout_path_rate=dropout_path_rate,
            normalize=normalize,
            use_checkpoint=False,
            spatial_dims=spatial_dims,
            use_v2=use_v2,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every Swin block (MONAI's ``use_checkpoint``); see the base class."""
        super().set_grad_checkpointing(enable)
        for module in self.model.modules():
            if hasattr(module, "use_checkpoint"):
                module.use_checkpoint = bool(enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of 32.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        return self.model(x)
