"""Selective scan (the core of Mamba): ``selective_scan``, its reference twin and a naive per-token loop.

Semantics and layout are mamba's ``selective_scan_ref``: for every batch entry ``b`` and channel ``d``,
with ``dt = softplus(delta + delta_bias)`` (bias and softplus optional),

    h_t = exp(dt_t * A[d]) * h_{t-1} + dt_t * u_t * B_t        (h has N entries, h_{-1} = 0)
    y_t = <C_t, h_t> + D[d] * u_t,     out_t = y_t * silu(z_t)  (skip and gate optional)

``selective_scan_ref`` is plain PyTorch and is the CPU implementation: a chunked scan with a hand-written
backward (see :mod:`medseg.kernels.selective_scan_chunked`). ``selective_scan_loop_ref`` is the naive
per-token loop that the reference is tested against. The ``"cupy"`` backend runs ``selective_scan.cu``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medseg.errors import InputError
from medseg.kernels.dispatch import resolve_backend
from medseg.kernels.scan_args import canonical_matrix, check_scan_args, compute_dtype
from medseg.kernels.selective_scan_chunked import ChunkedSelectiveScan, default_chunk_len

ScanResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Cast to the compute dtype, apply bias and softplus, and bring ``B``/``C`` to canonical views."""
    dtype = compute_dtype(u)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    return u.to(dtype), dt, A.to(dtype), canonical_matrix(B.to(dtype)), canonical_matrix(C.to(dtype))


def finish_output(y, u, D, z, dtype_in, last_state, return_last_state) -> ScanResult:
    """The epilogue shared by every implementation: ``D`` skip, ``silu(z)`` gate, cast to the input dtype.

    Args:
        y: scan output ``(B, D, L)`` in the compute dtype.
        u: input ``(B, D, L)`` in the compute dtype.
        D: ``(D,)`` or ``None``.
        z: ``(B, D, L)`` or ``None``.
        dtype_in: dtype of the returned ``out``.
        last_state: ``(B, D, N)``.
        return_last_state: return ``(out, last_state)`` instead of ``out``.

    Returns:
        ``out`` or ``(out, last_state)``.
    """
    out = y if D is None else y + u * D.to(y.dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(y.dtype))
    out = out.to(dtype_in)
    return (out, last_state) if return_last_state else out


def selective_scan_ref(
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
    chunk_len: int | None = None,
) -> ScanResult:
    """Selective scan in plain PyTorch (chunked; memory linear in ``B * D * L``).

    Computes in float32 (float64 for float64 ``u``) and returns ``out`` in ``u``'s dtype, like mamba.

    Args:
        u: input ``(B, D, L)``.
        delta: step sizes ``(B, D, L)`` (before ``delta_bias`` and softplus).
        A: real state matrix ``(D, N)``, usually negative.
        B: input matrix ``(B, N, L)`` (shared by all channels), grouped ``(B, G, N, L)`` or constant ``(D, N)``.
        C: output matrix, same choices as ``B``.
        D: skip weights ``(D,)`` or ``None``.
        z: gate ``(B, D, L)``; the output is multiplied by ``silu(z)``. ``None`` for no gate.
        delta_bias: added to ``delta`` per channel, ``(D,)`` or ``None``.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state.
        chunk_len: tokens per chunk (state carried between chunks); ``None`` picks one from a memory budget.

    Returns:
        ``out`` ``(B, D, L)``, or ``(out, last_state)`` with ``last_state`` ``(B, D, N)`` in the compute dtype.

    Raises:
        InputError: unsupported shapes, dtypes, devices or ``chunk_len``.
    """
    shape = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    if chunk_len is None:
        chunk_len = default_chunk_len(shape.batch, shape.channels, shape.state, shape.length, u.is_cuda)
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 1:
        raise InputError(f"selective_scan_ref: chunk_len must be a positive integer, got {chunk_len!r}")
    uc, dt, Ac, Bc, Cc = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    y, last_state = ChunkedSelectiveScan.apply(uc, dt, Ac, Bc, Cc, chunk_len)
    return finish_output(y, uc, D, z, u.dtype, last_state, return_last_state)


