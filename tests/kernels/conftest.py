"""Fixtures for the kernel tests: the CuPy backend run through a host emulation of CUDA.

``emulated_cupy`` compiles the real ``.cu`` sources with g++ against ``cuda_host_emulation.h`` and
redirects :mod:`medseg.kernels.cupy_runtime`'s kernel lookup and launch to that library, so the CuPy
backend's Python wrappers and kernels run on CPU float32 tensors. It checks indexing, tiling, reductions
and the autograd wiring on every machine; it says nothing about speed or half-precision storage.
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medseg.kernels import coupling_cuda, cupy_runtime, depthwise_conv3d_cuda, selective_scan_cuda

HERE = Path(__file__).resolve().parent
CXX = shutil.which("g++")
_CTYPES = {np.uint64: ctypes.c_uint64, np.int64: ctypes.c_int64, np.int32: ctypes.c_int32, np.float32: ctypes.c_float}


def _float_expressions() -> list[str]:
    names = [
        *depthwise_conv3d_cuda.all_name_expressions(),
        *coupling_cuda.all_name_expressions(),
        *selective_scan_cuda.all_name_expressions(),
    ]
    return [n for n in names if "<" not in n or "<float" in n]


def _build(out_dir: Path) -> ctypes.CDLL:
    kernel_dir = cupy_runtime.KERNEL_DIR
    # Dynamic shared memory has no host equivalent of `extern __shared__`; point it at the emulator's buffer.
    scan = (kernel_dir / "selective_scan.cu").read_text()
    scan = re.sub(r"extern __shared__ float (\w+)\[\];", r"float* \1 = emu_dynamic_shared.data();", scan)
    (out_dir / "selective_scan_host.cu").write_text(scan)
    cases = "\n".join(
        f'    if (!std::strcmp(name, "{e}")) {{ emu_call(&{e}, params, g, b, shared); return 0; }}'
        for e in _float_expressions()
    )
    source = f"""
#include "cuda_host_emulation.h"
#include "depthwise_conv3d.cu"
#include "coupling.cu"
#include "selective_scan_host.cu"
extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned long shared, void** params) {{
    const dim3 g{{gx, gy, gz}}, b{{bx, by, bz}};
{cases}
    return 1;
}}
"""
    (out_dir / "emulation.cpp").write_text(source)
    lib = out_dir / "libkernel_emulation.so"
    cmd = [CXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-x", "c++", f"-I{HERE}", f"-I{kernel_dir}",
           f"-I{out_dir}", "-o", str(lib), str(out_dir / "emulation.cpp")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the kernel emulation failed:\n{done.stderr[-4000:]}")
    return ctypes.CDLL(str(lib))


@pytest.fixture(scope="session")
def emulation_library(tmp_path_factory):
    if CXX is None:
        pytest.skip("g++ is not installed")
    return _build(tmp_path_factory.mktemp("kernel_emulation"))


class _EmulatedKernel:
    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.lib, self.name = lib, name


def _emulated_launch(kernel, device, grid, block, args, shared_mem=0):
    values = [_CTYPES[type(a)](a.item()) for a in args]
    params = (ctypes.c_void_p * len(values))(*(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values))
    grid = (*grid, 1, 1)[:3]
    block = (*block, 1, 1)[:3]
    status = kernel.lib.emu_launch(
        kernel.name.encode(), *(ctypes.c_uint(v) for v in (*grid, *block)), ctypes.c_ulong(shared_mem), params
    )
    if status != 0:
        raise RuntimeError(f"kernel {kernel.name} is not in the emulation library")


@pytest.fixture
def emulated_cupy(monkeypatch, emulation_library):
    """Run the CuPy backend's wrappers on CPU tensors through the host emulation (float32 only)."""
    monkeypatch.setattr(
        cupy_runtime, "get_kernel", lambda device, source, name, exprs=None: _EmulatedKernel(emulation_library, name)
    )
    monkeypatch.setattr(cupy_runtime, "launch", _emulated_launch)
    monkeypatch.setattr(
        cupy_runtime, "check_cuda_tensors", functools.partial(cupy_runtime.check_cuda_tensors, require_cuda=False)
    )
    return emulation_library
