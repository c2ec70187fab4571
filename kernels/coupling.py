"""Additive coupling of reversible blocks: ``y = x + f(x')`` forward and ``x = y - f(x')`` inverse.

The ops are out of place (the reversible block keeps ``x`` alive only until it has ``y``). With the
``"cupy"`` backend both run one fused, vectorised CUDA kernel from ``coupling.cu``; the torch path is the
plain expression, which PyTorch already runs as one elementwise kernel.
"""

from __future__ import annotations

import torch

from medseg.errors import InputError
from medseg.kernels.dispatch import resolve_backend


def check_coupling_args(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """Check that the two operands of a coupling have the same shape, dtype and device.

    Args:
        name: the op, for the message.
        a: first operand, any shape.
        b: second operand, same shape as ``a``.

    Raises:
        InputError: shapes, dtypes or devices differ, or the tensors are not floating point.
    """
    if a.shape != b.shape:
        raise InputError(f"{name}: operands must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype or not a.is_floating_point():
        raise InputError(f"{name}: operands must share one floating-point dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise InputError(f"{name}: operands must be on one device, got {a.device} and {b.device}")


def coupling_forward_ref(x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """Forward additive coupling ``y = x + fx`` in plain PyTorch.

    Args:
        x: the half being updated, any shape, e.g. ``(B, C, D, H, W)``.
        fx: the residual computed from the other half, same shape as ``x``.

    Returns:
        ``x + fx``, a new tensor of the same shape.
    """
    check_coupling_args("coupling_forward", x, fx)
    return x + fx


def coupling_inverse_ref(y: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Inverse additive coupling ``x = y - fy`` in plain PyTorch.

    Args:
        y: the coupled half, any shape, e.g. ``(B, C, D, H, W)``.
        fy: the residual recomputed from the other half, same shape as ``y``.

    Returns:
        ``y - fy``, a new tensor of the same shape.
    """
    check_coupling_args("coupling_inverse", y, fy)
    return y - fy


def coupling_forward(x: torch.Tensor, fx: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Forward additive coupling ``y = x + fx``, differentiable in both operands.

    Args:
        x: the half being updated, any shape, e.g. ``(B, C, D, H, W)``.
        fx: the residual computed from the other half, same shape, dtype and device as ``x``.
        backend: ``"auto"``, ``"cupy"`` (fused CUDA kernel) or ``"torch"``.

    Returns:
        ``x + fx``, a new contiguous tensor of the same shape.

    Raises:
        InputError: the operands differ in shape, dtype or device.
        ConfigError: unknown ``backend``.
        MissingDependencyError: ``backend="cupy"`` without CuPy.
    """
    check_coupling_args("coupling_forward", x, fx)
    if resolve_backend(backend, x, fx) == "torch":
        return coupling_forward_ref(x, fx)
    from medseg.kernels.coupling_cuda import coupling_cupy

    return coupling_cupy(x, fx, 1.0)


def coupling_inverse(y: torch.Tensor, fy: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Inverse additive coupling ``x = y - fy``, differentiable in both operands.

    Args:
        y: the coupled half, any shape, e.g. ``(B, C, D, H, W)``.
        fy: the residual recomputed from the other half, same shape, dtype and device as ``y``.
        backend: ``"auto"``, ``"cupy"`` (fused CUDA kernel) or ``"torch"``.

    Returns:
        ``y - fy``, a new contiguous tensor of the same shape.

    Raises:
        InputError: the operands differ in shape, dtype or device.
        ConfigError: unknown ``backend``.
        MissingDependencyError: ``backend="cupy"`` without CuPy.
    """
    check_coupling_args("coupling_inverse", y, fy)
    if resolve_backend(backend, y, fy) == "torch":
        return coupling_inverse_ref(y, fy)
    from medseg.kernels.coupling_cuda import coupling_cupy

    return coupling_cupy(y, fy, -1.0)
