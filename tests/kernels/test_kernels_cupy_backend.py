"""The CuPy backend against the references: forward and every gradient, odd sizes, unwritten outputs.

Each test runs twice: through the host emulation of the CUDA kernels (``emulated``: the real ``.cu``
sources compiled with g++, float32, on every machine with g++), and on a real GPU (``cuda``: all storage
dtypes; skipped without one). Outputs are pre-filled with NaN (``poison_outputs``), so an element that a
kernel never writes fails the comparison.
"""

from __future__ import annotations

import pytest
import torch

from medseg.errors import InputError
from medseg.kernels import coupling_forward_, coupling_inverse_, depthwise_conv3d_ref, selective_scan_ref
from medseg.kernels.coupling_cuda import coupling_cupy
from medseg.kernels.depthwise_conv3d_cuda import depthwise_conv3d_cupy
from medseg.kernels.selective_scan_cuda import selective_scan_cupy

HAS_CUDA = torch.cuda.is_available()
# Relative tolerances (of the reference's largest magnitude) per storage dtype.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2}


@pytest.fixture(
    params=[
        "emulated",
        pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
    ]
)
def target(request):
    """``(device, dtypes)`` of the backend under test."""
    if request.param == "emulated":
        request.getfixturevalue("emulated_cupy")
        return torch.device("cpu"), (torch.float32,)
    return torch.device("cuda"), (torch.float32, torch.float16, torch.bfloat16)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Compare within ``TOLERANCE[dtype]`` times the expected tensor's largest magnitude; NaN always fails."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (an element was never written?)"
    scale = max(expected.abs().max().item(), 1e-6)
    error = (actual - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"{what}: max error {error:.3g} for scale {scale:.3g} ({dtype})"


@pytest.mark.parametrize(("k", "stride"), [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)])
def test_depthwise_conv3d_matches_reference(target, k, stride):
    device, dtypes = target
    g = torch.Generator().manual_seed(k + stride)
    shape = (2, 2, 5, 9, 33)  # no axis a multiple of a tile; several tiles along each
    for dtype in dtypes:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        w = torch.randn(2, 1, k, k, k, generator=g, dtype=torch.float64) / k
        b = torch.randn(2, generator=g, dtype=torch.float64)
        args = [t.to(device, dtype).requires_grad_() for t in (x, w, b)]
        y = depthwise_conv3d_cupy(*args, stride=stride, poison_outputs=True)
        grad = torch.randn(y.shape, generator=g, dtype=torch.float64)
        gx, gw, gb = torch.autograd.grad(y, args, grad.to(device, dtype))
        ref_args = [t.requires_grad_() for t in (x, w, b)]
        y_ref = depthwise_conv3d_ref(*ref_args, stride=stride)
        rx, rw, rb = torch.autograd.grad(y_ref, ref_args, grad)
        assert y.dtype == dtype
        for name, got, want in (("y", y, y_ref), ("grad x", gx, rx), ("grad w", gw, rw), ("grad b", gb, rb)):
            assert_close_scaled(got, want, dtype, f"depthwise k={k} stride={stride} {name}")


def test_depthwise_conv3d_without_bias(target):
    device, _ = target
    x = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64)
    w = torch.randn(2, 1, 3, 3, 3, dtype=torch.float64)
    y = depthwise_conv3d_cupy(x.to(device, torch.float32), w.to(device, torch.float32), None, poison_outputs=True)
    assert_close_scaled(y, depthwise_conv3d_ref(x, w), torch.float32, "depthwise without bias")


@pytest.mark.parametrize("numel", [1, 7, 4096 + 3])
@pytest.mark.parametrize("offset", [0, 1])
def test_coupling_matches_reference(target, numel, offset):
    device, dtypes = target
    g = torch.Generator().manual_seed(numel)
    for dtype in dtypes:
        # An offset view makes the pointers misaligned for 16-byte vectors: the scalar path must serve.
        a = torch.randn(numel + offset, generator=g).to(device, dtype)[offset:].requires_grad_()
        b = torch.randn(numel + offset, generator=g).to(device, dtype)[offset:].requires_grad_()
        for sign in (1.0, -1.0):
            out = coupling_cupy(a, b, sign, poison_outputs=True)
            assert torch.equal(out, a + sign * b), f"coupling sign={sign} {dtype}"
            ga, gb = torch.autograd.grad(out, (a, b), torch.ones_like(out))
            assert torch.equal(ga, torch.ones_like(a)) and torch.equal(gb, sign * torch.ones_like(b))


