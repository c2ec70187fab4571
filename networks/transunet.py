"""TransUNet (Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation",
arXiv:2102.04306, 2021) for 2D and 3D: the R50+ViT hybrid encoder and the cascaded upsampler (CUP).

A ResNet-50-style stem brings the image to 1/16 resolution; a ViT encodes the 1/16 map as a token grid
(``patch_size`` feature-map pixels per token); the CUP decodes the tokens with skips from the stem at 1/8,
1/4 and 1/2 resolution. The official ImageNet-21k ``R50+ViT-B_16.npz`` weights load with
:func:`medseg.networks.transunet_weights.load_pretrained_npz`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.networks import layers
from medseg.networks.base import SegmentationNetwork
from medseg.networks.registry import register_network
from medseg.networks.resnet_stem import ResNetStem
from medseg.networks.vit import PatchEmbedding, TransformerEncoder

TRANSUNET_VARIANTS = {
    # R50-ViT-B/16 of the paper: R50 stem (3, 4, 9), ViT-B (768 wide, 12 layers, 12 heads, MLP 3072),
    # 14x14 token grid at 224x224, CUP decoder (256, 128, 64, 16) with 3 skips, dropout 0.1.
    "default": {},
    "r50_vit_b16": {},
    "small": {
        "hidden_size": 384,
        "num_layers": 6,
        "num_heads": 6,
        "mlp_dim": 1536,
        "stem_blocks": (2, 2, 2),
        "stem_width": 32,
        "decoder_channels": (128, 64, 32, 16),
        "head_channels": 256,
    },
    "tiny": {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "mlp_dim": 64,
        "grid_size": 2,
        "stem_blocks": (1, 1, 1),
        "stem_width": 8,
        "stem_groups": 4,
        "decoder_channels": (16, 8, 8, 4),
        "head_channels": 32,
        "dropout_rate": 0.0,
    },
}


class ConvBNReLU(nn.Sequential):
    """3x3(x3) convolution without bias, batch norm, ReLU: ``(B, C_in, *S) -> (B, C_out, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__(
            layers.conv(spatial_dims)(in_channels, out_channels, 3, padding=1, bias=False),
            layers.norm("batch", spatial_dims, out_channels),
            nn.ReLU(),
        )


class UpBlock(nn.Module):
    """CUP block: upsample x2 (linear, corners aligned), concatenate a skip if any, two conv-BN-ReLU.

    ``(B, C_in, *S) [+ skip (B, C_skip, *2S)] -> (B, C_out, *2S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: ``C_in``.
        skip_channels: ``C_skip`` (0 for no skip).
        out_channels: ``C_out``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mode = layers.interpolate_mode(spatial_dims)
        self.conv1 = ConvBNReLU(spatial_dims, in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(spatial_dims, out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=True)
        if skip is not None:
            x = torch.cat((x, skip), dim=1)
        return self.conv2(self.conv1(x))


@register_network(
    "transunet",
    spatial_dims=(2, 3),
    variants=TRANSUNET_VARIANTS,
    paper="Chen et al., TransUNet, arXiv:2102.04306 (2021)",
    description="R50+ViT hybrid encoder with cascaded upsampler; loads R50+ViT-B_16.npz",
)
class TransUNet(SegmentationNetwork):
    """TransUNet: ``(B, in_channels, *S) -> (B, out_channels, *S)``, each size a multiple of ``16 * patch_size``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        hidden_size: ViT token width (768 for ViT-B).
        num_layers: transformer blocks (12).
        num_heads: attention heads (12).
        mlp_dim: MLP inner width (3072).
        grid_size: token grid of the stored position embeddings, one int or one per axis (14: 224x224
            inputs); other input sizes resample the embeddings.
        patch_size: token edge in pixels of the 1/16 feature map (1 in the hybrid); the divisor is
            ``16 * patch_size``.
        stem_width: root width of the ResNet stem (64 for R50).
        stem_blocks: bottleneck units in the three stem stages ((3, 4, 9) for R50).
        stem_groups: group-norm groups of the stem (32).
        decoder_channels: output channels of the four CUP blocks (1/8, 1/4, 1/2, 1/1 resolution).
        head_channels: channels of the convolution that turns the tokens back into a feature map (512).
        n_skip: how many stem skips the CUP uses (0-3; deepest first).
        dropout_rate: dropout in embeddings, attention output and MLP (0.1).
        attention_dropout_rate: dropout on attention weights (0.0).

    Raises:
        ConfigError: inconsistent sizes (heads not dividing the width, 4 decoder channels needed, n_skip
            outside 0-3).
    """

    supports_grad_checkpointing = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        grid_size: int | Sequence[int] = 14,
        patch_size: int | Sequence[int] = 1,
        stem_width: int = 64,
        stem_blocks: Sequence[int] = (3, 4, 9),
        stem_groups: int = 32,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        head_channels: int = 512,
        n_skip: int = 3,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ) -> None:
        patch = layers.per_axis(patch_size, spatial_dims, "patch_size")
        grid = layers.per_axis(grid_size, spatial_dims, "grid_size")
        super().__init__(spatial_dims, in_channels, out_channels, divisor=tuple(16 * p for p in patch))
        if len(decoder_channels) != 4:
            raise ConfigError(f"transunet needs 4 decoder_channels (1/8 .. 1/1); got {tuple(decoder_channels)}")
        if not 0 <= n_skip <= 3:
            raise ConfigError(f"transunet n_skip must be 0..3; got {n_skip}")
        self.patch_size = patch
        self.grid_size = grid
        self.stem = ResNetStem(spatial_dims, in_channels, stem_width, stem_blocks, stem_groups)
        self.embeddings = PatchEmbedding(spatial_dims, self.stem.out_channels, hidden_size, patch, grid, dropout_rate)
        self.encoder = TransformerEncoder(
            hidden_size, num_layers, num_heads, mlp_dim, dropout_rate, attention_dropout_rate
        )
        self.conv_more = ConvBNReLU(spatial_dims, hidden_size, head_channels)
        skips = [*self.stem.skip_channels[:n_skip], *(0,) * (3 - n_skip), 0]
        ins = [head_channels, *decoder_channels[:-1]]
        self.decoder = nn.ModuleList(
            UpBlock(spatial_dims, c_in, c_skip, c_out) for c_in, c_skip, c_out in zip(ins, skips, decoder_channels)
        )
        self.n_skip = n_skip
        self.segmentation_head = layers.conv(spatial_dims)(decoder_channels[-1], out_channels, 3, padding=1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the transformer blocks and the stem stages; see the base class."""
        super().set_grad_checkpointing(enable)
        self.encoder.grad_checkpointing = bool(enable)
        self.stem.grad_checkpointing = bool(enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(B, in_channels, *S)``, each size a multiple of :attr:`divisor`.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        features, skips = self.stem(x)
        tokens, grid = self.embeddings(features)
        tokens = self.encoder(tokens)
        h = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
        h = self.conv_more(h)
        if h.shape[2:] != features.shape[2:]:
            h = F.interpolate(h, size=features.shape[2:], mode=layers.interpolate_mode(self.spatial_dims))
        for i, block in enumerate(self.decoder):
            h = block(h, skips[i] if i < self.n_skip else None)
        return self.segmentation_head(h)
