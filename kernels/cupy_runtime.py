"""Loading and launching the CuPy raw kernels in the ``.cu`` files beside this module.

Following CuPy's own examples: the source stays in its ``.cu`` file, :class:`cupy.RawModule` compiles the
template instantiations a call needs (``name_expressions``), once per device (cached here), and kernels
run on PyTorch's current CUDA stream. Tensors are passed as raw device pointers (no copies, and
bfloat16, which CuPy has no dtype for, works the same way); shapes are kernel arguments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.errors import InputError
from medseg.kernels.dispatch import import_cupy

KERNEL_DIR = Path(__file__).resolve().parent
NVRTC_OPTIONS = ("--std=c++17",)
_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+\.cuh)"[ \t]*$', flags=re.MULTILINE)

# Storage type names in the .cu files (see common.cuh) for each supported torch dtype.
KERNEL_TYPES = {torch.float32: "float", torch.float16: "f16", torch.bfloat16: "bf16"}


def kernel_source(source: str) -> str:
    """The text of ``source`` with its local ``#include "*.cuh"`` lines replaced by the headers' text.

    Inlining keeps CuPy's on-disk compile cache (keyed by the source text) from reusing a binary built
    against an older header.

    Args:
        source: file name of a ``.cu`` file in :data:`KERNEL_DIR`.

    Returns:
        Self-contained CUDA C++ source.
    """

    def header(match: re.Match) -> str:
        text = (KERNEL_DIR / match.group(1)).read_text()
        return "\n".join(line for line in text.splitlines() if line.strip() != "#pragma once")

    return _LOCAL_INCLUDE.sub(header, (KERNEL_DIR / source).read_text())


@functools.cache
def _module(device_index: int, source: str, name_expressions: tuple[str, ...]):
    cupy = import_cupy()
    code = kernel_source(source)
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=code, options=NVRTC_OPTIONS, name_expressions=name_expressions)
        module.compile()
    return module


def get_kernel(device: torch.device, source: str, name: str, name_expressions: Iterable[str] | None = None):
    """The compiled kernel ``name`` from ``source``, compiled once per device and instantiation set.

    Args:
        device: the CUDA device the kernel will run on.
        source: file name of the ``.cu`` source in :data:`KERNEL_DIR`.
        name: the kernel's name expression, e.g. ``"dw_forward<float,3,1>"``.
        name_expressions: every expression to compile together with ``name`` (defaults to ``name`` alone).

    Returns:
        A ``cupy.RawKernel``.
    """
    expressions = tuple(sorted(set(name_expressions or ()) | {name}))
    return _module(_device_index(device), source, expressions).get_function(name)


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _current_stream(cupy, index: int):
    """PyTorch's current stream on device ``index`` as a CuPy stream (a context manager)."""
    torch_stream = torch.cuda.current_stream(index)
    from_external = getattr(cupy.cuda.Stream, "from_external", None)  # CuPy >= 14: the CUDA stream protocol
    if from_external is not None:
        return from_external(torch_stream)
    return cupy.cuda.ExternalStream(torch_stream.cuda_stream, index)


def launch(
    kernel, device: torch.device, grid: Sequence[int], block: Sequence[int], args: Sequence, shared_mem: int = 0
) -> None:
    """Launch ``kernel`` on PyTorch's current stream of ``device``.

    Args:
        kernel: from :func:`get_kernel`.
        device: the CUDA device of the tensors.
        grid: blocks per grid axis, up to three entries.
        block: threads per block axis, up to three entries.
        args: kernel arguments, already converted with :func:`ptr`, :func:`i32`, :func:`i64`, :func:`f32`.
        shared_mem: bytes of dynamic shared memory.
    """
    cupy = import_cupy()
    index = _device_index(device)
    with cupy.cuda.Device(index), _current_stream(cupy, index):
        kernel(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


def ptr(t: torch.Tensor | None) -> np.uint64:
    """A tensor's device pointer as a kernel argument; ``None`` becomes a null pointer."""
    return np.uint64(0 if t is None else t.data_ptr())


def i32(v: int) -> np.int32:
    """An ``int`` kernel argument, refusing values that do not fit."""
    if not -(2**31) <= v < 2**31:
        raise InputError(f"size {v} does not fit the kernels' 32-bit index arguments")
    return np.int32(v)


def i64(v: int) -> np.int64:
    """A ``long long`` kernel argument."""
    return np.int64(v)


def f32(v: float) -> np.float32:
    """A ``float`` kernel argument."""
    return np.float32(v)


def new_output(
    shape: Sequence[int], like: torch.Tensor, dtype: torch.dtype | None = None, poison: bool = False
) -> torch.Tensor:
    """An output buffer the kernel must fill completely.

    Args:
        shape: the buffer's shape.
        like: a tensor on the target device.
        dtype: defaults to ``like.dtype``.
        poison: fill with NaN first (a test hook: an element the kernel never writes then shows up).

    Returns:
        The uninitialised (or NaN-filled) tensor.
    """
    dtype = dtype or like.dtype
    if poison:
        return torch.full(tuple(shape), float("nan"), dtype=dtype, device=like.device)
    return torch.empty(tuple(shape), dtype=dtype, device=like.device)


def check_cuda_tensors(
    op: str, tensors: dict[str, torch.Tensor | None], dtypes: Iterable[torch.dtype], require_cuda: bool = True
) -> None:
    """Check that the tensors a kernel reads are CUDA, on one device, of a supported dtype and contiguous.

    Args:
        op: the op's name, for the message.
        tensors: name to tensor; ``None`` entries are skipped.
        dtypes: the accepted dtypes.
        require_cuda: check the device type too (the host emulation used by the tests turns this off).

    Raises:
        InputError: naming the first tensor that breaks a rule and what is accepted.
    """
    allowed = tuple(dtypes)
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    for name, t in present.items():
        if require_cuda and not t.is_cuda:
            raise InputError(f"{op} (cupy backend): {name} is on {t.device}; the CUDA kernels need CUDA tensors")
        if t.dtype not in allowed:
            raise InputError(
                f"{op} (cupy backend): {name} has dtype {t.dtype}; supported: {', '.join(map(str, allowed))}"
            )
        if not t.is_contiguous():
            raise InputError(f"{op} (cupy backend): {name} must be contiguous (got strides {t.stride()})")
    if len(devices) > 1:
        raise InputError(f"{op} (cupy backend): tensors are on several devices: {sorted(map(str, devices))}")
