"""Depthwise 3D convolution with "same" padding: ``depthwise_conv3d`` and its reference twin.

``depthwise_conv3d_ref`` is plain PyTorch and is also the CPU implementation. On CPU, PyTorch's depthwise
``conv3d`` is several times faster when its input is already in the ``channels_last_3d`` memory layout
(forward, one thread, ``(1, 32, 64, 64, 64)``, ``k = 3``: 0.07 s against 0.41 s), so networks should keep
their CPU activations in that layout. Converting a default-layout input costs about as much as it saves
for ``k = 3`` (forward 0.39 s, forward + backward 1.97 s against 1.48 s) but pays off for larger kernels
(``k = 5`` forward + backward: 2.1 s against 4.2 s), so the reference converts internally only for
``k >= 5`` and always returns the result in the input's layout. ``benchmarks/kernels.py`` measures this.
``depthwise_conv3d`` with the ``"cupy"`` backend runs the direct CUDA kernels of ``depthwise_conv3d.cu``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medseg.errors import InputError
from medseg.kernels.dispatch import resolve_backend

KERNEL_SIZES = (3, 5, 7)
STRIDES = (1, 2)
# On CPU, default-layout inputs are converted to channels_last_3d for kernels this large (see above).
CONVERT_FROM_KERNEL_SIZE = 5


def check_depthwise_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> int:
    """Validate the arguments of a depthwise convolution and return the kernel size.

    Args:
        x: input ``(B, C, D, H, W)``.
        weight: filters ``(C, 1, k, k, k)``.
        bias: ``(C,)`` or ``None``.
        stride: 1 or 2, the same along every axis.

    Returns:
        The kernel size ``k``.

    Raises:
        InputError: a shape, dtype, device or option is not supported.
    """
    if x.dim() != 5:
        raise InputError(f"depthwise_conv3d: x must be (B, C, D, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if weight.dim() != 5 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise InputError(
            f"depthwise_conv3d: weight must be (C, 1, k, k, k) with C = {channels}, got shape {tuple(weight.shape)}"
        )
    k = weight.shape[2]
    if tuple(weight.shape[2:]) != (k, k, k) or k not in KERNEL_SIZES:
        raise InputError(
            f"depthwise_conv3d: kernel must be cubic with size in {KERNEL_SIZES}, got {tuple(weight.shape[2:])}"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise InputError(f"depthwise_conv3d: bias must be ({channels},), got shape {tuple(bias.shape)}")
    if isinstance(stride, bool) or stride not in STRIDES:
        raise InputError(f"depthwise_conv3d: stride must be one of {STRIDES}, got {stride!r}")
    tensors = [t for t in (x, weight, bias) if t is not None]
    if not all(t.is_floating_point() for t in tensors):
        raise InputError(
            "depthwise_conv3d: x, weight and bias must be floating point, got "
            + ", ".join(str(t.dtype) for t in tensors)
        )
    if len({t.device for t in tensors}) > 1:
        raise InputError(
            "depthwise_conv3d: x, weight and bias must be on one device, got "
            + ", ".join(str(t.device) for t in tensors)
        )
    return k


def output_size(size: int, stride: int) -> int:
    """Output length of one axis with "same" padding ``k // 2``: ``size`` for stride 1, ``ceil(size / 2)`` for 2."""
    return (size - 1) // stride + 1


def depthwise_conv3d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Depthwise 3D convolution in plain PyTorch (zero padding ``k // 2``, dilation 1).

    On CPU a ``channels_last_3d`` input is convolved in that layout (much faster); a default-layout input is
    converted to it for ``k >= 5`` only (where that pays off). The result has the layout of ``x``.

    Args:
        x: input ``(B, C, D, H, W)``.
        weight: one filter per channel, ``(C, 1, k, k, k)`` with ``k`` in 3, 5, 7.
        bias: ``(C,)`` or ``None``.
        stride: 1 or 2 along every axis.

    Returns:
        ``(B, C, D', H', W')`` with ``D' = ceil(D / stride)`` (likewise ``H'``, ``W'``).

    Raises:
        InputError: unsupported shapes, kernel size, stride, dtype or mixed devices.
    """
    k = check_depthwise_args(x, weight, bias, stride)
    channels = x.shape[1]
    if x.is_cuda or k < CONVERT_FROM_KERNEL_SIZE or x.is_contiguous(memory_format=torch.channels_last_3d):
        return F.conv3d(x, weight, bias, stride=stride, padding=k // 2, groups=channels)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    return F.conv3d(x_cl, weight, bias, stride=stride, padding=k // 2, groups=channels).contiguous()


def depthwise_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Depthwise 3D convolution with "same" padding; differentiable in ``x``, ``weight`` and ``bias``.

    Args:
        x: input ``(B, C, D, H, W)``.
        weight: one filter per channel, ``(C, 1, k, k, k)`` with ``k`` in 3, 5, 7.
        bias: ``(C,)`` or ``None``.
        stride: 1 or 2 along every axis.
        backend: ``"auto"``, ``"cupy"`` (CUDA kernels; float32, float16, bfloat16) or ``"torch"``
            (:func:`depthwise_conv3d_ref`).

    Returns:
        ``(B, C, ceil(D / stride), ceil(H / stride), ceil(W / stride))``.

    Raises:
        InputError: unsupported shapes, kernel size, stride, dtype or device.
        ConfigError: unknown ``backend``.
        MissingDependencyError: ``backend="cupy"`` without CuPy.
    """
    check_depthwise_args(x, weight, bias, stride)
    if resolve_backend(backend, x, weight, bias) == "torch":
        return depthwise_conv3d_ref(x, weight, bias, stride)
    from medseg.kernels.depthwise_conv3d_cuda import depthwise_conv3d_cupy

    return depthwise_conv3d_cupy(x, weight, bias, stride)
