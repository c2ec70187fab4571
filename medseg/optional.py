"""Optional dependencies, imported at use with an install hint instead of at import time."""

from __future__ import annotations

import importlib
from types import ModuleType

from medseg.errors import MissingDependencyError

_HINTS = {
    "cupy": "install a CuPy build for your CUDA version, e.g. `pip install cupy-cuda13x` (or medseg[cuda])",
    "nnunetv2": "run `make install`, or `pip install medseg[nnunet]` then "
    "`pip install --no-deps -r requirements/nnunet-nodeps.txt` (see docs/index.md)",
    "dynamic_network_architectures": "see the hint for nnunetv2",
    "onnx": "`pip install onnx onnxruntime`",
    "onnxruntime": "`pip install onnxruntime`",
    "matplotlib": "`pip install matplotlib`",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an error that names the feature and how to install it.

    Args:
        module: the importable module name, e.g. ``"cupy"``.
        feature: what the user asked for that needs it, for the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: if the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _HINTS.get(top, f"`pip install {top}`")
        raise MissingDependencyError(f"{feature} needs the optional package {top!r} ({exc}); {hint}") from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported (any import failure counts as unavailable)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install of an optional package means "not available"
        return False
    return True
