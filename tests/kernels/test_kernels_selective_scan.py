"""Selective scan: the chunked reference against the per-token loop, forward and every gradient."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import InputError
from medseg.kernels import selective_scan, selective_scan_loop_ref, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_inputs(batch=2, channels=4, length=21, state=3, layout="shared", dtype=torch.float64, seed=0):
    """Random mamba-style inputs: A < 0, B/C shared (B, N, L), grouped (B, 2, N, L) or constant (D, N)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    if layout == "shared":
        mshape = (batch, state, length)
    elif layout == "grouped":
        mshape = (batch, 2, state, length)
    else:
        mshape = (channels, state)
    tensors = {
        "u": rand(batch, channels, length),
        "delta": rand(batch, channels, length, scale=0.5),
        "A": -(torch.rand(channels, state, generator=g, dtype=torch.float64) + 0.5).to(dtype),
        "B": rand(*mshape),
        "C": rand(*mshape),
        "D": rand(channels),
        "z": rand(batch, channels, length),
        "delta_bias": rand(channels, scale=0.1),
    }
    return {k: v.requires_grad_() for k, v in tensors.items()}


def run_and_grad(fn, inputs, **kwargs):
    out, last = fn(**inputs, delta_softplus=True, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(7)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    loss = (out.float() * w_out.float()).sum() + (last.float() * w_last.float()).sum()
    grads = torch.autograd.grad(loss, list(inputs.values()))
    return out, last, dict(zip(inputs, grads))


@pytest.mark.parametrize("layout", ["shared", "grouped", "constant"])
@pytest.mark.parametrize("chunk_len", [1, 5, 8, 21, 64])
def test_chunked_reference_matches_the_per_token_loop_in_float64(layout, chunk_len):
    inputs = scan_inputs(layout=layout)
    out, last, grads = run_and_grad(selective_scan_ref, inputs, chunk_len=chunk_len)
    out_l, last_l, grads_l = run_and_grad(selective_scan_loop_ref, inputs)
    torch.testing.assert_close(out, out_l, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, last_l, rtol=1e-10, atol=1e-12)
    for name in NAMES:
        torch.testing.assert_close(grads[name], grads_l[name], rtol=1e-9, atol=1e-11, msg=name)


def test_chunked_reference_matches_the_loop_in_float32():
    inputs = scan_inputs(batch=1, channels=8, length=300, state=16, dtype=torch.float32, seed=1)
    out, last, grads = run_and_grad(selective_scan_ref, inputs, chunk_len=100)
    inputs64 = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    out_l, last_l, grads_l = run_and_grad(selective_scan_loop_ref, inputs64)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, out_l.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last, last_l.float(), rtol=1e-4, atol=1e-4)
    for name in NAMES:
        scale = grads_l[name].abs().max().item()
        torch.testing.assert_close(grads[name], grads_l[name].float(), rtol=1e-3, atol=1e-4 * scale, msg=name)


@pytest.mark.parametrize("layout", ["shared", "grouped", "constant"])
def test_chunked_reference_passes_gradcheck(layout):
    inputs = scan_inputs(batch=1, channels=2, length=7, state=2, layout=layout, seed=2)

    def fn(*tensors):
        out, last = selective_scan_ref(
            *tensors, delta_softplus=True, return_last_state=True, chunk_len=3
        )
        return out, last

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()))


def test_optional_inputs_can_be_left_out():
    full = scan_inputs(length=9)
    args = {k: full[k].detach() for k in ("u", "delta", "A", "B", "C")}
    out = selective_scan_ref(**args, chunk_len=4)
    torch.testing.assert_close(out, selective_scan_loop_ref(**args), rtol=1e-10, atol=1e-12)
    assert not isinstance(out, tuple)


def test_torch_backend_is_the_reference():
    inputs = {k: v.detach() for k, v in scan_inputs(length=11).items()}
    a = selective_scan(**inputs, delta_softplus=True, backend="torch")
    b = selective_scan(**inputs, delta_softplus=True, backend="auto")
    torch.testing.assert_close(a, selective_scan_ref(**inputs, delta_softplus=True), rtol=0, atol=0)
    torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_half_precision_input_returns_its_dtype_with_float32_state():
    inputs = {k: v.detach() for k, v in scan_inputs(length=10, dtype=torch.bfloat16).items()}
    out, last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32


def test_strong_decay_over_long_sequences_stays_finite():
    # delta * A reaches about -1e3 per token: any exp of a cumulative sum with the wrong sign overflows.
    inputs = {k: v.detach() for k, v in scan_inputs(batch=1, channels=3, length=200, state=4, seed=4).items()}
    inputs["delta"] = inputs["delta"].abs() * 40 + 5
    inputs["A"] = inputs["A"] * 30
    out, last = selective_scan_ref(**inputs, return_last_state=True, chunk_len=100)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    torch.testing.assert_close(out, selective_scan_loop_ref(**inputs), rtol=1e-10, atol=1e-12)


def test_memory_saved_for_backward_is_linear_in_the_sequence():
    inputs = scan_inputs(batch=1, channels=4, length=512, state=16, dtype=torch.float32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        selective_scan_ref(**inputs, delta_softplus=True, chunk_len=64)
    # The inputs, a few (B, D, L) tensors and one (B, D, N) state per chunk; never a (B, D, L, N) tensor.
    batch, channels, length, state = 1, 4, 512, 16
    assert max(saved) <= max(batch * channels, batch * state) * length
    assert sum(saved) <= 2 * sum(t.numel() for t in inputs.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"u": torch.zeros(2, 4)}, r"u must be \(B, D, L\)"),
        ({"delta": torch.zeros(2, 4, 20)}, "delta must have u's shape"),
        ({"A": torch.zeros(3, 3)}, r"A must be a real \(D, N\)"),
        ({"A": torch.zeros(4, 3, dtype=torch.complex64)}, "real"),
        ({"B": torch.zeros(2, 3, 20)}, r"B must be \(B, N, L\)"),
        ({"C": torch.zeros(2, 3, 3, 21)}, "G dividing"),
        ({"D": torch.zeros(5)}, r"D must be \(4,\)"),
        ({"z": torch.zeros(2, 4, 20)}, "z must have u's shape"),
    ],
)
def test_bad_shapes_are_rejected(change, message):
    inputs = {k: v.detach().float() for k, v in scan_inputs().items()}
    inputs.update(change)
    with pytest.raises(InputError, match=message):
        selective_scan(**inputs)


def test_bad_chunk_len_is_rejected():
    inputs = {k: v.detach() for k, v in scan_inputs().items()}
    with pytest.raises(InputError, match="chunk_len"):
        selective_scan_ref(**inputs, chunk_len=0)
