"""Fast ops with plain-PyTorch twins: depthwise 3D convolution, additive coupling, selective scan.

Each op ``name`` has a reference ``name_ref`` in plain PyTorch (also the CPU implementation) and takes
``backend="auto" | "cupy" | "torch"``; ``"auto"`` runs the CuPy CUDA kernels (``.cu`` files beside these
modules) when every tensor is on a GPU and CuPy is installed. Importing this package needs neither.
"""

from medseg.kernels.coupling import (
    coupling_forward,
    coupling_forward_,
    coupling_forward_ref,
    coupling_inverse,
    coupling_inverse_,
    coupling_inverse_ref,
)
from medseg.kernels.depthwise_conv3d import depthwise_conv3d, depthwise_conv3d_ref
from medseg.kernels.dispatch import BACKENDS, resolve_backend
from medseg.kernels.selective_scan import selective_scan, selective_scan_loop_ref, selective_scan_ref

__all__ = [
    "BACKENDS",
    "coupling_forward",
    "coupling_forward_",
    "coupling_forward_ref",
    "coupling_inverse",
    "coupling_inverse_",
    "coupling_inverse_ref",
    "depthwise_conv3d",
    "depthwise_conv3d_ref",
    "resolve_backend",
    "selective_scan",
    "selective_scan_loop_ref",
    "selective_scan_ref",
]
