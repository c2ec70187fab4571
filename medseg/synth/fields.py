"""Smooth random fields: the source of irregular shapes, tissue texture and bias fields in the phantoms.

A field is white noise on a coarse grid of nodes, spread to every voxel with a separable Gaussian
kernel. The kernel is applied one axis at a time as a small matrix product, so a 240 x 240 x 155 field
costs a few matrix multiplications instead of a full-resolution convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _kernel_matrix(size: int, length: float) -> np.ndarray:
    """Weights from coarse nodes to the voxels of one axis, each row scaled to unit L2 norm.

    Args:
        size: number of voxels along the axis.
        length: correlation length in voxels (twice the Gaussian kernel's sigma).

    Returns:
        ``(size, nodes)`` float32 matrix; with unit-variance node noise every voxel gets unit variance.
    """
    sigma = max(float(length), 0.5) / 2.0
    step = sigma  # nodes one sigma apart are dense enough for a smooth field
    margin = 3.0 * sigma  # nodes beyond the border keep the field stationary up to the edges
    nodes = np.arange(-margin, size - 1 + margin + step, step)
    voxels = np.arange(size, dtype=np.float64)
    weights = np.exp(-0.5 * ((voxels[:, None] - nodes[None, :]) / sigma) ** 2)
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return weights.astype(np.float32)


def smooth_field(
    shape: Sequence[int],
    rng: np.random.Generator,
    length: float | Sequence[float],
) -> np.ndarray:
    """A stationary Gaussian random field with zero mean and unit variance at every voxel.

    Args:
        shape: the output shape ``(D, H, W)`` (any number of axes).
        rng: random generator; the field is a deterministic function of its state.
        length: correlation length in voxels, one number or one per axis (pass ``mm / spacing``
            for a physical length on an anisotropic grid). Larger is smoother.

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    lengths = np.broadcast_to(np.asarray(length, dtype=np.float64), (len(shape),))
    matrices = [_kernel_matrix(n, ell) for n, ell in zip(shape, lengths)]
    field = rng.standard_normal(tuple(m.shape[1] for m in matrices), dtype=np.float32)
    # Contracting the leading node axis each time appends the voxel axis at the end, so after one
    # pass per axis the axes are back in their original order.
    for matrix in matrices:
        field = np.tensordot(field, matrix, axes=([0], [1]))
    return np.ascontiguousarray(field, dtype=np.float32)


def bias_field(
    shape: Sequence[int],
    rng: np.random.Generator,
    length: float | Sequence[float],
    strength: float,
) -> np.ndarray:
    """A smooth positive multiplicative field ``exp(strength * field)`` like an MR coil bias.

    Args:
        shape: the output shape ``(D, H, W)``.
        rng: random generator.
        length: correlation length in voxels (one number or one per axis); MR bias varies over
            tens of centimetres.
        strength: standard deviation of the log-field; 0.1 to 0.2 gives a visible but realistic bias.

    Returns:
        float32 array of ``shape`` with values around 1.
    """
    field = smooth_field(shape, rng, length)
    field *= np.float32(strength)
    return np.exp(field, out=field)
