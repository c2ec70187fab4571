"""Sliding-window prediction of one preprocessed volume: Gaussian blending, mirroring TTA, 2D-on-3D.

The network sees windows of its training patch size; MONAI's ``sliding_window_inference`` tiles the
volume with the requested overlap and blends the windows with a Gaussian importance map. A 2D network
segments a 3D volume slice by slice along the last axis (axial for RAS volumes), several slices per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.errors import ConfigError, unknown_choice

BLEND_MODES = ("gaussian", "constant")


@dataclass(frozen=True)
class InferenceOptions:
    """How windows are tiled and combined.

    Attributes:
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        batch_size: windows (or 2D slices' windows) per forward pass.
        tta: average over mirrored copies of the input along every spatial axis (8 passes in 3D).
        blend: ``"gaussian"`` (nnU-Net and MONAI's default for segmentation) or ``"constant"``.
    """

    overlap: float = 0.5
    batch_size: int = 1
    tta: bool = False
    blend: str = "gaussian"

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.blend not in BLEND_MODES:
            raise unknown_choice("blend mode", self.blend, BLEND_MODES)


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Turn logits ``(B, C, *spatial)`` into probabilities with ``"sigmoid"`` or ``"softmax"`` over C."""
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    raise unknown_choice("output activation", activation, ("sigmoid", "softmax"))


def _windowed(
    model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], activation: str, options: InferenceOptions
) -> torch.Tensor:
    """Probabilities for a batch ``(B, C, *spatial)`` whose spatial rank equals the window's."""

    def forward(window: torch.Tensor) -> torch.Tensor:
        out = model(window)
        if isinstance(out, (list, tuple)):  # deep supervision in a model left in training mode
            out = out[0]
        return activate(out.float(), activation)

    return _mirrored(forward, image, roi_size, options)


def _mirrored(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int],
    options: InferenceOptions,
) -> torch.Tensor:
    spatial_axes = tuple(range(2, image.ndim))
    flips: list[tuple[int, ...]] = [()]
    if options.tta:
        flips = [combo for r in range(len(spatial_axes) + 1) for combo in itertools.combinations(spatial_axes, r)]
    total: torch.Tensor | None = None
    for axes in flips:
        source = torch.flip(image, axes) if axes else image
        probs = sliding_window_inference(
            source,
            roi_size=tuple(roi_size),
            sw_batch_size=options.batch_size,
            predictor=forward,
            overlap=options.overlap,
            mode=options.blend,
        )
        probs = torch.flip(probs, axes) if axes else probs
        total = probs if total is None else total + probs
    assert total is not None  # at least the unflipped pass ran
    return total / len(flips)


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
        options: tiling and TTA options.

    Returns:
        Probabilities ``(C_out, *spatial)``, float32, on the image's device.

    Raises:
        ConfigError: if the window's rank fits neither the image nor its slices.
    """
    options = options or InferenceOptions()
    window_rank = len(roi_size)
    spatial_rank = image.ndim - 1
    if window_rank == spatial_rank:
        return _windowed(model, image[None], roi_size, activation, options)[0]
    if window_rank == 2 and spatial_rank == 3:
        slices = image.permute(3, 0, 1, 2)  # (k, C, i, j): axial slices as a batch
        outputs = []
        step = max(options.batch_size, 1)
        for start in range(0, slices.shape[0], step):
            outputs.append(_windowed(model, slices[start : start + step], roi_size, activation, options))
        return torch.cat(outputs, dim=0).permute(1, 2, 3, 0)
    raise ConfigError(f"a {window_rank}D window {tuple(roi_size)} cannot segment a {spatial_rank}D image {tuple(image.shape)}")
