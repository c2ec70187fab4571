"""Vision-transformer encoder for 2D and 3D feature maps: patch embedding with resizable position
embeddings, pre-norm transformer blocks (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Module names mirror the official ViT checkpoint layout (query/key/value/out projections, two LayerNorms and
an MLP per block) so that :mod:`medseg.networks.transunet_weights` can map the official arrays one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.errors import ConfigError
from medseg.networks import layers


class PatchEmbedding(nn.Module):
    """Cut a feature map into patches, project them to tokens and add position embeddings.

    ``(B, C, *S) -> (B, N, hidden_size)`` with ``N = prod(S / patch_size)``. The position-embedding table is
    stored for ``grid_size``; an input with a different token grid gets the table resampled (bilinear or
    trilinear) to its grid.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C`` of the feature map.
        hidden_size: token width.
        patch_size: patch edge per axis (in feature-map pixels).
        grid_size: token grid the stored position embeddings describe, per axis.
        dropout_rate: dropout after adding the position embeddings.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_size: int,
        patch_size: tuple[int, ...],
        grid_size: tuple[int, ...],
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.grid_size = tuple(grid_size)
        self.patch = layers.conv(spatial_dims)(in_channels, hidden_size, patch_size, stride=patch_size)
        n_tokens = 1
        for g in self.grid_size:
            n_tokens *= g
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_tokens, hidden_size))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        self.dropout = nn.Dropout(dropout_rate)

    def position_embedding_for(self, grid: Sequence[int]) -> torch.Tensor:
        """Position embeddings ``(1, prod(grid), hidden_size)`` for a token grid, resampled if needed."""
        grid = tuple(int(g) for g in grid)
        if grid == self.grid_size:
            return self.position_embeddings
        hidden = self.position_embeddings.shape[-1]
        table = self.position_embeddings.transpose(1, 2).reshape(1, hidden, *self.grid_size)
        table = F.interpolate(table, size=grid, mode=layers.interpolate_mode(self.spatial_dims), align_corners=False)
        return table.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Embed ``x`` ``(B, C, *S)``; returns tokens ``(B, N, hidden)`` and the token grid ``S / patch``."""
        x = self.patch(x)
        grid = tuple(int(s) for s in x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2)
        return self.dropout(tokens + self.position_embedding_for(grid)), grid


class Attention(nn.Module):
    """Multi-head self-attention ``(B, N, hidden) -> (B, N, hidden)`` with separate q/k/v/out projections.

    Args:
        hidden_size: token width; divisible by ``num_heads``.
        num_heads: attention heads.
        attention_dropout_rate: dropout on the attention weights (training only).
        dropout_rate: dropout after the output projection.
    """

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout_rate: float, dropout_rate: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ConfigError(f"vit: num_heads={num_heads} does not divide hidden_size={hidden_size}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout_rate = attention_dropout_rate
        self.proj_dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

        p = self.attention_dropout_rate if self.training else 0.0
        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), dropout_p=p)
        return self.proj_dropout(self.out(y.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    """Two-layer GELU MLP ``(B, N, hidden) -> (B, N, hidden)`` with dropout after each layer.

    Args:
        hidden_size: token width.
        mlp_dim: inner width.
        dropout_rate: dropout rate.
    """

    def __init__(self, hidden_size: int, mlp_dim: int, dropout_rate: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden_size)
        self.dropout = nn.Dropout(dropout_rate)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``, shapes ``(B, N, hidden)``.

    Args:
        hidden_size: token width.
        num_heads: attention heads.
        mlp_dim: MLP inner width.
        dropout_rate: dropout rate of projections and MLP.
        attention_dropout_rate: dropout on the attention weights.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_dim: int, dropout_rate: float, attention_dropout_rate: float
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attention_dropout_rate, dropout_rate)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.ffn = Mlp(hidden_size, mlp_dim, dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` and a final LayerNorm, ``(B, N, hidden) -> (B, N, hidden)``.

    Args:
        hidden_size: token width.
        num_layers: number of blocks.
        num_heads: attention heads.
        mlp_dim: MLP inner width.
        dropout_rate: dropout rate of projections and MLP.
        attention_dropout_rate: dropout on the attention weights.
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"vit: num_layers must be >= 1; got {num_layers}")
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_dim, dropout_rate, attention_dropout_rate)
            for _ in range(num_layers)
        )
        self.encoder_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.encoder_norm(x)
