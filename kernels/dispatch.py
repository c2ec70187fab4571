"""Backend choice for the fast ops: ``"auto"``, ``"cupy"`` or ``"torch"``.

Every op in :mod:`medseg.kernels` takes ``backend=`` and calls :func:`resolve_backend`. ``"torch"`` is the
plain-PyTorch reference (``op_ref``), which is also the CPU implementation; ``"cupy"`` runs the CUDA
kernels in the ``.cu`` files beside this module. CuPy is imported lazily, only when a CUDA tensor asks for
it, so importing :mod:`medseg.kernels` never needs CuPy or a GPU.
"""

from __future__ import annotations

from types import ModuleType

import torch

from medseg.errors import InputError, MissingDependencyError, unknown_choice
from medseg.optional import require

BACKENDS = ("auto", "cupy", "torch")


def import_cupy() -> ModuleType:
    """Import CuPy or raise :class:`MissingDependencyError` with an install hint.

    Tests monkeypatch this function to simulate a machine without CuPy.

    Returns:
        The ``cupy`` module.
    """
    return require("cupy", "the 'cupy' kernel backend")


def resolve_backend(backend: str, *tensors: torch.Tensor | None) -> str:
    """Turn a requested backend into the one that will run.

    Args:
        backend: ``"auto"``, ``"cupy"`` or ``"torch"``. ``"auto"`` picks ``"cupy"`` when every tensor is
            on a CUDA device and CuPy imports, else ``"torch"``.
        *tensors: the op's tensor arguments; ``None`` entries (absent optional inputs) are ignored.

    Returns:
        ``"cupy"`` or ``"torch"``.

    Raises:
        ConfigError: ``backend`` is not one of :data:`BACKENDS`.
        InputError: ``"cupy"`` was asked for with tensors that are not all on one CUDA device.
        MissingDependencyError: ``"cupy"`` was asked for and CuPy cannot be imported.
    """
    if backend not in BACKENDS:
        raise unknown_choice("kernel backend", backend, BACKENDS)
    present = [t for t in tensors if t is not None]
    on_cuda = bool(present) and all(t.is_cuda for t in present)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        if not on_cuda:
            return "torch"
        try:
            import_cupy()
        except MissingDependencyError:
            return "torch"
        return "cupy"
    # backend == "cupy": explicit request, so every problem is an error rather than a silent fallback.
    import_cupy()
    if not on_cuda:
        devices = sorted({str(t.device) for t in present}) or ["no tensors"]
        raise InputError(
            f"the 'cupy' kernel backend needs every tensor on a CUDA device, got {', '.join(devices)}; "
            "move the tensors to the GPU or use backend='torch' (or 'auto')"
        )
    if len({t.device for t in present}) > 1:
        devices = sorted({str(t.device) for t in present})
        raise InputError(f"the 'cupy' kernel backend needs all tensors on one device, got {', '.join(devices)}")
    return "cupy"
