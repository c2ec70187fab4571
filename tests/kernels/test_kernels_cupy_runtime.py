"""Helpers of the CuPy runtime that need no GPU: sources, argument packing, checks, output buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.kernels import cupy_runtime as rt


@pytest.mark.parametrize("source", ["depthwise_conv3d.cu", "coupling.cu", "selective_scan.cu"])
def test_kernel_source_is_self_contained(source):
    text = rt.kernel_source(source)
    assert '#include "' not in text and "#pragma once" not in text
    assert "struct bf16" in text  # from common.cuh


def test_arguments_are_packed_as_fixed_width_scalars():
    t = torch.zeros(3)
    assert rt.ptr(t) == np.uint64(t.data_ptr()) and isinstance(rt.ptr(t), np.uint64)
    assert rt.ptr(None) == 0
    assert isinstance(rt.i32(7), np.int32) and isinstance(rt.i64(2**40), np.int64)
    assert isinstance(rt.f32(-1.0), np.float32)
    with pytest.raises(InputError, match="32-bit"):
        rt.i32(2**31)


def test_poisoned_outputs_are_nan():
    like = torch.zeros(1, dtype=torch.float16)
    out = rt.new_output((2, 3), like, torch.float32, poison=True)
    assert out.dtype == torch.float32 and torch.isnan(out).all()
    assert rt.new_output((4,), like).dtype == torch.float16


def test_tensor_checks_name_the_problem():
    ok = torch.zeros(2, 3)
    with pytest.raises(InputError, match="x is on cpu"):
        rt.check_cuda_tensors("op", {"x": ok}, rt.KERNEL_TYPES)
    with pytest.raises(InputError, match="float64; supported"):
        rt.check_cuda_tensors("op", {"x": ok.double()}, rt.KERNEL_TYPES, require_cuda=False)
    with pytest.raises(InputError, match="x must be contiguous"):
        rt.check_cuda_tensors("op", {"x": ok.t()}, rt.KERNEL_TYPES, require_cuda=False)
    rt.check_cuda_tensors("op", {"x": ok, "absent": None}, rt.KERNEL_TYPES, require_cuda=False)
