"""Sliding-window logits with nnU-Net's window placement and Gaussian weights.

nnU-Net tiles a volume with windows of its patch size, ``ceil((size - patch) / (step * patch)) + 1`` per
axis spread evenly from one border to the other, weights each window's logits with a Gaussian centred on
voxel ``patch // 2`` (sigma = patch / 8, truncated at 4 sigma) and divides by the summed weights; softmax or
sigmoid comes after. medseg's general predictor (MONAI's tiler: fixed stride, last window clamped,
Gaussian centred between voxels, activation per window) differs in these details; with a network whose
windows disagree, they change a few percent of the labels, so nnU-Net models are run with nnU-Net's
tiling, written here in plain PyTorch. Logits are accumulated in float32 (nnU-Net uses float16).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medseg.errors import ConfigError


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices of the windows along one axis.

    Args:
        size: the axis length (at least ``patch``).
        patch: the window length.
        step: the distance between windows as a fraction of ``patch`` (nnU-Net's ``tile_step_size``), in (0, 1].

    Returns:
        Evenly spread starts from ``0`` to ``size - patch`` inclusive.
    """
    if size <= patch:
        return [0]
    count = math.ceil((size - patch) / (patch * step)) + 1
    spacing = (size - patch) / (count - 1)
    return [int(round(spacing * i)) for i in range(count)]


def gaussian_weights(patch: Sequence[int], sigma_fraction: float = 0.125) -> torch.Tensor:
    """nnU-Net's window weights: a separable Gaussian centred on ``patch // 2``, sigma ``patch * sigma_fraction``.

    Args:
        patch: the window shape.
        sigma_fraction: sigma as a fraction of the window length.

    Returns:
        float32 ``(*patch)`` weights with maximum 1, strictly positive.
    """
    from scipy.ndimage import gaussian_filter1d

    weights = np.ones((), dtype=np.float64)
    for length in patch:
        delta = np.zeros(length)
        delta[length // 2] = 1.0
        profile = gaussian_filter1d(delta, length * sigma_fraction, mode="constant", cval=0.0)
        weights = np.multiply.outer(weights, profile)
    weights /= weights.max()
    positive = weights[weights > 0]
    weights[weights <= 0] = positive.min()
    return torch.from_numpy(weights.astype(np.float32))


@torch.inference_mode()
def sliding_window_logits(
    network: nn.Module,
    images: torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Blend a network's logits over nnU-Net's windows.

    Args:
        network: maps ``(B, C, *patch)`` to logits ``(B, H, *patch)``.
        images: ``(N, C, *S)`` with ``len(S) == len(patch)`` (N slices for a 2D network, 1 volume for 3D).
        patch: the window shape.
        overlap: 1 - nnU-Net's step size, in [0, 1) (0.5: windows overlap by half).
        batch_size: windows per forward pass.
        blend: ``"gaussian"`` (nnU-Net) or ``"constant"`` (plain average).

    Returns:
        float32 logits ``(N, H, *S)`` on ``images``' device.

    Raises:
        ConfigError: a patch whose rank differs from the images', or an overlap outside [0, 1).
    """
    patch = tuple(int(p) for p in patch)
    if images.ndim != len(patch) + 2:
        raise ConfigError(f"a {len(patch)}D window {patch} cannot tile images of shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    spatial = tuple(images.shape[2:])
    padded_shape = tuple(max(s, p) for s, p in zip(spatial, patch))
    # Images smaller than the window are padded with zeros, evenly on both sides, as nnU-Net does.
    below = [(ps - s) // 2 for ps, s in zip(padded_shape, spatial)]
    if padded_shape != spatial:
        pad = []
        for b, ps, s in reversed(list(zip(below, padded_shape, spatial))):
            pad += [b, ps - s - b]
        images = torch.nn.functional.pad(images, pad)
    device = images.device
    weights = gaussian_weights(patch).to(device) if blend == "gaussian" else torch.ones(patch, device=device)
    starts = [window_starts(size, p, 1.0 - overlap) for size, p in zip(padded_shape, patch)]
    windows = [
        (n, tuple(slice(s, s + p) for s, p in zip(corner, patch)))
        for n in range(images.shape[0])
        for corner in itertools.product(*starts)
    ]
    logits: torch.Tensor | None = None
    counts = torch.zeros(padded_shape, dtype=torch.float32, device=device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = torch.stack([images[(n, slice(None), *box)] for n, box in chunk])
        out = network(batch).float()
        if logits is None:
            logits = torch.zeros((images.shape[0], out.shape[1], *padded_shape), dtype=torch.float32, device=device)
        for (n, box), window_logits in zip(chunk, out):
            logits[(n, slice(None), *box)] += window_logits * weights
            if n == 0:
                counts[box] += weights
    assert logits is not None  # at least one window
    logits /= counts
    crop = tuple(slice(b, b + s) for b, s in zip(below, spatial))
    return logits[(slice(None), slice(None), *crop)].contiguous()
