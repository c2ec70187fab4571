"""Depthwise 3D convolution: the reference against an explicit sum, its layouts, gradients and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import InputError
from medseg.kernels import depthwise_conv3d, depthwise_conv3d_ref


def explicit_depthwise(x, weight, bias, stride):
    """Naive depthwise convolution: a sum of shifted, strided slices times one filter tap each."""
    k = weight.shape[-1]
    p = k // 2
    xp = F.pad(x, (p, p, p, p, p, p))
    out_sizes = [(s - 1) // stride + 1 for s in x.shape[2:]]
    out = torch.zeros(x.shape[0], x.shape[1], *out_sizes, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            for m in range(k):
                window = xp[
                    :,
                    :,
                    i : i + stride * out_sizes[0] : stride,
                    j : j + stride * out_sizes[1] : stride,
                    m : m + stride * out_sizes[2] : stride,
                ]
                out += window * weight[:, 0, i, j, m].view(1, -1, 1, 1, 1)
    if bias is not None:
        out += bias.view(1, -1, 1, 1, 1)
    return out


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_reference_matches_explicit_sum(k, stride):
    g = torch.Generator().manual_seed(k * 10 + stride)
    x = torch.randn(2, 3, 7, 6, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, 1, k, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    y = depthwise_conv3d_ref(x, w, b, stride)
    assert y.shape == (2, 3, *[(s - 1) // stride + 1 for s in (7, 6, 5)])
    torch.testing.assert_close(y, explicit_depthwise(x, w, b, stride), rtol=1e-12, atol=1e-12)


def test_torch_backend_is_the_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 5, 5, generator=g)
    w = torch.randn(4, 1, 3, 3, 3, generator=g)
    torch.testing.assert_close(depthwise_conv3d(x, w, backend="torch"), depthwise_conv3d_ref(x, w))
    torch.testing.assert_close(depthwise_conv3d(x, w, backend="auto"), explicit_depthwise(x, w, None, 1))


def test_output_keeps_the_input_layout():
    x = torch.randn(1, 4, 5, 6, 7)
    w = torch.randn(4, 1, 3, 3, 3)
    assert depthwise_conv3d_ref(x, w).is_contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    y_cl = depthwise_conv3d_ref(x_cl, w)
    assert y_cl.is_contiguous(memory_format=torch.channels_last_3d) and not y_cl.is_contiguous()
    torch.testing.assert_close(y_cl, depthwise_conv3d_ref(x, w))


@pytest.mark.parametrize("stride", [1, 2])
def test_reference_gradients_pass_gradcheck(stride):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: depthwise_conv3d(*a, stride=stride, backend="torch"), (x, w, b))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "message"),
    [
        ((2, 3, 4, 4), (3, 1, 3, 3, 3), 1, r"\(B, C, D, H, W\)"),
        ((1, 3, 4, 4, 4), (4, 1, 3, 3, 3), 1, "C = 3"),
        ((1, 3, 4, 4, 4), (3, 1, 4, 4, 4), 1, r"size in \(3, 5, 7\)"),
        ((1, 3, 4, 4, 4), (3, 1, 3, 3, 5), 1, "cubic"),
        ((1, 3, 4, 4, 4), (3, 1, 3, 3, 3), 3, r"stride must be one of \(1, 2\)"),
    ],
)
def test_unsupported_arguments_are_rejected(x_shape, w_shape, stride, message):
    with pytest.raises(InputError, match=message):
        depthwise_conv3d(torch.zeros(x_shape), torch.zeros(w_shape), stride=stride)


def test_wrong_bias_shape_is_rejected():
    with pytest.raises(InputError, match="bias must be"):
        depthwise_conv3d(torch.zeros(1, 3, 4, 4, 4), torch.zeros(3, 1, 3, 3, 3), torch.zeros(2))
