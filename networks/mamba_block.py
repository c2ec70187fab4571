"""Mamba (selective state space) blocks over the voxels of a 2D or 3D feature map, scanned in several orders.

A :class:`MambaBlock` maps ``(B, C, *S)`` to the same shape: LayerNorm over channels, a linear projection
to a signal ``x`` and a gate ``z`` (each ``expand * C`` channels), then for every scan order
(:func:`scan_orders`) the voxels are flattened into a token sequence in that order and run through a
causal depthwise 1D convolution + SiLU, a projection to the step size ``dt`` and the input/output matrices
``B``, ``C``, and the selective scan (:func:`medseg.kernels.selective_scan`, gated by ``z``; all orders in
one call). The outputs of the orders, put back in place, are summed and projected back to ``C`` channels;
the block is residual.

Scan orders follow VM-UNet in 2D (row-major, column-major and both reversed; Ruan & Xiang, "VM-UNet",
2024) and SegMamba's tri-orientation in 3D (each spatial axis once as the fastest-varying one; Xing et al.,
"SegMamba", MICCAI 2024). The parameterisation and initialisation of the selective scan follow Mamba
(Gu & Dao, 2023): ``A = -exp(A_log)`` with the S4D-real initialisation ``A_log[d, n] = log(n + 1)``,
``D = 1``, and the step-size bias ``dt_bias`` set so that ``softplus(dt_bias)`` is log-uniform in ``[dt_min, dt_max]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medseg import kernels
from medseg.errors import ConfigError


@dataclass(frozen=True)
class ScanOrder:
    """One way of flattening ``(B, E, *S)`` into a token sequence ``(B, E, L)``.

    Attributes:
        axes: spatial axes from slowest- to fastest-varying in the sequence (``(0, 1)`` is row-major in 2D,
            ``(1, 0)`` column-major).
        reverse: run the sequence backwards.
    """

    axes: tuple[int, ...]
    reverse: bool = False

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, E, *S) -> (B, E, L)`` in this order (contiguous)."""
        tokens = x.permute(0, 1, *(2 + a for a in self.axes)).reshape(x.shape[0], x.shape[1], -1)
        if self.reverse:
            tokens = tokens.flip(-1)
        return tokens.contiguous()

    def unflatten(self, tokens: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """``(B, E, L) -> (B, E, *spatial)``: put a sequence in this order back in place."""
        if self.reverse:
            tokens = tokens.flip(-1)
        permuted = tokens.reshape(tokens.shape[0], tokens.shape[1], *(spatial[a] for a in self.axes))
        inverse = sorted(range(len(self.axes)), key=lambda i: self.axes[i])
        return permuted.permute(0, 1, *(2 + i for i in inverse))


def scan_orders(spatial_dims: int) -> tuple[ScanOrder, ...]:
    """The scan orders of a block: four in 2D (VM-UNet), three axis orientations in 3D (SegMamba).

    Args:
        spatial_dims: 2 or 3.

    Raises:
        ConfigError: another ``spatial_dims``.
    """
    if spatial_dims == 2:
        return (ScanOrder((0, 1)), ScanOrder((1, 0)), ScanOrder((0, 1), True), ScanOrder((1, 0), True))
    if spatial_dims == 3:
        return (ScanOrder((0, 1, 2)), ScanOrder((1, 2, 0)), ScanOrder((2, 0, 1)))
    raise ConfigError(f"Mamba blocks support spatial_dims 2 or 3; got {spatial_dims}")


class MambaBlock(nn.Module):
    """Residual multi-order Mamba block: ``(B, C, *S) -> (B, C, *S)``.

    Every scan order ``k`` has its own token convolution, ``x_proj``, ``dt_proj``, ``A_log`` and ``D`` (as
    VM-UNet's SS2D); the LayerNorm, ``in_proj`` and ``out_proj`` are shared. The ``K`` orders run as one
    selective scan over ``K * E`` channels with grouped ``B``/``C`` ``(B, K, N, L)``: channels
    ``[k * E, (k + 1) * E)`` hold the tokens of order ``k``.

    Args:
        spatial_dims: 2 or 3; sets the scan orders (:func:`scan_orders`).
        channels: channels ``C``.
        d_state: SSM state size ``N``.
        d_conv: kernel size of the causal token convolution.
        expand: inner channels ``E = expand * C``.
        dt_rank: rank of the step-size projection; ``None`` for Mamba's ``ceil(C / 16)``.
        dt_min, dt_max: range of the initial step sizes ``softplus(dt_bias)`` (log-uniform).
        dt_init_floor: smallest initial step size.
        backend: backend of :func:`medseg.kernels.selective_scan`.
        orders: the scan orders; ``None`` for :func:`scan_orders` of ``spatial_dims``.

    Raises:
        ConfigError: unsupported ``spatial_dims``, a non-positive size, or orders that do not match
            ``spatial_dims``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
        orders: Sequence[ScanOrder] | None = None,
    ) -> None:
        super().__init__()
        if min(channels, d_state, d_conv, expand) < 1:
            raise ConfigError(
                f"Mamba block sizes must be >= 1; got channels={channels}, d_state={d_state}, "
                f"d_conv={d_conv}, expand={expand}"
            )
        self.orders = scan_orders(spatial_dims) if orders is None else tuple(orders)
        if not self.orders or any(sorted(o.axes) != list(range(spatial_dims)) for o in self.orders):
            raise ConfigError(f"scan orders {self.orders} must each permute the {spatial_dims} spatial axes")
        k = len(self.orders)
        inner = expand * channels
        rank = dt_rank if dt_rank is not None else math.ceil(channels / 16)
        self.inner, self.d_state, self.dt_rank, self.backend = inner, d_state, rank, backend
        self.norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, 2 * inner, bias=False)
        # Depthwise, so one convolution over the K stacked orders is K independent ones.
        self.conv1d = nn.Conv1d(k * inner, k * inner, d_conv, groups=k * inner, padding=d_conv - 1)
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, inner))
        nn.init.uniform_(self.x_proj_weight, -(inner**-0.5), inner**-0.5)  # nn.Linear's default range
        self.dt_proj_weight = nn.Parameter(torch.empty(k, inner, rank))
        nn.init.uniform_(self.dt_proj_weight, -(rank**-0.5), rank**-0.5)
        dt = torch.exp(torch.rand(k * inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        # Inverse of softplus, so that softplus(dt_bias) == dt at initialisation.
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        s4d_real = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * inner, 1)
        self.A_log = nn.Parameter(torch.log(s4d_real))  # (K * E, N)
        self.D = nn.Parameter(torch.ones(k * inner))
        # Marked as in Mamba, for optimisers that exempt such parameters from weight decay.
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(inner, channels, bias=False)

    def scan(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The selective scans of all orders, summed: ``(B, E, *S), (B, E, *S) -> (B, E, *S)``.

        Args:
            u: signal ``(B, E, *S)``.
            z: gate ``(B, E, *S)``.

        Returns:
            ``sum_k unflatten_k((scan_k(u_k) + D_k * u_k) * silu(z_k))``, ``(B, E, *S)``.
        """
        batch, spatial = u.shape[0], tuple(u.shape[2:])
        k, inner, n = len(self.orders), self.inner, self.d_state
        tokens = torch.cat([order.flatten(u) for order in self.orders], dim=1)  # (B, K*E, L)
        gates = torch.cat([order.flatten(z) for order in self.orders], dim=1)
        length = tokens.shape[-1]
        tokens = F.silu(self.conv1d(tokens)[..., :length])  # causal: output t sees tokens <= t
        proj = torch.einsum("bkel,kre->bkrl", tokens.view(batch, k, inner, length), self.x_proj_weight)
        dt, b, c = torch.split(proj, [self.dt_rank, n, n], dim=2)  # (B, K, R | N | N, L)
        delta = torch.einsum("bkrl,ker->bkel", dt, self.dt_proj_weight).reshape(batch, k * inner, length)
        out = kernels.selective_scan(
            tokens,
            delta,
            -torch.exp(_at_least_float32(self.A_log)),
            b.contiguous(),
            c.contiguous(),
            D=_at_least_float32(self.D),
            z=gates,
            delta_bias=_at_least_float32(self.dt_bias),
            delta_softplus=True,
            backend=self.backend,
        )
        out = out.view(batch, k, inner, length)
        mixed = self.orders[0].unflatten(out[:, 0], spatial)
        for i in range(1, k):
            mixed = mixed + self.orders[i].unflatten(out[:, i], spatial)
        return mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: features ``(B, C, *S)``.

        Returns:
            ``(B, C, *S)``.
        """
        batch, _, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C), row-major
        xz = self.in_proj(self.norm(tokens)).transpose(1, 2).reshape(batch, -1, *spatial)
        u, z = xz.chunk(2, dim=1)  # (B, E, *S) each
        out = self.out_proj(self.scan(u, z).flatten(2).transpose(1, 2))  # (B, L, C)
        return x + out.transpose(1, 2).reshape(x.shape)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a lower precision (the SSM parameters, as in Mamba), else unchanged."""
    return t if t.dtype == torch.float64 else t.float()
