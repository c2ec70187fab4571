"""Deterministic label-map perturbations: stand-in predictions for evaluating without a trained model.

The evaluation notebooks turn reference label maps into "predictions" with known defects (a boundary eroded
or grown by whole voxels, a shift, a class relabelled), so that the metrics can be read against a cause.
A perturbation is written as a short string:

- ``"none"``: the reference itself;
- ``"erode N"``: every labelled voxel within N voxels (face steps) of another label or of the background
  becomes background, label by label, so touching organs both shrink;
- ``"dilate N"``: every background voxel within N voxels (Euclidean, in voxels) of a label takes the label
  of the nearest labelled voxel;
- ``"shift A B C"``: the map moves by ``(A, B, C)`` voxels along ``(i, j, k)``; voxels shifted in are
  background;
- ``"relabel V W"``: label ``V`` becomes ``W`` (``W = 0`` deletes it).
"""

from __future__ import annotations

import numpy as np

from medseg.errors import ConfigError, unknown_choice

KINDS: tuple[str, ...] = ("none", "erode", "dilate", "shift", "relabel")
"""The perturbation kinds, first word of a perturbation string."""

_ARITY = {"none": 0, "erode": 1, "dilate": 1, "shift": 3, "relabel": 2}


def parse(perturbation: str) -> tuple[str, tuple[int, ...]]:
    """Split a perturbation string into its kind and integer arguments.

    Args:
        perturbation: e.g. ``"erode 1"``, ``"shift 2 0 -1"``.

    Returns:
        ``(kind, arguments)``.

    Raises:
        ConfigError: unknown kind, wrong number of arguments, non-integer or negative sizes.
    """
    words = str(perturbation).split()
    if not words or words[0] not in _ARITY:
        raise unknown_choice("perturbation", words[0] if words else perturbation, KINDS)
    kind, rest = words[0], words[1:]
    if len(rest) != _ARITY[kind]:
        raise ConfigError(f"perturbation {perturbation!r}: {kind} takes {_ARITY[kind]} integer(s), got {len(rest)}")
    try:
        numbers = tuple(int(word) for word in rest)
    except ValueError:
        raise ConfigError(f"perturbation {perturbation!r}: arguments must be integers") from None
    if kind in ("erode", "dilate") and numbers[0] < 0:
        raise ConfigError(f"perturbation {perturbation!r}: the size must be >= 0")
    return kind, numbers


def erode_labels(labels: np.ndarray, steps: int) -> np.ndarray:
    """Remove ``steps`` layers of voxels from every label (face connectivity); removed voxels become 0.

    Args:
        labels: integer label map ``(i, j, k)`` (any number of axes).
        steps: number of layers.

    Returns:
        A new label map of the same shape and dtype.
    """
    out = np.array(labels, copy=True)
    for _ in range(steps):
        border = np.zeros(out.shape, dtype=bool)
        for axis in range(out.ndim):
            differs = np.diff(out, axis=axis) != 0
            lead = [slice(None)] * out.ndim
            trail = [slice(None)] * out.ndim
            lead[axis], trail[axis] = slice(None, -1), slice(1, None)
            border[tuple(lead)] |= differs
            border[tuple(trail)] |= differs
        out[border & (out != 0)] = 0
    return out


def dilate_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """Grow every label into the background by up to ``radius`` voxels, taking the nearest label.

    Args:
        labels: integer label map ``(i, j, k)``.
        radius: growth in voxels (Euclidean distance on the voxel grid).

    Returns:
        A new label map of the same shape and dtype.
    """
    from scipy import ndimage

    background = labels == 0
    if radius == 0 or background.all() or not background.any():
        return np.array(labels, copy=True)
    distance, nearest = ndimage.distance_transform_edt(background, return_indices=True)
    grown = labels[tuple(nearest)]
    return np.where(background & (distance <= radius), grown, labels).astype(labels.dtype)


def shift_labels(labels: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """Move a label map by whole voxels; voxels shifted in from outside are background.

    Args:
        labels: label map ``(i, j, k)``.
        offset: voxels along each axis (positive: towards higher indices).

    Returns:
        A new label map of the same shape and dtype.

    Raises:
        ConfigError: if there is not one offset per axis.
    """
    if len(offset) != labels.ndim:
        raise ConfigError(f"a shift needs one offset per axis ({labels.ndim}), got {offset}")
    out = np.zeros_like(labels)
    source, target = [], []
    for size, step in zip(labels.shape, offset):
        step = max(-size, min(size, step))
        source.append(slice(max(0, -step), size - max(0, step)))
        target.append(slice(max(0, step), size - max(0, -step)))
    out[tuple(target)] = labels[tuple(source)]
    return out


def perturb(labels: np.ndarray, perturbation: str) -> np.ndarray:
    """Apply one perturbation (see the module docstring) to a label map.

    Args:
        labels: integer label map ``(i, j, k)``.
        perturbation: e.g. ``"none"``, ``"erode 1"``, ``"dilate 2"``, ``"shift 2 0 0"``, ``"relabel 4 1"``.

    Returns:
        A new label map of the same shape and dtype.

    Raises:
        ConfigError: for an invalid perturbation string (see :func:`parse`) or a shift of another dimension.
    """
    kind, numbers = parse(perturbation)
    if kind == "erode":
        return erode_labels(labels, numbers[0])
    if kind == "dilate":
        return dilate_labels(labels, numbers[0])
    if kind == "shift":
        return shift_labels(labels, numbers)
    out = np.array(labels, copy=True)
    if kind == "relabel":
        out[labels == numbers[0]] = numbers[1]
    return out
