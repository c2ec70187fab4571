"""Sliding-window prediction of a volume by a fully convolutional network, lean in time and memory.

The window layout and the Gaussian weights are MONAI's (``monai.inferers.sliding_window_inference``): along
each axis windows start every ``int(window * (1 - overlap))`` voxels and the last one is moved back to end
at the border; an input smaller than the window is zero-padded (``diff // 2`` voxels before); each window's
output is weighted by a separable Gaussian with sigma ``window / 8`` (its maximum 1, clamped from below
at 1e-3) and the weighted sum is divided by the summed weights. With ``buffer_dtype=torch.float32`` the
result equals MONAI's to float rounding (tests/pipelines/test_sliding_window.py checks it).

What differs is the bookkeeping: the summed weights are one spatial map (not one per output channel), the
weighted outputs can be accumulated in float16 (as nnU-Net does: half the memory of the largest buffer),
windows are cut from the input only when their batch runs, and nothing is kept for autograd.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from medseg.errors import ConfigError, unknown_choice

BLEND_MODES = ("gaussian", "constant")
BUFFER_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
#: Smallest weight a Gaussian window gives a voxel, relative to its centre (MONAI's clamp).
MIN_WEIGHT = 1e-3


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis (MONAI's layout).

    Args:
        size: the axis length, at least ``window`` (smaller inputs are padded first).
        window: the window length.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``.

    Returns:
        Starts ``0, step, 2 * step, ...`` with ``step = max(int(window * (1 - overlap)), 1)``, the last one
        moved back to ``size - window``; ``[0]`` when the window spans the axis.
    """
    if window >= size:
        return [0]
    step = max(int(window * (1.0 - overlap)), 1)
    starts = []
    position = 0
    while True:
        start = min(position, size - window)
        starts.append(start)
        if start + window >= size:
            return starts
        position += step


def tile_boxes(shape: Sequence[int], window: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows tiling a (padded) spatial shape, as tuples of slices, in C order of their corners.

    Args:
        shape: spatial shape ``(*S)``, each size at least the window's.
        window: the window shape, one size per axis.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``.

    Returns:
        One ``(slice, ...)`` per window.
    """
    per_axis = [window_starts(int(s), int(w), overlap) for s, w in zip(shape, window)]
    return [tuple(slice(s, s + int(w)) for s, w in zip(corner, window)) for corner in itertools.product(*per_axis)]


def importance_map(window: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """Weights of one window's voxels when windows are blended.

    Args:
        window: the window shape ``(*W)``.
        blend: ``"gaussian"`` (separable, centred between the middle voxels, sigma ``sigma_scale * W``) or
            ``"constant"`` (all ones).
        sigma_scale: sigma as a fraction of the window length (Gaussian only).

    Returns:
        float32 ``(*W)`` weights with maximum 1; Gaussian weights are clamped from below at
        :data:`MIN_WEIGHT` (or at their minimum when it is larger).

    Raises:
        ConfigError: an unknown blend mode.
    """
    if blend not in BLEND_MODES:
        raise unknown_choice("blend mode", blend, BLEND_MODES)
    window = tuple(int(w) for w in window)
    if blend == "constant":
        return torch.ones(window, dtype=torch.float32)
    weights = torch.ones((), dtype=torch.float32)
    for axis, length in enumerate(window):
        offsets = torch.arange(length, dtype=torch.float32) - (length - 1) / 2.0
        profile = torch.exp(offsets**2 / (-2.0 * (sigma_scale * length) ** 2))
        weights = weights.unsqueeze(-1) * profile.reshape((1,) * axis + (length,))
    return weights.clamp_(min=max(float(weights.min()), MIN_WEIGHT))


def _pad_to_window(image: torch.Tensor, window: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad ``(B, C, *S)`` so every spatial size reaches the window; return it and the crop that undoes it."""
    spatial = image.shape[2:]
    before = [max(w - s, 0) // 2 for s, w in zip(spatial, window)]
    after = [max(w - s, 0) - b for s, w, b in zip(spatial, window, before)]
    if not any(before) and not any(after):
        return image, tuple(slice(None) for _ in spatial)
    pad: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        pad += [b, a]
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return F.pad(image, pad), crop


@torch.inference_mode()
def sliding_window_predict(
    image: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    window: Sequence[int],
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 1,
    buffer_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Blend a network's window outputs over a whole input.

    Args:
        image: the input ``(B, C_in, *S)``; every spatial axis is tiled (B is looped over).
        forward: maps a batch of windows ``(N, C_in, *W)`` to outputs ``(N, C_out, *W)`` (e.g. logits).
        window: the window shape ``(*W)``, one size per spatial axis of ``image``.
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        blend: ``"gaussian"`` or ``"constant"`` weighting of the windows.
        batch_size: windows per call of ``forward``.
        buffer_dtype: dtype of the running weighted sum, ``torch.float32`` or ``torch.float16`` (half the
            memory; the outputs of one voxel are then summed with float16 rounding, a relative error of
            about 1e-3 of the largest output).

    Returns:
        The blended outputs ``(B, C_out, *S)``, float32, on ``image``'s device.

    Raises:
        ConfigError: a window whose rank differs from the image's, a non-positive window size, an overlap
            outside ``[0, 1)``, a batch size below 1 or an unsupported buffer dtype.
    """
    window = tuple(int(w) for w in window)
    if image.ndim != len(window) + 2:
        raise ConfigError(f"a {len(window)}D window {window} cannot tile an input of shape {tuple(image.shape)}")
    if min(window) < 1:
        raise ConfigError(f"window sizes must be >= 1, got {window}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if buffer_dtype not in BUFFER_DTYPES.values():
        raise unknown_choice("aggregation buffer dtype", str(buffer_dtype).replace("torch.", ""), BUFFER_DTYPES)
    padded, crop = _pad_to_window(image, window)
    spatial = tuple(padded.shape[2:])
    boxes = tile_boxes(spatial, window, overlap)
    weights = importance_map(window, blend).to(image.device)
    weight_sum = torch.zeros(spatial, dtype=torch.float32, device=image.device)
    for box in boxes:
        weight_sum[box] += weights
    # Windows of all batch items are batched together (a 2D network's slices fill its batches).
    windows = [(item, box) for item in range(padded.shape[0]) for box in boxes]
    total: torch.Tensor | None = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        outputs = forward(torch.stack([padded[(item, slice(None), *box)] for item, box in chunk]))
        if total is None:
            total = torch.zeros((padded.shape[0], outputs.shape[1], *spatial), dtype=buffer_dtype, device=image.device)
        for out, (item, box) in zip(outputs, chunk):
            total[(item, slice(None), *box)] += (out.float() * weights).to(buffer_dtype)
    if total is None:  # unreachable: tile_boxes yields at least one window per item
        raise ConfigError(f"no window fits an input of shape {tuple(image.shape)}")
    return _normalise(total, weight_sum)[(slice(None), slice(None), *crop)]


def _normalise(total: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
    """``total / weight_sum`` as float32, one ``(item, channel)`` at a time (no float32 copy of all of ``total``)."""
    out = torch.empty(total.shape, dtype=torch.float32, device=total.device)
    for item in range(total.shape[0]):
        for channel in range(total.shape[1]):
            torch.div(total[item, channel].float(), weight_sum, out=out[item, channel])
    return out
