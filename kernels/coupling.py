"""Additive coupling of reversible blocks: ``y = x + f(x')`` forward and ``x = y - f(x')`` inverse.

``coupling_forward`` / ``coupling_inverse`` are out of place and differentiable. ``coupling_forward_`` /
``coupling_inverse_`` update their first operand in place, for recomputation under ``torch.no_grad()``
(a reversible block that rebuilds its inputs from its outputs needs no second buffer). With the
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


def _check_in_place(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    check_coupling_args(name, a, b)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        raise InputError(
            f"{name}: the in-place coupling is for recomputation under torch.no_grad(); use the out-of-place op"
        )


def coupling_forward_(x: torch.Tensor, fx: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """In-place forward coupling ``x += fx`` (no autograd).

    Args:
        x: the half being updated, overwritten; any shape.
        fx: same shape, dtype and device as ``x``.
        backend: ``"auto"``, ``"cupy"`` or ``"torch"``.

    Returns:
        ``x``, now holding ``x + fx``.

    Raises:
        InputError: mismatched operands, or called where autograd would need the old ``x``.
        ConfigError: unknown ``backend``.
    """
    _check_in_place("coupling_forward_", x, fx)
    if resolve_backend(backend, x, fx) == "torch" or not x.is_contiguous():
        return x.add_(fx)
    from medseg.kernels.coupling_cuda import coupling_cupy_

    return coupling_cupy_(x, fx, 1.0)


def coupling_inverse_(y: torch.Tensor, fy: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """In-place inverse coupling ``y -= fy`` (no autograd), e.g. to rebuild a block's input from its output.

    Args:
        y: the coupled half, overwritten; any shape.
        fy: same shape, dtype and device as ``y``.
        backend: ``"auto"``, ``"cupy"`` or ``"torch"``.

    Returns:
        ``y``, now holding ``y - fy``.

    Raises:
        InputError: mismatched operands, or called where autograd would need the old ``y``.
        ConfigError: unknown ``backend``.
    """
    _check_in_place("coupling_inverse_", y, fy)
    if resolve_backend(backend, y, fy) == "torch" or not y.is_contiguous():
        return y.sub_(fy)
    from medseg.kernels.coupling_cuda import coupling_cupy_

    return coupling_cupy_(y, fy, -1.0)
