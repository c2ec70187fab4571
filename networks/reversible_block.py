"""Reversible blocks with additive coupling, and a sequence of them whose backward pass stores no activations.

A :class:`ReversibleBlock` splits its input along channels, ``x = (x1, x2)``, and computes::

    y1 = x1 + F(x2)        x2 = y2 - G(y1)
    y2 = x2 + G(y1)        x1 = y1 - F(x2)

so its input can be rebuilt from its output (Gomez et al., "The Reversible Residual Network", NeurIPS 2017).
:class:`ReversibleSequence` runs a list of such blocks inside one ``torch.autograd.Function`` that keeps
only the sequence's output; the backward pass rebuilds each block's input from its output and recomputes
``F`` and ``G`` with gradients, one block at a time. Activation memory therefore does not grow with the
number of blocks. ``F`` and ``G`` are :class:`InvertedBottleneck` modules (MobileNetV2's mobile inverted
bottleneck without batch norm: recomputation would update running statistics twice).

The additive updates go through :func:`medseg.kernels.coupling_forward` / ``coupling_inverse`` and the
depthwise convolution through :func:`medseg.kernels.depthwise_conv3d`, so fused CUDA kernels replace them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from medseg import kernels
from medseg.errors import ConfigError
from medseg.networks import layers

REVERSIBLE_NORMS = ("instance", "group")


class DepthwiseConv(nn.Module):
    """Depthwise ``k x k (x k)`` convolution with same padding: ``(B, C, *S) -> (B, C, *S)``.

    In 3D it runs :func:`medseg.kernels.depthwise_conv3d` (a CUDA kernel where available); in 2D
    ``torch.nn.functional.conv2d`` with one group per channel.

    Args:
        spatial_dims: 2 or 3.
        channels: channels ``C``.
        kernel_size: odd kernel size along every axis.
        backend: kernel backend for 3D, ``"auto"``, ``"cupy"`` or ``"torch"`` (see :mod:`medseg.kernels`).
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3, backend: str = "auto") -> None:
        super().__init__()
        layers.same_padding((kernel_size,))
        self.spatial_dims = spatial_dims
        self.kernel_size = kernel_size
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(channels, 1, *(kernel_size,) * spatial_dims))
        # Same fan-in initialisation as a grouped nn.Conv with one input channel per group.
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 3:
            return kernels.depthwise_conv3d(x, self.weight, None, stride=1, backend=self.backend)
        return F.conv2d(x, self.weight, None, padding=self.kernel_size // 2, groups=self.weight.shape[0])


class InvertedBottleneck(nn.Module):
    """Mobile inverted bottleneck without residual: ``(B, C, *S) -> (B, C, *S)``.

    1x1 expansion to ``expansion * C`` channels, norm, SiLU; depthwise ``k^d`` convolution, norm, SiLU;
    1x1 projection back to ``C`` channels, norm (no nonlinearity, as in MobileNetV2/EfficientNet).

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels ``C``.
        expansion: channel expansion ratio of the hidden layer (>= 1).
        kernel_size: odd size of the depthwise kernel.
        norm: ``"instance"`` or ``"group"``; batch norm is refused (see the module docstring).
        num_groups: groups for ``norm="group"`` (clipped to divide the channel count).
        backend: kernel backend of the 3D depthwise convolution.
        output_scale: initial scale of the last norm's affine map, i.e. the initial standard deviation of
            the block's output per channel.

    Raises:
        ConfigError: batch norm or an unknown norm, ``expansion < 1``, even kernel size.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        expansion: float = 4,
        kernel_size: int = 3,
        norm: str = "instance",
        num_groups: int = 8,
        backend: str = "auto",
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if norm not in REVERSIBLE_NORMS:
            raise ConfigError(
                f"reversible blocks need a per-sample norm, one of {REVERSIBLE_NORMS}; got {norm!r} "
                "(batch norm would update its running statistics again when the block is recomputed)"
            )
        if expansion < 1:
            raise ConfigError(f"expansion must be >= 1; got {expansion}")
        hidden = max(1, int(round(channels * expansion)))
        conv = layers.conv(spatial_dims)
        self.expand = conv(channels, hidden, 1, bias=False)
        self.norm1 = _norm(norm, spatial_dims, hidden, num_groups)
        self.depthwise = DepthwiseConv(spatial_dims, hidden, kernel_size, backend)
        self.norm2 = _norm(norm, spatial_dims, hidden, num_groups)
        self.project = conv(hidden, channels, 1, bias=False)
        self.norm3 = _norm(norm, spatial_dims, channels, num_groups)
        nn.init.constant_(self.norm3.weight, output_scale)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.expand(x)))
        h = self.act(self.norm2(self.depthwise(h)))
        return self.norm3(self.project(h))


class ReversibleBlock(nn.Module):
    """Additive coupling of two functions on a channel split: ``(B, C, *S) -> (B, C, *S)``, C even.

    Args:
        f: module mapping ``(B, C/2, *S)`` to the same shape (the ``F`` above).
        g: module mapping ``(B, C/2, *S)`` to the same shape (the ``G`` above).
        backend: kernel backend of the coupling ops (``"auto"``, ``"cupy"``, ``"torch"``).
    """

    def __init__(self, f: nn.Module, g: nn.Module, backend: str = "auto") -> None:
        super().__init__()
        self.f = f
        self.g = g
        self.backend = backend

    def forward_pair(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block on split halves: ``(x1, x2) -> (y1, y2)``, each ``(B, C/2, *S)``."""
        # Casting keeps the halves in one dtype where autocast returns F or G in another.
        y1 = kernels.coupling_forward(x1, self.f(x2).to(x1.dtype), backend=self.backend)
        y2 = kernels.coupling_forward(x2, self.g(y1).to(x2.dtype), backend=self.backend)
        return y1, y2

    def inverse_pair(self, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse on split halves: ``(y1, y2) -> (x1, x2)``, each ``(B, C/2, *S)``."""
        x2 = kernels.coupling_inverse(y2, self.g(y1).to(y2.dtype), backend=self.backend)
        x1 = kernels.coupling_inverse(y1, self.f(x2).to(y1.dtype), backend=self.backend)
        return x1, x2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain autograd forward: ``(B, C, *S) -> (B, C, *S)``."""
        return torch.cat(self.forward_pair(*_halves(x)), dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Rebuild the input from the output: ``(B, C, *S) -> (B, C, *S)``."""
        return torch.cat(self.inverse_pair(*_halves(y)), dim=1)

    def backward_pair(
        self, y1: torch.Tensor, y2: torch.Tensor, dy1: torch.Tensor, dy2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Rebuild the input and back-propagate through the block, recomputing ``G`` and ``F`` once each.

        With ``dz1 = dy1 + (dG/dy1)^T dy2`` the input gradients are ``dx1 = dz1`` and
        ``dx2 = dy2 + (dF/dx2)^T dz1``.

        Args:
            y1, y2: output halves ``(B, C/2, *S)`` (no graph attached).
            dy1, dy2: gradients of the loss with respect to ``y1`` and ``y2``.

        Returns:
            ``(x1, x2, dx1, dx2, param_grads)``: the rebuilt input halves, their gradients, and one gradient
            (or ``None``) per entry of ``list(self.parameters())``.
        """
        g_params = list(self.g.parameters())
        f_params = list(self.f.parameters())
        with torch.enable_grad():
            y1_leaf = y1.detach().requires_grad_(True)
            g_out = self.g(y1_leaf).to(y2.dtype)
        g_grads = _grad(g_out, [y1_leaf, *g_params], dy2)
        with torch.no_grad():
            x2 = kernels.coupling_inverse(y2, g_out.detach(), backend=self.backend)
        del g_out
        dz1 = dy1 if g_grads[0] is None else dy1 + g_grads[0]
        with torch.enable_grad():
            x2_leaf = x2.detach().requires_grad_(True)
            f_out = self.f(x2_leaf).to(y1.dtype)
        f_grads = _grad(f_out, [x2_leaf, *f_params], dz1)
        with torch.no_grad():
            x1 = kernels.coupling_inverse(y1, f_out.detach(), backend=self.backend)
        del f_out
        dx2 = dy2 if f_grads[0] is None else dy2 + f_grads[0]
        # list(self.parameters()) lists f's parameters, then g's (registration order).
        return x1, x2, dz1, dx2, [*f_grads[1:], *g_grads[1:]]


class _ReversibleFunction(torch.autograd.Function):
    """Runs reversible blocks keeping only the final output; rebuilds inputs in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: Sequence[ReversibleBlock], *params: torch.Tensor) -> torch.Tensor:
        ctx.blocks = blocks
        # The backward pass recomputes F and G; it must do so under the forward's autocast state.
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        x1, x2 = _halves(x)
        for block in blocks:
            x1, x2 = block.forward_pair(x1, x2)
        y = torch.cat((x1, x2), dim=1)
        # The only tensor kept for backward; every block's input is freed once the next block has run.
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        y1, y2 = _halves(y)
        dy1, dy2 = _halves(dy)
        del y
        grads_per_block: list[list[torch.Tensor | None]] = []
        device_type, enabled, dtype = ctx.autocast
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            for block in reversed(ctx.blocks):
                y1, y2, dy1, dy2, param_grads = block.backward_pair(y1, y2, dy1, dy2)
                grads_per_block.append(param_grads)
        dx = torch.cat((dy1, dy2), dim=1)
        flat = [g for block_grads in reversed(grads_per_block) for g in block_grads]
        return (dx, None, *flat)


class ReversibleSequence(nn.Module):
    """Reversible blocks applied in order: ``(B, C, *S) -> (B, C, *S)``.

    With ``reversible=True`` and gradients enabled, the blocks run inside a custom autograd function that
    stores only the output and rebuilds the inputs in the backward pass; otherwise (``reversible=False``,
    ``torch.no_grad()``, or nothing requiring gradients) they run as plain modules, storing every activation
    as usual. Both modes compute the same function with the same parameters.

    Args:
        blocks: the reversible blocks.
        reversible: use the memory-saving backward pass.
    """

    def __init__(self, blocks: Sequence[ReversibleBlock], reversible: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.reversible = bool(reversible)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = list(self.parameters())
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
        if self.reversible and needs_grad and len(self.blocks) > 0:
            return _ReversibleFunction.apply(x, list(self.blocks), *params)
        for block in self.blocks:
            x = block(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Rebuild the sequence's input from its output: ``(B, C, *S) -> (B, C, *S)``."""
        y1, y2 = _halves(y)
        for block in reversed(self.blocks):
            y1, y2 = block.inverse_pair(y1, y2)
        return torch.cat((y1, y2), dim=1)


def make_reversible_sequence(
    spatial_dims: int,
    channels: int,
    num_blocks: int,
    *,
    expansion: float = 4,
    kernel_size: int = 3,
    norm: str = "instance",
    num_groups: int = 8,
    reversible: bool = True,
    backend: str = "auto",
) -> ReversibleSequence:
    """``num_blocks`` reversible inverted-bottleneck blocks on ``channels`` channels.

    Each ``F`` and ``G`` starts with output scale ``1 / sqrt(num_blocks)`` (the initial weight of its last
    norm), so that at initialisation a sequence adds unit variance to each half whatever its depth
    (depth-scaled residual initialisation, as in Fixup or SkipInit). This also bounds the magnitude of the
    activations and the Lipschitz constants of ``F`` and ``G``, which set how float rounding in the forward
    couplings grows when the inverse rebuilds the input: 20 blocks rebuild a unit-variance input to about
    ``3e-6`` in float32 (with output scale 1 it would be about ``6e-5``).

    Args:
        spatial_dims: 2 or 3.
        channels: channels ``C`` of the sequence's input and output; even (split in two halves).
        num_blocks: number of blocks (>= 0).
        expansion: expansion ratio of each ``F``/``G`` bottleneck.
        kernel_size: odd depthwise kernel size.
        norm: ``"instance"`` or ``"group"``.
        num_groups: groups for group norm.
        reversible: use the memory-saving backward pass.
        backend: kernel backend of the 3D depthwise convolution and of the couplings.

    Returns:
        The :class:`ReversibleSequence`.

    Raises:
        ConfigError: odd ``channels`` or negative ``num_blocks``, or an invalid bottleneck option.
    """
    if channels % 2:
        raise ConfigError(f"reversible blocks split channels in two halves; got an odd channel count {channels}")
    if num_blocks < 0:
        raise ConfigError(f"the number of reversible blocks must be >= 0; got {num_blocks}")
    half = channels // 2
    scale = 1.0 / max(num_blocks, 1) ** 0.5

    def bottleneck() -> InvertedBottleneck:
        return InvertedBottleneck(spatial_dims, half, expansion, kernel_size, norm, num_groups, backend, scale)

    blocks = [ReversibleBlock(bottleneck(), bottleneck(), backend) for _ in range(num_blocks)]
    return ReversibleSequence(blocks, reversible=reversible)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(B, C, *S)`` into two ``(B, C/2, *S)`` halves along channels."""
    x1, x2 = torch.chunk(x, 2, dim=1)
    return x1, x2


def _grad(
    output: torch.Tensor, inputs: list[torch.Tensor], grad_output: torch.Tensor
) -> list[torch.Tensor | None]:
    """Gradients of ``output`` (weighted by ``grad_output``) for the inputs that require them."""
    wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
    grads: list[torch.Tensor | None] = [None] * len(inputs)
    if wanted:
        found = torch.autograd.grad(output, [inputs[i] for i in wanted], grad_output, allow_unused=True)
        for i, g in zip(wanted, found):
            grads[i] = g
    return grads


def _norm(name: str, spatial_dims: int, channels: int, num_groups: int) -> nn.Module:
    """Instance or group norm; group count reduced to the largest divisor of ``channels`` not above it."""
    if name == "group":
        groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
        return layers.norm("group", spatial_dims, channels, num_groups=groups)
    return layers.norm(name, spatial_dims, channels)
