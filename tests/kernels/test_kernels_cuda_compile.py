"""Every .cu source compiles with nvcc for sm_80 and sm_90 (skipped where nvcc is not installed).

The compiled text is exactly what CuPy hands to NVRTC (:func:`medseg.kernels.cupy_runtime.kernel_source`,
headers inlined), followed by an array of the addresses of the template instantiations, which makes nvcc
compile them (a template that is never instantiated is not checked). Depthwise convolution compiles
a representative subset to keep the suite fast: every kernel at K = 3 and 7 with both strides in float32
(K = 7 is the largest shared-memory tile), and every kernel with float16 and bfloat16 storage.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from medseg.kernels import coupling_cuda, cupy_runtime, depthwise_conv3d_cuda, selective_scan_cuda

NVCC = shutil.which("nvcc")
ARCHS = ("sm_80", "sm_90")

FLOAT = torch.float32
DEPTHWISE_SUBSET = [
    *(e for k, s in ((3, 1), (3, 2), (7, 1), (7, 2)) for e in depthwise_conv3d_cuda.name_expressions(FLOAT, k, s)),
    *(e for dtype in (torch.float16, torch.bfloat16) for e in depthwise_conv3d_cuda.name_expressions(dtype, 3, 2)),
]
SOURCES = {
    "depthwise_conv3d.cu": DEPTHWISE_SUBSET,
    "coupling.cu": coupling_cuda.all_name_expressions(),
    "selective_scan.cu": selective_scan_cuda.all_name_expressions(),
}


def test_every_cu_file_is_covered():
    on_disk = {p.name for p in cupy_runtime.KERNEL_DIR.glob("*.cu")}
    assert on_disk == set(SOURCES)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_cu_source_compiles(source, arch, tmp_path):
    wrapper = tmp_path / "instantiate.cu"
    addresses = ", ".join(f"(void*)&{e}" for e in SOURCES[source])
    code = cupy_runtime.kernel_source(source)
    wrapper.write_text(f"{code}\nvoid* medseg_instantiations[] = {{{addresses}}};\n")
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-cubin", "-o", str(tmp_path / "out.cubin"), str(wrapper)]
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.cubin").stat().st_size > 0
