"""CuPy backend of :func:`medseg.kernels.depthwise_conv3d`: the kernels of ``depthwise_conv3d.cu``.

Forward, input gradient (a transposed convolution) and weight gradient (block partial sums, then float32
``atomicAdd``) are direct convolutions over shared-memory tiles; no im2col buffer. float32, float16 and
bfloat16 storage, float32 arithmetic. The bias gradient is a plain reduction done by PyTorch.
"""

from __future__ import annotations

import torch

from medseg.errors import InputError
from medseg.kernels import cupy_runtime as rt
from medseg.kernels.depthwise_conv3d import KERNEL_SIZES, STRIDES, check_depthwise_args, output_size

SOURCE = "depthwise_conv3d.cu"
KERNELS = ("dw_forward", "dw_grad_input", "dw_grad_weight")
# Output (or input) voxels per block, per stride: (depth, height, width), matching Tile<S> in the .cu file.
TILES = {1: (4, 8, 32), 2: (2, 8, 16)}


def name_expressions(dtype: torch.dtype, k: int, stride: int) -> tuple[str, ...]:
    """The template instantiations one (dtype, kernel size, stride) needs."""
    t = rt.KERNEL_TYPES[dtype]
    return tuple(f"{name}<{t},{k},{stride}>" for name in KERNELS)


def all_name_expressions() -> list[str]:
    """Every instantiation the backend can use (for compile checks)."""
    combos = [(dtype, k, s) for dtype in rt.KERNEL_TYPES for k in KERNEL_SIZES for s in STRIDES]
    return [e for combo in combos for e in name_expressions(*combo)]


def _launch(kind: str, like: torch.Tensor, k: int, stride: int, tiled_sizes, pointers, sizes) -> None:
    """Launch one of :data:`KERNELS` over tiles of ``tiled_sizes`` (the output's, or for the input gradient
    the input's, ``(D, H, W)``); ``sizes`` are ``(D, H, W, D', H', W')`` of input and output."""
    batch, channels = like.shape[:2]
    td, th, tw = TILES[stride]
    tiles = [-(-size // t) for size, t in zip(tiled_sizes, (td, th, tw))]
    name = f"{kind}<{rt.KERNEL_TYPES[like.dtype]},{k},{stride}>"
    kernel = rt.get_kernel(like.device, SOURCE, name, name_expressions(like.dtype, k, stride))
    args = [*pointers, rt.i32(channels), *(rt.i32(v) for v in sizes), rt.i32(tiles[2]), rt.i32(tiles[1])]
    rt.launch(kernel, like.device, (tiles[0] * tiles[1] * tiles[2], channels, batch), (tw, th, 1), args)


def _check_launch_limits(x: torch.Tensor) -> None:
    if x.shape[0] > 65535 or x.shape[1] > 65535:
        raise InputError(
            f"depthwise_conv3d (cupy backend): batch and channels must be at most 65535, got {tuple(x.shape[:2])}"
        )


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, poison: bool = False
) -> torch.Tensor:
    """Launch ``dw_forward``: ``(B, C, D, H, W)`` to ``(B, C, D', H', W')`` in ``x``'s dtype."""
    k = weight.shape[-1]
    out_sizes = tuple(output_size(s, stride) for s in x.shape[2:])
    y = rt.new_output((*x.shape[:2], *out_sizes), x, poison=poison)
    pointers = (rt.ptr(x), rt.ptr(weight), rt.ptr(bias), rt.ptr(y))
    _launch("dw_forward", x, k, stride, out_sizes, pointers, (*x.shape[2:], *out_sizes))
    return y


def grad_input(
    grad_y: torch.Tensor, weight: torch.Tensor, in_sizes: tuple[int, int, int], stride: int, poison: bool = False
) -> torch.Tensor:
    """Launch ``dw_grad_input``: the gradient of ``x`` from the gradient of the output."""
    k = weight.shape[-1]
    gx = rt.new_output((*grad_y.shape[:2], *in_sizes), grad_y, poison=poison)
    pointers = (rt.ptr(grad_y), rt.ptr(weight), rt.ptr(gx))
    _launch("dw_grad_input", grad_y, k, stride, in_sizes, pointers, (*in_sizes, *grad_y.shape[2:]))
    return gx


def grad_weight(x: torch.Tensor, grad_y: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """Launch ``dw_grad_weight``: the float32 gradient ``(C, 1, k, k, k)`` of the filters."""
    gw = torch.zeros((x.shape[1], 1, k, k, k), dtype=torch.float32, device=x.device)
    out_sizes = tuple(grad_y.shape[2:])
    pointers = (rt.ptr(x), rt.ptr(grad_y), rt.ptr(gw))
    _launch("dw_grad_weight", x, k, stride, out_sizes, pointers, (*x.shape[2:], *out_sizes))
    return gw


class DepthwiseConv3dFunction(torch.autograd.Function):
    """Autograd wrapper of the three kernels; inputs already checked, contiguous and of one dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, poison: bool):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.poison, ctx.has_bias = stride, poison, bias is not None
        return forward(x, weight, bias, stride, poison)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad_input(grad_y, weight, tuple(x.shape[2:]), ctx.stride, ctx.poison)
        if ctx.needs_input_grad[1]:
            gw = grad_weight(x, grad_y, weight.shape[-1], ctx.stride).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad_y.sum(dim=(0, 2, 3, 4), dtype=torch.float32).to(grad_y.dtype)
        return gx, gw, gb, None, None


def depthwise_conv3d_cupy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    *,
    poison_outputs: bool = False,
) -> torch.Tensor:
    """Depthwise 3D convolution on the GPU with the CuPy kernels (same semantics as the reference).

    ``x`` is made contiguous in the default layout first (a ``channels_last_3d`` input is copied).

    Args:
        x: ``(B, C, D, H, W)`` CUDA tensor, float32, float16 or bfloat16.
        weight: ``(C, 1, k, k, k)`` with ``k`` in 3, 5, 7, same dtype and device.
        bias: ``(C,)`` or ``None``.
        stride: 1 or 2.
        poison_outputs: test hook: fill outputs with NaN before the kernels run.

    Returns:
        ``(B, C, ceil(D / stride), ceil(H / stride), ceil(W / stride))`` in ``x``'s dtype.

    Raises:
        InputError: unsupported arguments, dtypes or devices, or sizes beyond the launch limits.
    """
    check_depthwise_args(x, weight, bias, stride)
    x, weight = x.contiguous(), weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    rt.check_cuda_tensors("depthwise_conv3d", {"x": x, "weight": weight, "bias": bias}, rt.KERNEL_TYPES)
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise InputError(
            f"depthwise_conv3d (cupy backend): x, weight and bias must share one dtype, got {x.dtype}, "
            f"{weight.dtype}" + (f", {bias.dtype}" if bias is not None else "")
        )
    _check_launch_limits(x)
    return DepthwiseConv3dFunction.apply(x, weight, bias, stride, poison_outputs)
