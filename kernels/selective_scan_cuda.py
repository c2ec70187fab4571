"""CuPy backend of :func:`medseg.kernels.selective_scan`: the chunked kernels of ``selective_scan.cu``.

The kernels compute the scan itself, ``y_t = <C_t, h_t>`` and the final state, with a float32 state and
float32, float16 or bfloat16 ``u``, ``B``, ``C``. The cheap elementwise parts stay in PyTorch, in float32
like mamba's reference: ``delta`` bias and softplus before the scan, the ``D`` skip and ``silu(z)`` gate
after it. Only the states entering each chunk are kept for the backward pass, which recomputes the
chunk's states in shared memory: memory is linear in ``B * D * L``.
"""

from __future__ import annotations

import torch

from medseg.errors import InputError
from medseg.kernels import cupy_runtime as rt
from medseg.kernels.scan_args import canonical_matrix, check_scan_args
from medseg.kernels.selective_scan import finish_output

SOURCE = "selective_scan.cu"
CHUNK_LEN = 64
MAX_STATE = 32
THREADS = 128
TYPED_KERNELS = ("scan_fwd_chunk", "scan_bwd_local", "scan_bwd_chunk")
CARRY_THREADS = 256


def name_expressions(dtype: torch.dtype) -> tuple[str, ...]:
    """The instantiations one storage dtype needs."""
    t = rt.KERNEL_TYPES[dtype]
    return (*(f"{name}<{t}>" for name in TYPED_KERNELS), "scan_carry")


def all_name_expressions() -> list[str]:
    """Every instantiation the backend can use (for compile checks)."""
    return sorted({e for dtype in rt.KERNEL_TYPES for e in name_expressions(dtype)})


def unsupported_reason(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor) -> str | None:
    """Why the CUDA kernels cannot run these arguments, or ``None`` when they can.

    Args:
        A: ``(D, N)``.
        B: input matrix as given to the op.
        C: output matrix as given to the op.
        u: ``(B, D, L)``.

    Returns:
        A sentence for an error message, or ``None``.
    """
    if A.shape[1] > MAX_STATE:
        return f"state size N = {A.shape[1]} is above the kernels' maximum of {MAX_STATE}"
    if B.dim() == 2 or C.dim() == 2:
        return "constant (D, N) B or C matrices are not supported by the kernels (use (B, N, L) or (B, G, N, L))"
    if u.dtype not in rt.KERNEL_TYPES:
        return f"dtype {u.dtype} is not supported (float32, float16, bfloat16)"
    if u.shape[0] > 65535:
        return f"batch size {u.shape[0]} is above the launch limit of 65535"
    return None


