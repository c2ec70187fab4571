"""The interface every medseg network keeps: attributes, input checks, gradient checkpointing.

Every builder registered with :func:`medseg.networks.registry.register_network` returns a
:class:`SegmentationNetwork`: ``forward(x)`` maps ``(B, in_channels, *spatial)`` to logits
``(B, out_channels, *spatial)``, and ``check_input(x)`` turns a wrong input into a readable error before
a convolution fails deep inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError, InputError


class SegmentationNetwork(nn.Module):
    """Base class of every registered segmentation network.

    Subclasses call ``super().__init__(spatial_dims, in_channels, out_channels, divisor)`` and set the class
    attribute ``supports_grad_checkpointing = True`` when they implement checkpointing; they read
    ``self.grad_checkpointing`` in ``forward``.

    Args:
        spatial_dims: number of spatial dimensions of the input, 2 or 3.
        in_channels: channels of the input image.
        out_channels: channels of the output logits (classes or regions).
        divisor: every spatial size of the input must be a multiple of this; one int for all axes or one
            per axis (anisotropic strides).

    Attributes:
        spatial_dims, in_channels, out_channels: as given.
        divisor: ``tuple[int, ...]`` of length ``spatial_dims``.
        grad_checkpointing: whether activation checkpointing is on (see :meth:`set_grad_checkpointing`).
    """

    supports_grad_checkpointing: bool = False

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, divisor: int | Sequence[int]
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(
                f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}"
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        if isinstance(divisor, int):
            divisor = (divisor,) * self.spatial_dims
        self.divisor: tuple[int, ...] = tuple(int(d) for d in divisor)
        if len(self.divisor) != self.spatial_dims:
            raise ConfigError(f"divisor {self.divisor} must have {self.spatial_dims} entries")
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation (gradient) checkpointing on or off.

        Checkpointing recomputes activations in the backward pass instead of storing them: less memory,
        about one more forward pass of compute, identical outputs and gradients. It acts only in training
        with gradients enabled.

        Args:
            enable: whether to checkpoint.

        Raises:
            ConfigError: if ``enable`` is true and this network does not implement checkpointing.
        """
        if enable and not self.supports_grad_checkpointing:
            raise ConfigError(f"{type(self).__name__} does not support gradient checkpointing")
        self.grad_checkpointing = bool(enable)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a readable error if ``x`` cannot go through this network.

        Args:
            x: input batch ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial axes.

        Raises:
            InputError: wrong number of dimensions, wrong channel count, or a spatial size that is not a
                multiple of :attr:`divisor` (the message names the axis and the nearest valid sizes).

        Nothing is checked while ``torch.jit`` traces or scripts the model (a traced graph cannot hold
        Python-level shape checks); ``torch.compile`` and ``torch.export`` keep the checks.
        """
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return
        expected_ndim = self.spatial_dims + 2
        if x.ndim != expected_ndim:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise InputError(
                f"{type(self).__name__} is {self.spatial_dims}D and expects a {expected_ndim}-D input "
                f"{layout}; got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"{type(self).__name__} expects {self.in_channels} input channel(s); "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        spatial = tuple(int(s) for s in x.shape[2:])
        for axis, (size, div) in enumerate(zip(spatial, self.divisor)):
            if size % div:
                lower, upper = (size // div) * div, (size // div + 1) * div
                options = f"{lower} or {upper}" if lower > 0 else f"{upper}"
                raise InputError(
                    f"spatial size {spatial} is not a multiple of {div} along axis {axis}; "
                    f"pad or crop to e.g. {options}"
                )
