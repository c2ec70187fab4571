"""Argument checks and layout helpers shared by the selective-scan implementations.

The layout is mamba's (``mamba_ssm.ops.selective_scan_interface``): ``u`` and ``delta`` are ``(B, D, L)``,
``A`` is ``(D, N)``, and ``B`` / ``C`` are input-dependent ``(B, N, L)`` (shared by all channels), grouped
``(B, G, N, L)`` (channel ``d`` uses group ``d // (D / G)``) or constant ``(D, N)``. Internally both are
brought to one *canonical* view ``(Bb, G, N, Lb)`` with ``Bb`` in ``{1, B}`` and ``Lb`` in ``{1, L}``
(constant matrices become ``G = D`` groups with ``Bb = Lb = 1``), so one code path serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medseg.errors import InputError


@dataclass(frozen=True)
class ScanShape:
    """Sizes of one selective-scan call.

    Attributes:
        batch: ``B``.
        channels: ``D``.
        length: ``L``.
        state: ``N``.
    """

    batch: int
    channels: int
    length: int
    state: int


def _check_matrix(name: str, m: torch.Tensor, shape: ScanShape) -> None:
    b, d, length, n = shape.batch, shape.channels, shape.length, shape.state
    if m.dim() == 2:
        if tuple(m.shape) != (d, n):
            raise InputError(f"selective_scan: constant {name} must be (D, N) = ({d}, {n}), got {tuple(m.shape)}")
    elif m.dim() == 3:
        if tuple(m.shape) != (b, n, length):
            raise InputError(
                f"selective_scan: {name} must be (B, N, L) = ({b}, {n}, {length}), got {tuple(m.shape)}"
            )
    elif m.dim() == 4:
        groups = m.shape[1]
        if m.shape[0] != b or m.shape[2] != n or m.shape[3] != length or groups < 1 or d % groups:
            raise InputError(
                f"selective_scan: grouped {name} must be (B, G, N, L) = ({b}, G, {n}, {length}) with G dividing "
                f"D = {d}, got {tuple(m.shape)}"
            )
    else:
        raise InputError(
            f"selective_scan: {name} must be (D, N), (B, N, L) or (B, G, N, L), got shape {tuple(m.shape)}"
        )


def check_scan_args(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> ScanShape:
    """Validate the arguments of a selective scan.

    Args:
        u: input ``(B, D, L)``.
        delta: step sizes ``(B, D, L)``.
        A: real state matrix (diagonal per channel) ``(D, N)``.
        B: input matrix ``(B, N, L)``, ``(B, G, N, L)`` or ``(D, N)``.
        C: output matrix, same choices as ``B``.
        D: skip weights ``(D,)`` or ``None``.
        z: gate ``(B, D, L)`` or ``None``.
        delta_bias: ``(D,)`` or ``None``.

    Returns:
        The sizes of the call.

    Raises:
        InputError: a shape, dtype or device is not supported (complex ``A`` included).
    """
    if u.dim() != 3:
        raise InputError(f"selective_scan: u must be (B, D, L), got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise InputError(f"selective_scan: delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.is_complex() or A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise InputError(
            f"selective_scan: A must be a real (D, N) tensor with D = {u.shape[1]}, got {A.dtype} {tuple(A.shape)}"
        )
    shape = ScanShape(u.shape[0], u.shape[1], u.shape[2], A.shape[1])
    _check_matrix("B", B, shape)
    _check_matrix("C", C, shape)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (shape.channels,):
            raise InputError(f"selective_scan: {name} must be ({shape.channels},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise InputError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    named = [("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)]
    present = [(n, t) for n, t in named if t is not None]
    bad = [f"{n} ({t.dtype})" for n, t in present if not t.is_floating_point()]
    if bad:
        raise InputError(f"selective_scan: tensors must be real floating point: {', '.join(bad)}")
    if len({t.device for _, t in present}) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in present)
        raise InputError(f"selective_scan: all tensors must be on one device, got {where}")
    return shape


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """The dtype the scan accumulates in: float64 for float64 input, float32 otherwise (mamba's choice)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def canonical_matrix(m: torch.Tensor) -> torch.Tensor:
    """View ``B`` or ``C`` as ``(Bb, G, N, Lb)`` (no copy; autograd flows back to the original layout).

    Args:
        m: ``(B, N, L)``, ``(B, G, N, L)`` or constant ``(D, N)``.

    Returns:
        ``(B, 1, N, L)``, ``(B, G, N, L)`` or ``(1, D, N, 1)`` respectively.
    """
    if m.dim() == 3:
        return m.unsqueeze(1)
    if m.dim() == 2:
        return m[None, :, :, None]
    return m