def test_in_place_coupling_updates_the_first_operand(target):
    device, dtypes = target
    if device.type == "cpu":
        from medseg.kernels.coupling_cuda import coupling_cupy_

        a, b = torch.arange(10.0), torch.ones(10)
        assert coupling_cupy_(a, b, -1.0) is a and torch.equal(a, torch.arange(10.0) - 1)
        return
    a, b = torch.arange(10.0, device=device), torch.ones(10, device=device)
    assert coupling_inverse_(a, b, backend="cupy") is a and torch.equal(a, torch.arange(10.0, device=device) - 1)
    assert coupling_forward_(a, b, backend="cupy") is a and torch.equal(a, torch.arange(10.0, device=device))


def _scan_inputs(g, batch, channels, length, state, groups, dtype):
    mshape = (batch, state, length) if groups is None else (batch, groups, state, length)
    return {
        "u": torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        "delta": torch.randn(batch, channels, length, generator=g, dtype=torch.float64) * 0.5,
        "A": -(torch.rand(channels, state, generator=g, dtype=torch.float64) + 0.5),
        "B": torch.randn(*mshape, generator=g, dtype=torch.float64),
        "C": torch.randn(*mshape, generator=g, dtype=torch.float64),
        "D": torch.randn(channels, generator=g, dtype=torch.float64),
        "z": torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        "delta_bias": torch.randn(channels, generator=g, dtype=torch.float64) * 0.1,
    }


@pytest.mark.parametrize(
    ("batch", "channels", "length", "state", "groups"),
    [
        (2, 8, 150, 5, None),  # N not a power of two, last chunk partial
        (1, 8, 130, 4, 2),  # grouped B/C
        (2, 3, 64, 16, None),  # odd channel count: one channel per block, fewer than 32 threads
    ],
)
def test_selective_scan_matches_reference(target, batch, channels, length, state, groups):
    device, dtypes = target
    g = torch.Generator().manual_seed(length)
    for dtype in dtypes:
        raw = _scan_inputs(g, batch, channels, length, state, groups, dtype)
        ref_inputs = {k: v.requires_grad_() for k, v in raw.items()}
        inputs = {k: v.detach().to(device, dtype).requires_grad_() for k, v in ref_inputs.items()}
        inputs["A"] = inputs["A"].detach().float().requires_grad_()  # A stays float32, like mamba
        out, last = selective_scan_cupy(**inputs, delta_softplus=True, return_last_state=True, poison_outputs=True)
        w_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
        w_last = torch.randn(last.shape, generator=g, dtype=torch.float64)
        loss = (out.double() * w_out.to(device)).sum() + (last.double() * w_last.to(device)).sum()
        grads = torch.autograd.grad(loss, list(inputs.values()))
        out_r, last_r = selective_scan_ref(**ref_inputs, delta_softplus=True, return_last_state=True)
        grads_r = torch.autograd.grad((out_r * w_out).sum() + (last_r * w_last).sum(), list(ref_inputs.values()))
        assert out.dtype == dtype and last.dtype == torch.float32
        assert_close_scaled(out, out_r, dtype, "scan out")
        assert_close_scaled(last, last_r, dtype, "scan last state")
        for name, got, want in zip(inputs, grads, grads_r):
            assert_close_scaled(got, want, dtype, f"scan grad {name}")


def test_selective_scan_kernels_refuse_what_they_cannot_run(target):
    device, _ = target
    u = torch.zeros(1, 2, 5, device=device)
    wide = torch.zeros(1, 33, 5, device=device)
    with pytest.raises(InputError, match="N = 33"):
        selective_scan_cupy(u, u, torch.zeros(2, 33, device=device), wide, wide)
    constant = torch.zeros(2, 3, device=device)
    with pytest.raises(InputError, match="constant"):
        selective_scan_cupy(u, u, constant, constant, constant)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_auto_backend_falls_back_to_torch_for_arguments_the_kernels_refuse():
    from medseg.kernels import selective_scan

    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 4, 20, generator=g)
    A = -torch.rand(4, 3, generator=g) - 0.5
    B, C = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)  # constant: no kernel for it
    out = selective_scan(*(t.cuda() for t in (u, u.abs(), A, B, C)), backend="auto")
    torch.testing.assert_close(out.cpu(), selective_scan_ref(u, u.abs(), A, B, C), rtol=1e-5, atol=1e-5)
