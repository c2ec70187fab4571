"""Additive coupling: the reference matches the arithmetic, inverts exactly, and rejects bad operands."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import InputError
from medseg.kernels import (
    coupling_forward,
    coupling_forward_,
    coupling_forward_ref,
    coupling_inverse,
    coupling_inverse_,
    coupling_inverse_ref,
)


def test_forward_then_inverse_recovers_the_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, 3, generator=g, dtype=torch.float64)
    f = torch.randn(2, 3, 5, 4, 3, generator=g, dtype=torch.float64)
    y = coupling_forward(x, f, backend="torch")
    torch.testing.assert_close(y, x + f, rtol=0, atol=0)
    torch.testing.assert_close(coupling_inverse(y, f, backend="torch"), x, rtol=0, atol=1e-15)


def test_references_do_not_modify_their_inputs():
    x, f = torch.ones(4), torch.full((4,), 2.0)
    y = coupling_forward_ref(x, f)
    z = coupling_inverse_ref(y, f)
    assert torch.equal(x, torch.ones(4)) and torch.equal(f, torch.full((4,), 2.0))
    assert y.data_ptr() not in (x.data_ptr(), f.data_ptr()) and torch.equal(z, x)


def test_gradients_flow_to_both_operands():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    f = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: coupling_forward(a, b, backend="auto"), (x, f))
    assert torch.autograd.gradcheck(lambda a, b: coupling_inverse(a, b, backend="auto"), (x, f))


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), "same shape"),
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64), "dtype"),
        (torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), "floating-point"),
    ],
)
def test_mismatched_operands_are_rejected(a, b, message):
    with pytest.raises(InputError, match=message):
        coupling_forward(a, b)
    with pytest.raises(InputError, match=message):
        coupling_inverse(a, b)


def test_in_place_couplings_update_the_first_operand():
    x, f = torch.arange(6.0), torch.full((6,), 0.5)
    assert coupling_forward_(x, f, backend="torch") is x
    torch.testing.assert_close(x, torch.arange(6.0) + 0.5, rtol=0, atol=0)
    assert coupling_inverse_(x, f) is x
    torch.testing.assert_close(x, torch.arange(6.0), rtol=0, atol=0)


def test_in_place_coupling_refuses_tensors_autograd_needs():
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(InputError, match="torch.no_grad"):
        coupling_inverse_(x, torch.ones(3))
    with torch.no_grad():
        assert torch.equal(coupling_inverse_(x, torch.ones(3)), -torch.ones(3))
