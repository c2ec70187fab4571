"""Layer factories indexed by spatial dimension, so one network definition serves 2D and 3D.

Example:
    >>> conv(3)(4, 16, kernel_size=3, padding=1)  # an nn.Conv3d
    >>> norm("instance", 2, 16)                     # an nn.InstanceNorm2d(16, affine=True)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medseg.errors import ConfigError, unknown_choice

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_INTERPOLATE = {1: "linear", 2: "bilinear", 3: "trilinear"}

NORMS = ("instance", "group", "batch", "layer", "none")
ACTIVATIONS = ("leaky_relu", "relu", "gelu", "none")


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (1, 2, 3):
        raise ConfigError(f"spatial_dims must be 1, 2 or 3; got {spatial_dims!r}")
    return int(spatial_dims)


def conv(spatial_dims: int) -> type[nn.Module]:
    """The convolution class for ``spatial_dims`` (``nn.Conv1d/2d/3d``)."""
    return _CONV[_check_dims(spatial_dims)]


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    """The transposed-convolution class for ``spatial_dims`` (``nn.ConvTranspose1d/2d/3d``)."""
    return _CONV_T[_check_dims(spatial_dims)]


def dropout(spatial_dims: int) -> type[nn.Module]:
    """The channel-dropout class for ``spatial_dims`` (``nn.Dropout1d/2d/3d``)."""
    return _DROPOUT[_check_dims(spatial_dims)]


def max_pool(spatial_dims: int) -> type[nn.Module]:
    """The max-pooling class for ``spatial_dims``."""
    return _MAX_POOL[_check_dims(spatial_dims)]


def avg_pool(spatial_dims: int) -> type[nn.Module]:
    """The average-pooling class for ``spatial_dims``."""
    return _AVG_POOL[_check_dims(spatial_dims)]


def adaptive_avg_pool(spatial_dims: int) -> type[nn.Module]:
    """The adaptive average-pooling class for ``spatial_dims``."""
    return _ADAPTIVE_AVG_POOL[_check_dims(spatial_dims)]


def interpolate_mode(spatial_dims: int) -> str:
    """The linear interpolation mode of ``torch.nn.functional.interpolate`` for ``spatial_dims``."""
    return _INTERPOLATE[_check_dims(spatial_dims)]


def norm(
    name: str,
    spatial_dims: int,
    num_channels: int,
    *,
    num_groups: int = 8,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.Module:
    """A normalisation layer over ``(B, C, *spatial)`` tensors.

    Args:
        name: ``"instance"`` (per-sample, per-channel; affine), ``"group"``, ``"batch"``, ``"layer"``
            (one group over all channels) or ``"none"`` (identity).
        spatial_dims: 1, 2 or 3.
        num_channels: channels ``C`` of the input.
        num_groups: groups for ``"group"``; must divide ``num_channels``.
        eps: numerical epsilon.
        affine: learn a per-channel scale and shift.

    Returns:
        The layer.

    Raises:
        ConfigError: unknown name, or ``num_groups`` does not divide ``num_channels``.
    """
    dims = _check_dims(spatial_dims)
    if name == "instance":
        return _INSTANCE[dims](num_channels, eps=eps, affine=affine)
    if name == "batch":
        return _BATCH[dims](num_channels, eps=eps, affine=affine)
    if name == "group":
        if num_channels % num_groups:
            raise ConfigError(f"group norm: num_groups={num_groups} does not divide {num_channels} channels")
        return nn.GroupNorm(num_groups, num_channels, eps=eps, affine=affine)
    if name == "layer":
        return nn.GroupNorm(1, num_channels, eps=eps, affine=affine)
    if name == "none":
        return nn.Identity()
    raise unknown_choice("norm", name, NORMS)


def activation(name: str, *, negative_slope: float = 0.01, inplace: bool = False) -> nn.Module:
    """A nonlinearity by name.

    Args:
        name: ``"leaky_relu"`` (nnU-Net's, slope ``negative_slope``), ``"relu"``, ``"gelu"`` or ``"none"``.
        negative_slope: slope of the leaky ReLU for negative inputs.
        inplace: compute in place where the layer supports it.

    Raises:
        ConfigError: unknown name.
    """
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=inplace)
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "gelu":
        return nn.GELU()
    if name == "none":
        return nn.Identity()
    raise unknown_choice("activation", name, ACTIVATIONS)


def per_axis(value: int | Sequence[int], spatial_dims: int, what: str) -> tuple[int, ...]:
    """Expand an int to one value per spatial axis, or check a per-axis sequence's length.

    Args:
        value: one int for all axes, or one per axis.
        spatial_dims: number of axes.
        what: name of the option, for the error message.

    Returns:
        A tuple of ``spatial_dims`` positive ints.

    Raises:
        ConfigError: wrong length or a value below 1.
    """
    if isinstance(value, int):
        out = (value,) * spatial_dims
    else:
        out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ConfigError(f"{what} {value!r} must be one int or {spatial_dims} ints (one per spatial axis)")
    if any(v < 1 for v in out):
        raise ConfigError(f"{what} {value!r} must be >= 1 on every axis")
    return out


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size of a stride-1 convolution with odd ``kernel_size`` (per axis)."""
    if any(k % 2 == 0 for k in kernel_size):
        raise ConfigError(f"kernel size {tuple(kernel_size)} must be odd on every axis")
    return tuple(k // 2 for k in kernel_size)
