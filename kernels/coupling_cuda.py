"""CuPy backend of the additive couplings: one fused, vectorised kernel from ``coupling.cu``."""

from __future__ import annotations

import torch

from medseg.errors import InputError
from medseg.kernels import cupy_runtime as rt

SOURCE = "coupling.cu"
THREADS = 256
# Enough blocks to fill any current GPU; the kernel's grid-stride loop covers the rest.
MAX_BLOCKS = 4096


def all_name_expressions() -> list[str]:
    """Every instantiation the backend can use (for compile checks)."""
    return [f"coupling<{t}>" for t in rt.KERNEL_TYPES.values()]


def launch_coupling(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """Launch ``out = a + sign * b`` over contiguous tensors of one dtype (``out`` may be ``a``)."""
    n = a.numel()
    if n == 0:
        return
    aligned = all(t.data_ptr() % 16 == 0 for t in (a, b, out))
    per_vector = 16 // a.element_size() if aligned else 1
    blocks = max(1, min(MAX_BLOCKS, -(-n // (THREADS * per_vector))))
    kernel = rt.get_kernel(a.device, SOURCE, f"coupling<{rt.KERNEL_TYPES[a.dtype]}>")
    args = (rt.ptr(a), rt.ptr(b), rt.ptr(out), rt.i64(n), rt.f32(sign), rt.i32(int(aligned)))
    rt.launch(kernel, a.device, (blocks, 1, 1), (THREADS, 1, 1), args)


class CouplingFunction(torch.autograd.Function):
    """``out = a + sign * b`` with gradients ``(g, sign * g)``."""

    @staticmethod
    def forward(ctx, a, b, sign: float, poison: bool):
        ctx.sign = sign
        out = rt.new_output(a.shape, a, poison=poison)
        launch_coupling(a, b, out, sign)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, (grad if ctx.sign > 0 else -grad), None, None


def _prepare(name: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = a.contiguous(), b.contiguous()
    rt.check_cuda_tensors(name, {"first operand": a, "second operand": b}, rt.KERNEL_TYPES)
    return a, b


def coupling_cupy(a: torch.Tensor, b: torch.Tensor, sign: float, *, poison_outputs: bool = False) -> torch.Tensor:
    """``a + sign * b`` with the fused kernel, differentiable in both operands.

    Args:
        a: CUDA tensor, float32, float16 or bfloat16, any shape.
        b: same shape, dtype and device as ``a``.
        sign: ``1.0`` (forward coupling) or ``-1.0`` (inverse coupling).
        poison_outputs: test hook: fill the output with NaN before the kernel runs.

    Returns:
        A new contiguous tensor.
    """
    a, b = _prepare("coupling", a, b)
    return CouplingFunction.apply(a, b, sign, poison_outputs)


def coupling_cupy_(a: torch.Tensor, b: torch.Tensor, sign: float) -> torch.Tensor:
    """In place ``a += sign * b`` with the fused kernel (no autograd; ``a`` must be contiguous).

    Args:
        a: contiguous CUDA tensor, overwritten.
        b: same shape, dtype and device as ``a``.
        sign: ``1.0`` or ``-1.0``.

    Returns:
        ``a``.
    """
    if not a.is_contiguous():
        raise InputError(
            f"in-place coupling (cupy backend): the updated tensor must be contiguous (strides {a.stride()})"
        )
    _, b = _prepare("coupling", a, b)
    launch_coupling(a, b, a, sign)
    return a
