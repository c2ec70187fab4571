"""Sliding-window prediction of one preprocessed volume: Gaussian blending, mirroring TTA, 2D-on-3D.

The network sees windows of its training patch size, laid out and blended as MONAI's
``sliding_window_inference`` does (:mod:`medseg.pipelines.sliding_window`). The windows' logits are
blended, then turned into probabilities once (as nnU-Net does). A 2D network segments a 3D volume slice
by slice along the last axis (axial for RAS volumes), windows of several slices per batch.

The defaults are the fastest settings on a CPU that keep the masks of full-precision MONAI inference
(measured in docs/benchmarks.md, "Inference (CPU and GPU)"): the network runs under bfloat16 autocast on a CPU
with bfloat16 instructions (AVX512-BF16 or AMX; float32 on other CPUs, where oneDNN would emulate bfloat16
slowly), under float16 autocast (AMP, as nnU-Net) on a CUDA GPU, and the blended logits are summed in float16.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from medseg.errors import ConfigError, unknown_choice
from medseg.pipelines.sliding_window import BLEND_MODES, BUFFER_DTYPES, sliding_window_predict

#: Network arithmetic: ``"auto"`` (bfloat16 autocast on a CPU with bfloat16 instructions, float16 autocast
#: on a CUDA GPU, float32 elsewhere) or a fixed dtype.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class InferenceOptions:
    """How windows are tiled, computed and combined.

    Attributes:
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        batch_size: windows (or 2D slices' windows) per forward pass.
        tta: average over mirrored copies of each window along every spatial axis (8 passes in 3D).
        blend: ``"gaussian"`` (nnU-Net and MONAI's default for segmentation) or ``"constant"``.
        precision: network arithmetic, one of :data:`PRECISIONS`: ``"auto"`` runs bfloat16 autocast on a
            CPU with bfloat16 instructions (:func:`cpu_has_native_bfloat16`; 2-4x faster than float32 there,
            same masks), float16 autocast (AMP) on a CUDA GPU and float32 elsewhere; ``"float32"`` is exact;
            ``"bfloat16"``/``"float16"`` force autocast.
        buffer: dtype of the sum of blended logits, ``"float16"`` (nnU-Net's choice, half the memory) or
            ``"float32"``.
    """

    overlap: float = 0.5
    batch_size: int = 1
    tta: bool = False
    blend: str = "gaussian"
    precision: str = "auto"
    buffer: str = "float16"

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.blend not in BLEND_MODES:
            raise unknown_choice("blend mode", self.blend, BLEND_MODES)
        if self.precision not in PRECISIONS:
            raise unknown_choice("inference precision", self.precision, PRECISIONS)
        if self.buffer not in BUFFER_DTYPES:
            raise unknown_choice("aggregation buffer dtype", self.buffer, BUFFER_DTYPES)


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Turn logits ``(B, C, *spatial)`` into probabilities with ``"sigmoid"`` or ``"softmax"`` over C."""
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    raise unknown_choice("output activation", activation, ("sigmoid", "softmax"))


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles), so bfloat16 autocast pays off.

    Without these instructions oneDNN converts bfloat16 to float32 around every product, which is slower
    than float32 (the reason nnU-Net leaves autocast off on CPUs). Unknown (older torch): ``False``.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and bool(check()):
                return True
        except RuntimeError:
            continue
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or ``None`` for plain float32.

    Args:
        precision: one of :data:`PRECISIONS`.
        device: where the network runs.

    Returns:
        ``torch.bfloat16`` / ``torch.float16`` or ``None``.

    Raises:
        ConfigError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise unknown_choice("inference precision", precision, PRECISIONS)
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16  # AMP, as nnU-Net predicts on GPUs
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bfloat16() else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def window_logits(
    model: nn.Module, device: torch.device, precision: str = "auto", tta: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function that turns a batch of windows into float32 logits.

    Args:
        model: a network taking ``(N, C_in, *W)`` and returning logits ``(N, C_out, *W)`` (or a list whose
            first item they are, as deep supervision in training mode returns).
        device: where the network runs (chooses the autocast device type).
        precision: one of :data:`PRECISIONS`.
        tta: average the logits of the window mirrored along every subset of its spatial axes.

    Returns:
        ``forward(windows (N, C_in, *W)) -> logits (N, C_out, *W)`` in float32.
    """
    dtype = autocast_dtype(precision, device)

    def once(windows: torch.Tensor) -> torch.Tensor:
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with context:
            out = model(windows)
        if isinstance(out, (list, tuple)):  # deep supervision in a model left in training mode
            out = out[0]
        return out.float()

    if not tta:
        return once

    def mirrored(windows: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(2, windows.ndim))
        flips = [combo for r in range(1, len(axes) + 1) for combo in itertools.combinations(axes, r)]
        total = once(windows)
        for flip in flips:
            total += torch.flip(once(torch.flip(windows, flip)), flip)
        return total / (len(flips) + 1)

    return mirrored


@torch.inference_mode()
def predict_logits(
    model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], options: InferenceOptions | None = None
) -> torch.Tensor:
    """Blended logits for one preprocessed volume.

    Args:
        model: a network in eval mode taking ``(B, C_in, *window)`` and returning logits ``(B, C_out, *window)``.
        image: the preprocessed input ``(C_in, *spatial)`` on the model's device; 3D spatial for 3D and 2D
            networks (a 2D network runs slice by slice along the last axis), or 2D for a 2D network.
        roi_size: the window, one size per network spatial axis (the training patch).
        options: tiling, precision and TTA options.

    Returns:
        Logits ``(C_out, *spatial)``, float32, on the image's device.

    Raises:
        ConfigError: if the window's rank fits neither the image nor its slices.
    """
    options = options or InferenceOptions()
    # A MONAI MetaTensor would run every network op through its metadata bookkeeping: use the plain tensor.
    image = image.as_subclass(torch.Tensor)
    forward = window_logits(model, image.device, options.precision, options.tta)
    buffer = BUFFER_DTYPES[options.buffer]
    window_rank = len(roi_size)
    spatial_rank = image.ndim - 1
    if window_rank == spatial_rank:
        return sliding_window_predict(
            image[None], forward, roi_size, options.overlap, options.blend, options.batch_size, buffer
        )[0]
    if window_rank == 2 and spatial_rank == 3:
        slices = image.permute(3, 0, 1, 2)  # (k, C, i, j): axial slices as a batch
        logits = sliding_window_predict(
            slices, forward, roi_size, options.overlap, options.blend, options.batch_size, buffer
        )
        return logits.permute(1, 2, 3, 0)
    raise ConfigError(
        f"a {window_rank}D window {tuple(roi_size)} cannot segment a {spatial_rank}D image {tuple(image.shape)}"
    )


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    activation: str,
    options: InferenceOptions | None = None,
) -> torch.Tensor:
    """Predict class or region probabilities for one preprocessed volume.

    Args:
        model: a network in eval mode taking ``(B, C_in, *window)`` and returning logits ``(B, C_out, *window)``.
        image: the preprocessed input ``(C_in, *spatial)`` on the model's device; 3D spatial for 3D and 2D
            networks (a 2D network runs slice by slice along the last axis), or 2D for a 2D network.
        roi_size: the window, one size per network spatial axis (the training patch).
        activation: ``"sigmoid"`` or ``"softmax"``.
        options: tiling, precision and TTA options.

    Returns:
        Probabilities ``(C_out, *spatial)``, float32, on the image's device.

    Raises:
        ConfigError: if the window's rank fits neither the image nor its slices, or the activation is unknown.
    """
    if activation not in ("sigmoid", "softmax"):
        raise unknown_choice("output activation", activation, ("sigmoid", "softmax"))
    logits = predict_logits(model, image, roi_size, options)
    if activation == "sigmoid":
        return logits.sigmoid_()
    return torch.softmax(logits, dim=0)
