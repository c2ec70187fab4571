"""``medseg export``: a trained model folder as ONNX or TorchScript, checked against PyTorch before it is written.

The export traces the network in eval mode on one window ``(1, in_channels, *patch_size)`` of seeded random
input. ONNX is first exported with dynamic batch and spatial axes; when onnxruntime's output on a second,
larger input (batch 2, each spatial size plus the network's divisor) does not match PyTorch's, the export
falls back to the fixed window shape. A TorchScript trace is probed the same way and reported as dynamic
or not (a trace cannot be re-made dynamic). The file is written (atomically) only when the runtime's output on
the window matches PyTorch's within ``tolerance * max(1, max |reference|)``.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.config import ModelConfig
from medseg.errors import InputError, unknown_choice
from medseg.io.atomic import atomic_write_bytes
from medseg.optional import require
from medseg.pipelines.model_folder import CONFIG_NAME, load_model_folder

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 17


@dataclass
class ExportResult:
    """The outcome of :func:`export_model`.

    Attributes:
        format: ``"onnx"`` or ``"torchscript"``.
        path: where the export was written (``None`` when it did not match and was not written).
        input_shape: the window the check used, ``(1, in_channels, *patch_size)``.
        max_abs_diff: largest absolute difference between the runtime's and PyTorch's logits on that window.
        allowed_diff: the largest difference accepted.
        dynamic_shapes: whether the export accepts other batch and spatial sizes (checked on a second shape).
        matches: ``max_abs_diff <= allowed_diff``.
    """

    format: str
    path: Path | None
    input_shape: tuple[int, ...]
    max_abs_diff: float
    allowed_diff: float
    dynamic_shapes: bool
    matches: bool


def find_model_folder(path: str | os.PathLike) -> Path:
    """The model folder of a run folder (``RUN_DIR/model``) or the folder itself if it is one.

    Args:
        path: a run folder or a model folder.

    Raises:
        InputError: neither holds a ``config.json``.
    """
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise InputError(f"{path} is neither a run folder with a model/ folder nor a model folder (no {CONFIG_NAME})")


def export_model(
    source: str | os.PathLike,
    fmt: str,
    output: str | os.PathLike | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export a model folder and check the export against PyTorch on one window.

    Args:
        source: a run folder (its ``model/`` is exported) or a model folder.
        fmt: ``"onnx"`` or ``"torchscript"``.
        output: the file to write; default ``<source>/model.onnx`` or ``<source>/model.torchscript.pt``.
        tolerance: relative tolerance; the export matches when the largest absolute difference is at most
            ``tolerance * max(1, max |PyTorch logits|)``.

    Returns:
        An :class:`ExportResult`; the file is written only when ``matches`` is true.

    Raises:
        ConfigError: unknown format.
        InputError: the model folder cannot be loaded.
        MissingDependencyError: ``onnx`` or ``onnxruntime`` missing for an ONNX export.
    """
    if fmt not in EXPORT_FORMATS:
        raise unknown_choice("export format", fmt, EXPORT_FORMATS)
    folder = find_model_folder(source)
    model, model_config = load_model_folder(folder, device="cpu")
    window = example_input(model_config)
    with torch.no_grad():
        reference = model(window).float().numpy()
    if fmt == "onnx":
        data, run, dynamic = _onnx_export(model, model_config, window)
    else:
        data, run, dynamic = _torchscript_export(model, model_config, window)
    produced = run(window.numpy())
    max_diff = float(np.max(np.abs(produced - reference))) if produced.shape == reference.shape else float("inf")
    allowed = float(tolerance) * max(1.0, float(np.max(np.abs(reference))))
    matches = max_diff <= allowed
    path = Path(output) if output is not None else Path(source) / f"model{DEFAULT_SUFFIX[fmt]}"
    if matches:
        atomic_write_bytes(path, data)
    return ExportResult(
        format=fmt,
        path=path if matches else None,
        input_shape=tuple(window.shape),
        max_abs_diff=max_diff,
        allowed_diff=allowed,
        dynamic_shapes=dynamic,
        matches=matches,
    )


def example_input(model_config: ModelConfig, batch: int = 1, extra: tuple[int, ...] | None = None) -> torch.Tensor:
    """Seeded standard-normal input of one window ``(batch, in_channels, *patch_size)``.

    Args:
        model_config: gives the channels and the window (``patch_size``).
        batch: batch size.
        extra: added to each spatial size (to probe dynamic shapes).

    Raises:
        InputError: the model configuration has no patch size.
    """
    if not model_config.patch_size:
        raise InputError("the model configuration has no patch_size; cannot choose an export window")
    spatial = [int(s) + (extra[i] if extra else 0) for i, s in enumerate(model_config.patch_size)]
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, model_config.in_channels, *spatial, generator=generator)


def _onnx_export(
    model: nn.Module, model_config: ModelConfig, window: torch.Tensor
) -> tuple[bytes, Callable[[np.ndarray], np.ndarray], bool]:
    require("onnx", "ONNX export")
    ort = require("onnxruntime", "checking an ONNX export")
    spatial_names = ["depth", "height", "width"][-model_config.spatial_dims :]
    dynamic_axes = {
        "image": {0: "batch", **{i + 2: name for i, name in enumerate(spatial_names)}},
        "logits": {0: "batch", **{i + 2: name for i, name in enumerate(spatial_names)}},
    }
    divisor = tuple(getattr(model, "divisor", (1,) * model_config.spatial_dims))
    probe = example_input(model_config, batch=2, extra=divisor)
    data = _onnx_bytes(model, window, dynamic_axes)
    run = _onnx_runner(ort, data)
    if _probe_matches(model, run, probe):
        return data, run, True
    data = _onnx_bytes(model, window, None)
    return data, _onnx_runner(ort, data), False


def _onnx_bytes(model: nn.Module, window: torch.Tensor, dynamic_axes: dict | None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is used on purpose (the dynamo exporter needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (window,),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _onnx_runner(ort: object, data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    run_options = ort.RunOptions()
    # A failing probe of another input shape is expected for non-dynamic graphs; keep the console quiet.
    run_options.log_severity_level = 4

    def run(array: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["logits"], {"image": array.astype(np.float32)}, run_options)[0])

    return run


def _probe_matches(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], probe: torch.Tensor) -> bool:
    with torch.no_grad():
        expected = model(probe).float().numpy()
    try:
        produced = run(probe.numpy())
    except Exception:  # noqa: BLE001 - any failure on another shape means "not dynamic"
        return False
    if produced.shape != expected.shape:
        return False
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(produced - expected))) <= 1e-3 * scale


def _torchscript_export(
    model: nn.Module, model_config: ModelConfig, window: torch.Tensor
) -> tuple[bytes, Callable[[np.ndarray], np.ndarray], bool]:
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream in favour of torch.export, but is what was asked for here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, (window,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        data = buffer.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    loaded.eval()

    def run(array: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(array)).float().numpy()

    # A traced graph may have fixed sizes that depended on the input shape: probe a second shape.
    divisor = tuple(getattr(model, "divisor", (1,) * model_config.spatial_dims))
    probe = example_input(model_config, batch=2, extra=divisor)
    return data, run, _probe_matches(model, run, probe)