class _Launch:
    """Launch geometry for one call: lanes per channel, channels per block, grid."""

    def __init__(self, u: torch.Tensor, Bc: torch.Tensor, state: int) -> None:
        batch, channels, length = u.shape
        groups = Bc.shape[1]
        self.lanes = 1 << (state - 1).bit_length()
        per_group = channels // groups
        # Channels of one block must share a B/C group: the largest power of two dividing D / G that fits.
        cpb = THREADS // self.lanes
        while per_group % cpb:
            cpb //= 2
        self.channels_per_block = cpb
        self.nchunks = -(-length // CHUNK_LEN)
        self.grid = (self.nchunks, channels // cpb, batch)
        self.block = (cpb * self.lanes, 1, 1)
        self.sizes = tuple(rt.i32(v) for v in (channels, length, state, groups, CHUNK_LEN, self.nchunks, self.lanes))
        self.shared_mem = (CHUNK_LEN + 2) * self.block[0] * 4
        t = rt.KERNEL_TYPES[u.dtype]
        exprs = name_expressions(u.dtype)
        self.kernels = {name: rt.get_kernel(u.device, SOURCE, f"{name}<{t}>", exprs) for name in TYPED_KERNELS}
        self.carry = rt.get_kernel(u.device, SOURCE, "scan_carry", exprs)


def _carry(geo: _Launch, u: torch.Tensor, decay, add, out, init, final, reverse: bool) -> None:
    bdn = u.shape[0] * u.shape[1] * decay.shape[-1]
    args = (
        rt.ptr(decay), rt.ptr(add), rt.ptr(out), rt.ptr(init), rt.ptr(final),
        rt.i64(bdn), rt.i32(decay.shape[-1]), rt.i32(geo.nchunks), rt.i32(int(reverse)),
    )  # fmt: skip
    rt.launch(geo.carry, u.device, (-(-bdn // CARRY_THREADS), 1, 1), (CARRY_THREADS, 1, 1), args)


class SelectiveScanFunction(torch.autograd.Function):
    """``y, last_state = scan(u, dt, A, B, C)`` on the GPU; ``y`` and ``last_state`` are float32.

    ``u`` ``(B, D, L)`` and ``B``, ``C`` ``(B, G, N, L)`` contiguous in one storage dtype; ``dt``
    ``(B, D, L)`` and ``A`` ``(D, N)`` contiguous float32.
    """

    @staticmethod
    def forward(ctx, u, dt, A, Bc, Cc, poison: bool):
        batch, channels, length = u.shape
        state = A.shape[1]
        geo = _Launch(u, Bc, state)
        chunk_shape = (batch, channels, geo.nchunks, state)
        f32 = torch.float32
        h_end = rt.new_output(chunk_shape, u, f32, poison)
        decay = rt.new_output(chunk_shape, u, f32, poison)
        h_in = rt.new_output(chunk_shape, u, f32, poison)
        last = rt.new_output((batch, channels, state), u, f32, poison)
        y = rt.new_output(u.shape, u, f32, poison)
        fwd = geo.kernels["scan_fwd_chunk"]
        common = (rt.ptr(u), rt.ptr(dt), rt.ptr(A), rt.ptr(Bc), rt.ptr(Cc))
        local = (rt.ptr(None), rt.ptr(None), rt.ptr(h_end), rt.ptr(decay))  # from zero; no y
        rt.launch(fwd, u.device, geo.grid, geo.block, (*common, *local, *geo.sizes))
        _carry(geo, u, decay, h_end, h_in, None, last, reverse=False)
        final = (rt.ptr(h_in), rt.ptr(y), rt.ptr(h_end), rt.ptr(None))  # from the true states; writes y
        rt.launch(fwd, u.device, geo.grid, geo.block, (*common, *final, *geo.sizes))
        ctx.save_for_backward(u, dt, A, Bc, Cc, h_in)
        ctx.poison = poison
        return y, last

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, dt, A, Bc, Cc, h_in = ctx.saved_tensors
        geo = _Launch(u, Bc, A.shape[1])
        poison = ctx.poison
        f32 = torch.float32
        grad_y = grad_y.to(f32).contiguous() if grad_y is not None else torch.zeros(u.shape, dtype=f32, device=u.device)
        grad_last = grad_last.to(f32).contiguous() if grad_last is not None else None
        carry_out = rt.new_output(h_in.shape, u, f32, poison)
        decay = rt.new_output(h_in.shape, u, f32, poison)
        g_after = rt.new_output(h_in.shape, u, f32, poison)
        rt.launch(
            geo.kernels["scan_bwd_local"], u.device, geo.grid, geo.block,
            (rt.ptr(dt), rt.ptr(A), rt.ptr(Cc), rt.ptr(grad_y), rt.ptr(carry_out), rt.ptr(decay), *geo.sizes),
        )  # fmt: skip
        _carry(geo, u, decay, carry_out, g_after, grad_last, None, reverse=True)
        du = rt.new_output(u.shape, u, f32, poison)
        ddt = rt.new_output(u.shape, u, f32, poison)
        dA = torch.zeros(A.shape, dtype=f32, device=u.device)
        dB = torch.zeros(Bc.shape, dtype=f32, device=u.device)
        dC = torch.zeros(Cc.shape, dtype=f32, device=u.device)
        args = (
            rt.ptr(u), rt.ptr(dt), rt.ptr(A), rt.ptr(Bc), rt.ptr(Cc), rt.ptr(grad_y), rt.ptr(h_in), rt.ptr(g_after),
            rt.ptr(du), rt.ptr(ddt), rt.ptr(dA), rt.ptr(dB), rt.ptr(dC), *geo.sizes,
        )  # fmt: skip
        rt.launch(geo.kernels["scan_bwd_chunk"], u.device, geo.grid, geo.block, args, shared_mem=geo.shared_mem)
        return du.to(u.dtype), ddt, dA, dB.to(Bc.dtype), dC.to(Cc.dtype), None


def selective_scan_cupy(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    poison_outputs: bool = False,
):
    """Selective scan with the CUDA kernels; same arguments and results as the reference.

    Args:
        u: ``(B, D, L)`` CUDA tensor, float32, float16 or bfloat16.
        delta: ``(B, D, L)``.
        A: ``(D, N)`` real, ``N <= 32``.
        B: ``(B, N, L)`` or ``(B, G, N, L)`` (constant ``(D, N)`` is not supported here).
        C: same choices as ``B``.
        D: ``(D,)`` or ``None``.
        z: ``(B, D, L)`` or ``None``.
        delta_bias: ``(D,)`` or ``None``.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state ``(B, D, N)`` (float32).
        poison_outputs: test hook: fill every kernel output with NaN before the kernels run.

    Returns:
        ``out`` ``(B, D, L)`` in ``u``'s dtype, or ``(out, last_state)``.

    Raises:
        InputError: unsupported shapes, dtypes, devices or sizes.
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    reason = unsupported_reason(A, B, C, u)
    if reason is not None:
        raise InputError(f"selective_scan (cupy backend): {reason}; use backend='torch' or 'auto'")
    f32 = torch.float32
    dt = delta.to(f32)
    if delta_bias is not None:
        dt = dt + delta_bias.to(f32)[:, None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    uc = u.contiguous()
    Bc = canonical_matrix(B.to(u.dtype)).contiguous()
    Cc = canonical_matrix(C.to(u.dtype)).contiguous()
    dt, Af = dt.contiguous(), A.to(f32).contiguous()
    rt.check_cuda_tensors("selective_scan", {"u": uc, "B": Bc, "C": Cc}, rt.KERNEL_TYPES)
    rt.check_cuda_tensors("selective_scan", {"u": uc, "delta": dt, "A": Af}, (u.dtype, f32))
    y, last = SelectiveScanFunction.apply(uc, dt, Af, Bc, Cc, poison_outputs)
    return finish_output(y, uc.to(f32), D, z, u.dtype, last, return_last_state)
