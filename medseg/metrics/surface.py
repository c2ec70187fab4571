"""Surfaces of binary masks and the distances between them, in millimetres.

The *surface* of a mask is the set of its voxels with at least one face neighbour (6-connectivity in 3D,
4 in 2D) outside the mask; voxels on the border of the image count as surface. Distances are Euclidean,
between voxel centres, with the spacing of every axis. This is the definition of ``medpy.metric.binary``
(``connectivity=1``) and of MONAI's voxel-surface metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import GeometryError, InputError


def check_spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """Validate a voxel spacing and return it as one float per axis.

    Args:
        spacing: millimetres per voxel along each array axis, or one number for all axes.
        ndim: number of array axes.

    Returns:
        The spacing, ``ndim`` positive finite floats.

    Raises:
        InputError: if the length is wrong or a value is not positive and finite.
    """
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.ndim != 1:
        raise InputError(f"spacing must be a number or a sequence of {ndim} numbers, got {spacing!r}")
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise InputError(f"spacing {tuple(values.tolist())} has {values.size} values for a {ndim}-D array")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"spacing values must be positive and finite, got {tuple(values.tolist())}")
    return tuple(float(v) for v in values)


def as_mask_pair(pred: np.ndarray, gt: np.ndarray, case_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Convert two arrays to boolean masks (nonzero is foreground) and check that their shapes agree.

    Args:
        pred: prediction, any shape.
        gt: reference, the same shape.
        case_id: names the case in the error message, if given.

    Returns:
        ``(pred_mask, gt_mask)`` as boolean arrays.

    Raises:
        GeometryError: if the shapes differ.
        InputError: if the arrays are scalars.
    """
    pred_mask = np.asarray(pred).astype(bool, copy=False)
    gt_mask = np.asarray(gt).astype(bool, copy=False)
    check_same_shape(pred_mask, gt_mask, case_id)
    return pred_mask, gt_mask


def check_same_shape(pred: np.ndarray, gt: np.ndarray, case_id: str = "") -> None:
    """Raise unless a prediction and its reference have the same shape, with at least one axis.

    Args:
        pred: prediction array.
        gt: reference array.
        case_id: names the case in the error message, if given.

    Raises:
        GeometryError: if the shapes differ.
        InputError: if the arrays are scalars.
    """
    where = f"case {case_id!r}: " if case_id else ""
    if pred.shape != gt.shape:
        raise GeometryError(f"{where}prediction shape {pred.shape} differs from reference shape {gt.shape}")
    if pred.ndim == 0:
        raise InputError(f"{where}masks must have at least one axis, got scalars")


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal in millimetres: ``sqrt(sum((n_i * s_i)**2))``.

    This is the HD95 given to a structure present in only one of two masks. For BraTS images
    (240 x 240 x 155 voxels of 1 mm) it is 373.13 mm, the value of the BraTS leaderboards.

    Args:
        shape: the image shape in voxels.
        spacing: millimetres per voxel along each axis.

    Returns:
        The diagonal in millimetres.
    """
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """The surface of a binary mask: its voxels with a face neighbour outside the mask or outside the image.

    Args:
        mask: boolean array, any number of axes.

    Returns:
        Boolean array of the same shape, true on surface voxels.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances between the surfaces of two non-empty masks, in millimetres.

    Args:
        pred: prediction mask, any number of axes; nonzero is foreground.
        gt: reference mask of the same shape.
        spacing: millimetres per voxel along each axis (or one number for all).

    Returns:
        ``(pred_to_gt, gt_to_pred)``: for every surface voxel of ``pred`` (in C order) its distance to the
        nearest surface voxel of ``gt``, and the reverse; 1-D float64 arrays.

    Raises:
        GeometryError: if the shapes differ.
        InputError: if a mask is empty or the spacing does not fit.
    """
    pred_mask, gt_mask = as_mask_pair(pred, gt)
    sampling = check_spacing(spacing, pred_mask.ndim)
    if not pred_mask.any() or not gt_mask.any():
        raise InputError("surface distances need two non-empty masks")
    # Only the joint bounding box matters: it holds every surface voxel of both masks (a mask voxel on the
    # box's edge has a neighbour outside the box, which is background or outside the image, so it is surface
    # in the box exactly when it is surface in the image), and so every nearest partner.
    window = _bounding_box(pred_mask | gt_mask)
    pred_surface, gt_surface = surface_voxels(pred_mask[window]), surface_voxels(gt_mask[window])
    # distance_transform_edt measures the distance to the nearest zero, so the surface is the zero set.
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return to_gt[pred_surface].astype(np.float64), to_pred[gt_surface].astype(np.float64)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)
