"""Chunked selective scan in plain PyTorch: the CPU implementation behind ``selective_scan_ref``.

The recurrence is ``h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t`` and ``y_t = <C_t, h_t>`` per
channel (``h`` has ``N`` entries). A per-token Python loop costs ``L`` tiny steps (and as many autograd
nodes); here the sequence is cut into *chunks* of ``chunk_len`` tokens, run one after another with the
state carried across, and each chunk into ``S`` *segments* of ``T`` tokens that are scanned together:

1. every segment is scanned from a zero state, all segments at once (``T`` vector steps);
2. the true state entering each segment is propagated across segments (``S`` small steps), using the
   segment's total decay ``exp(A * sum(delta))``;
3. the full states are the local ones plus the entering state times the cumulative decay
   ``exp(cumsum(delta * A))`` (one vector operation).

All exponents are sums of ``delta * A`` over a token range, ``<= 0`` for the usual ``A < 0``,
``delta >= 0``, so nothing overflows. The backward pass is written by hand (a reverse scan of the same
shape) and recomputes each chunk's internals from the state stored at the chunk's start, so memory is
``O(B * D * L)`` plus the internals of one chunk (``O(B * D * chunk_len * N)``), never ``B * D * L * N``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Elements (B * D * N * tokens) in one chunk's internals. About ten such tensors live during a backward
# chunk (10 MB in float32). Measured on CPU at B * D * N = 1024: 2**18 (256 tokens) is about fastest; larger
# chunks fall out of cache, smaller ones pay more Python steps.
CHUNK_ELEMENTS = 2**18
_LOG2_E = 1.0 / math.log(2.0)


def default_chunk_len(batch: int, channels: int, state: int, length: int, on_gpu: bool = False) -> int:
    """Tokens per chunk: as many as fit the element budget, at least 64, at most ``length``.

    The budget is :data:`CHUNK_ELEMENTS` on CPU and 64 times that on a GPU, where every Python step is a
    kernel launch and large chunks cost nothing in cache misses.
    """
    budget = CHUNK_ELEMENTS * (64 if on_gpu else 1)
    per_token = max(1, batch * channels * state)
    return max(1, min(length, max(64, budget // per_token)))


def segment_len(chunk_len: int) -> int:
    """Tokens per segment, about ``sqrt(chunk_len)`` so that steps within and across segments balance."""
    return max(1, math.ceil(math.sqrt(chunk_len)))


class _Chunk:
    """One chunk's inputs as ``(B, G, H, S, T)`` / ``(.., N)`` views (channels ``D`` split as ``G * H``)."""

    def __init__(self, u, dt, A, B, C, start: int, stop: int, seg: int) -> None:
        batch, channels, _ = u.shape
        groups = B.shape[1]
        self.length = stop - start
        self.segments = -(-self.length // seg)
        pad = self.segments * seg - self.length
        shape5 = (batch, groups, channels // groups, self.segments, seg)
        # Padding with delta = 0 and u = 0 gives decay 1 and input 0: the state passes through unchanged.
        self.u = F.pad(u[..., start:stop], (0, pad)).reshape(shape5)
        self.dt = F.pad(dt[..., start:stop], (0, pad)).reshape(shape5)
        self.A = A.reshape(1, groups, channels // groups, 1, 1, -1)
        self.A2 = self.A * _LOG2_E
        self.B = self._matrix(B, start, stop, pad, seg)
        self.C = self._matrix(C, start, stop, pad, seg)
        self.pad = pad

    def _matrix(self, m: torch.Tensor, start: int, stop: int, pad: int, seg: int) -> torch.Tensor:
        bb, groups, n, lb = m.shape
        if lb == 1:
            return m[..., 0][:, :, None, None, None, :]
        m = F.pad(m[..., start:stop], (0, pad)).reshape(bb, groups, n, self.segments, seg)
        return m.permute(0, 1, 3, 4, 2).contiguous().unsqueeze(2)

    def unshape(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, G, H, S, T)`` back to ``(B, D, chunk length)``."""
        b, g, h, s, seg = t.shape
        return t.reshape(b, g * h, s * seg)[..., : self.length]

    def matrix_grad(self, grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Turn a ``(B, G, S, T, N)`` gradient into ``like``'s canonical ``(Bb, G, N, Lb)`` layout (chunk part)."""
        b, g, s, seg, n = grad.shape
        if like.shape[-1] == 1:
            grad = grad.sum(dim=(2, 3)).unsqueeze(-1)
        else:
            grad = grad.permute(0, 1, 4, 2, 3).reshape(b, g, n, s * seg)[..., : self.length]
        if like.shape[0] == 1 and b != 1:
            grad = grad.sum(dim=0, keepdim=True)
        return grad


def _chunk_states(ch: _Chunk, h0: torch.Tensor):
    """Scan one chunk from the state ``h0`` ``(B, G, H, N)``.

    Returns:
        ``(a, log2_decay, h, h_end)``: per-token decays ``exp(delta A)``, within-segment cumulative sums
        of ``delta A / ln 2``, all states ``(B, G, H, S, T, N)``, and the state after the chunk ``(B, G, H, N)``.
    """
    # Base-2 exponentials: torch.exp2 is several times faster than torch.exp on CPU, same accuracy.
    dA2 = ch.dt.unsqueeze(-1) * ch.A2
    a = torch.exp2(dA2)
    log2_decay = torch.cumsum(dA2, dim=-2)
    del dA2
    h = (ch.dt * ch.u).unsqueeze(-1) * ch.B
    h = h.expand(a.shape).contiguous() if h.shape != a.shape else h
    h_t, a_t = h.unbind(-2), a.unbind(-2)
    for t in range(1, len(h_t)):  # 1. all segments from a zero state, together
        h_t[t].addcmul_(a_t[t], h_t[t - 1])
    decay = torch.exp2(log2_decay)
    h_in = torch.empty_like(h[..., 0, :])
    h_in_s, h_end_s, decay_end_s = h_in.unbind(-2), h[..., -1, :].unbind(-2), decay[..., -1, :].unbind(-2)
    state = h0
    for s in range(len(h_in_s)):  # 2. the true state entering each segment
        h_in_s[s].copy_(state)
        state = torch.addcmul(h_end_s[s], decay_end_s[s], state)
    h.addcmul_(decay, h_in.unsqueeze(-2))  # 3. full states
    return a, log2_decay, h, state


class ChunkedSelectiveScan(torch.autograd.Function):
    """``y, h_last = scan(u, delta, A, B, C)`` with a hand-written, chunk-recomputing backward.

    Inputs are already in the compute dtype; ``delta`` already has its bias and softplus; ``B`` and ``C``
    are canonical ``(Bb, G, N, Lb)`` views (see :func:`medseg.kernels.scan_args.canonical_matrix`).
    Outputs: ``y`` ``(B, D, L)`` (without the ``D`` skip and the ``z`` gate) and the final state ``(B, D, N)``.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, chunk_len: int):
        batch, channels, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        seg = segment_len(chunk_len)
        y = torch.empty_like(u)
        state = u.new_zeros(batch, groups, channels // groups, n)
        starts = list(range(0, length, chunk_len))
        chunk_states = []
        for start in starts:
            stop = min(length, start + chunk_len)
            chunk_states.append(state)
            ch = _Chunk(u, dt, A, B, C, start, stop, seg)
            _, _, h, state = _chunk_states(ch, state)
            y[..., start:stop] = ch.unshape((h * ch.C).sum(-1))
            del h
        ctx.save_for_backward(u, dt, A, B, C, *chunk_states)
        ctx.chunk_len, ctx.seg = chunk_len, seg
        return y, state.reshape(batch, channels, n)

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, dt, A, B, C, *chunk_states = ctx.saved_tensors
        batch, channels, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        chunk_len, seg = ctx.chunk_len, ctx.seg
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        g_carry = (
            grad_last.reshape(batch, groups, channels // groups, n).to(u.dtype)
            if grad_last is not None
            else u.new_zeros(batch, groups, channels // groups, n)
        )
        grad_u, grad_dt = torch.empty_like(u), torch.empty_like(dt)
        grad_A = torch.zeros(groups, channels // groups, n, dtype=A.dtype, device=A.device)
        grad_B = torch.zeros_like(B) if B.shape[-1] == 1 else torch.empty_like(B)
        grad_C = torch.zeros_like(C) if C.shape[-1] == 1 else torch.empty_like(C)
        starts = list(range(0, length, chunk_len))
        for index in reversed(range(len(starts))):
            start = starts[index]
            stop = min(length, start + chunk_len)
            h0 = chunk_states[index]
            ch = _Chunk(u, dt, A, B, C, start, stop, seg)
            a, log2_decay, h, _ = _chunk_states(ch, h0)
            gy = F.pad(grad_y[..., start:stop], (0, ch.pad)).reshape(ch.dt.shape)
            # Direct gradient into each state, then the reverse scan g_t = gy_t C_t + a_{t+1} g_{t+1}.
            g = gy.unsqueeze(-1) * ch.C
            g = g.expand(h.shape).contiguous() if g.shape != h.shape else g
            g_t, a_t = g.unbind(-2), a.unbind(-2)
            for t in range(seg - 2, -1, -1):  # 1. every segment from a zero carry, together
                g_t[t].addcmul_(a_t[t + 1], g_t[t + 1])
            # Decay from token t to the segment's end, t itself excluded: exp(sum_{r > t} delta_r A) <= 1.
            rest = torch.exp2(log2_decay[..., -1:, :] - log2_decay)
            del log2_decay
            g_out = torch.empty_like(g[..., 0, :])
            g_out_s, g_first_s = g_out.unbind(-2), g[..., 0, :].unbind(-2)
            rest_first_s, a_first_s = rest[..., 0, :].unbind(-2), a[..., 0, :].unbind(-2)
            carry = g_carry
            for s in range(len(g_out_s) - 1, -1, -1):  # 2. the true gradient leaving each segment
                g_out_s[s].copy_(carry)
                carry = a_first_s[s] * torch.addcmul(g_first_s[s], rest_first_s[s], carry)
            g.addcmul_(rest, g_out.unsqueeze(-2))  # 3. full state gradients
            g_carry = carry
            del rest
            # States before each token: shift by one along the chunk, h0 first.
            flat = h.flatten(-3, -2)
            h_prev = torch.cat([h0.unsqueeze(-2), flat[..., :-1, :]], dim=-2).view(h.shape)
            q = h_prev.mul_(a).mul_(g)  # d loss / d (delta A), per state entry
            del a, h_prev
            q_flat = q.flatten(-3, -2)  # (B, G, H, S*T, N)
            gb = (g * ch.B).sum(-1)
            grad_dt_c = gb * ch.u + torch.matmul(q_flat, ch.A.reshape(groups, -1, n, 1)).view(gb.shape)
            grad_u[..., start:stop] = ch.unshape(gb * ch.dt)
            grad_dt[..., start:stop] = ch.unshape(grad_dt_c)
            grad_A += torch.matmul(ch.dt.flatten(-2).unsqueeze(-2), q_flat).sum(0).squeeze(-2)
            del q, q_flat
            gB = (g * (ch.dt * ch.u).unsqueeze(-1)).sum(2)
            gC = (h * gy.unsqueeze(-1)).sum(2)
            _accumulate(grad_B, ch.matrix_grad(gB, B), start, stop)
            _accumulate(grad_C, ch.matrix_grad(gC, C), start, stop)
        return grad_u, grad_dt, grad_A.reshape(channels, n), grad_B, grad_C, None


def _accumulate(total: torch.Tensor, part: torch.Tensor, start: int, stop: int) -> None:
    if total.shape[-1] == 1:
        total += part
    else:
        total[..., start:stop] = part