def selective_scan_loop_ref(
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
) -> ScanResult:
    """The naive selective scan: one Python step per token, plain autograd. For tests and benchmarks.

    Same arguments, shapes and results as :func:`selective_scan_ref`.

    Args:
        u: input ``(B, D, L)``.
        delta: step sizes ``(B, D, L)``.
        A: real state matrix ``(D, N)``.
        B: ``(B, N, L)``, ``(B, G, N, L)`` or ``(D, N)``.
        C: same choices as ``B``.
        D: skip weights ``(D,)`` or ``None``.
        z: gate ``(B, D, L)`` or ``None``.
        delta_bias: ``(D,)`` or ``None``.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state ``(B, D, N)``.

    Returns:
        ``out`` ``(B, D, L)``, or ``(out, last_state)``.
    """
    shape = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    uc, dt, Ac, Bc, Cc = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    groups = Bc.shape[1]
    per_group = (shape.batch, groups, shape.channels // groups)
    dt4 = dt.reshape(*per_group, shape.length)
    dtu = (dt * uc).reshape(*per_group, shape.length)
    A4 = Ac.reshape(*per_group[1:], shape.state)
    h = uc.new_zeros(*per_group, shape.state)
    ys = []
    for t in range(shape.length):
        b_t = Bc[..., t if Bc.shape[-1] > 1 else 0].unsqueeze(2)  # (Bb, G, 1, N)
        c_t = Cc[..., t if Cc.shape[-1] > 1 else 0].unsqueeze(2)
        h = torch.exp(dt4[..., t, None] * A4) * h + dtu[..., t, None] * b_t
        ys.append((h * c_t).sum(-1).reshape(shape.batch, shape.channels))
    y = torch.stack(ys, dim=-1)
    return finish_output(y, uc, D, z, u.dtype, h.reshape(shape.batch, shape.channels, shape.state), return_last_state)


def selective_scan(
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
    backend: str = "auto",
) -> ScanResult:
    """Selective scan with mamba's semantics; differentiable in every tensor argument.

    Args:
        u: input ``(B, D, L)``.
        delta: step sizes ``(B, D, L)`` (before ``delta_bias`` and softplus).
        A: real state matrix ``(D, N)``, usually negative.
        B: input matrix ``(B, N, L)`` (shared by all channels), grouped ``(B, G, N, L)`` or constant ``(D, N)``.
        C: output matrix, same choices as ``B``.
        D: skip weights ``(D,)`` or ``None``.
        z: gate ``(B, D, L)`` or ``None``; the output is multiplied by ``silu(z)``.
        delta_bias: ``(D,)`` or ``None``.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state ``(B, D, N)``.
        backend: ``"auto"``, ``"cupy"`` (CUDA kernels; float32 state, float32/float16/bfloat16 inputs,
            ``N <= 32``, input-dependent ``B``/``C``) or ``"torch"`` (:func:`selective_scan_ref`). ``"auto"``
            uses the kernels for CUDA tensors they support and the reference otherwise.

    Returns:
        ``out`` ``(B, D, L)`` in ``u``'s dtype, or ``(out, last_state)``.

    Raises:
        InputError: unsupported shapes, dtypes or devices.
        ConfigError: unknown ``backend``.
        MissingDependencyError: ``backend="cupy"`` without CuPy.
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    chosen = resolve_backend(backend, u, delta, A, B, C, D, z, delta_bias)
    if chosen == "cupy" and backend == "auto":
        from medseg.kernels.selective_scan_cuda import unsupported_reason

        # "auto" means the fastest implementation that can run these arguments.
        if unsupported_reason(A, B, C, u) is not None:
            chosen = "torch"
    if chosen == "torch":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    from medseg.kernels.selective_scan_cuda import selective_scan_cupy

    return selective_scan_cupy(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
