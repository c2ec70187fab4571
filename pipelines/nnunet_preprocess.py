"""nnU-Net's preprocessing of one case and its exact inverse, on medseg's arrays.

Axis conventions. medseg arrays are ``(C, i, j, k)`` in NIfTI order. nnU-Net's readers give ``(C, z, y, x)``
= the NIfTI array with its axes reversed, and the spacing reversed (``NibabelIOWithReorient`` first reorients
to RAS). :func:`to_nnunet_axes` and :func:`from_nnunet_axes` convert between the two; everything else here
works in nnU-Net's order, following ``DefaultPreprocessor.run_case_npy``:

1. ``transpose_forward`` of the spatial axes (and of the spacing);
2. crop to the bounding box of nonzero voxels (any channel, holes filled);
3. per-channel intensity normalisation from the plans (before resampling, as nnU-Net does);
4. resampling to the configuration's spacing (nnU-Net's resampler: order 3 for images, separate
   in-plane / through-plane resampling for anisotropic spacings).

:func:`restore_logits` and :func:`uncrop` undo 4 and 2 on predictions; the label conversion and step 1's
inverse follow in :mod:`medseg.pipelines.nnunet_model`. nnU-Net's own cropping, normalisation and
resampling functions are called, so the numbers are nnU-Net's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.io import Geometry
from medseg.optional import require
from medseg.pipelines.nnunet_plans import NnunetConfiguration, NnunetPlans

_FEATURE = "running nnU-Net model folders"
NNUNET_MODULES: tuple[str, ...] = (
    "nnunetv2.preprocessing.cropping.cropping",
    "nnunetv2.preprocessing.normalization.default_normalization_schemes",
    "nnunetv2.preprocessing.resampling.default_resampling",
)


def require_nnunet() -> None:
    """Import the nnU-Net modules the preprocessing calls, so that a missing install fails before any case.

    Raises:
        MissingDependencyError: nnunetv2 is not installed.
    """
    for module in NNUNET_MODULES:
        require(module, _FEATURE)


@dataclass(frozen=True)
class AxisChange:
    """How a medseg ``(C, i, j, k)`` array became nnU-Net's ``(C, z, y, x)`` one.

    Attributes:
        orientation: nibabel orientation applied first (``NibabelIOWithReorient``: to RAS), or ``None``.
    """

    orientation: np.ndarray | None = None


def to_nnunet_axes(
    array: np.ndarray, geometry: Geometry, reader: str
) -> tuple[np.ndarray, tuple[float, ...], AxisChange]:
    """Reorder a medseg case the way nnU-Net's reader would have read the same files.

    Args:
        array: ``(C, i, j, k)`` image data.
        geometry: its geometry.
        reader: the plans' ``image_reader_writer``.

    Returns:
        ``(data (C, z, y, x), spacing (sz, sy, sx), change)``; ``change`` undoes it in :func:`from_nnunet_axes`.
    """
    spacing = np.asarray(geometry.spacing, dtype=float)
    orientation = None
    if reader == "NibabelIOWithReorient":
        from nibabel.orientations import apply_orientation, io_orientation

        orientation = io_orientation(geometry.affine)
        array = np.stack([apply_orientation(channel, orientation) for channel in array])
        reordered = np.empty(3)
        reordered[orientation[:, 0].astype(int)] = spacing
        spacing = reordered
    data = np.ascontiguousarray(array.transpose(0, 3, 2, 1))
    return data, tuple(float(s) for s in spacing[::-1]), AxisChange(orientation)


def from_nnunet_axes(array: np.ndarray, change: AxisChange) -> np.ndarray:
    """Invert :func:`to_nnunet_axes`.

    Args:
        array: ``(z, y, x)`` or ``(C, z, y, x)`` data in nnU-Net's order.
        change: what :func:`to_nnunet_axes` returned for the case.

    Returns:
        ``(i, j, k)`` or ``(C, i, j, k)`` data in medseg's order.
    """
    spatial = array.ndim - 3
    order = tuple(range(spatial)) + tuple(spatial + a for a in (2, 1, 0))
    out = array.transpose(order)
    if change.orientation is not None:
        from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

        back = ornt_transform(axcodes2ornt("RAS"), change.orientation)
        out = np.stack([apply_orientation(c, back) for c in out]) if spatial else apply_orientation(out, back)
    return np.ascontiguousarray(out)


@dataclass
class Preprocessed:
    """A case ready for the network, and what is needed to map predictions back.

    Attributes:
        data: ``(C, *S)`` float32 network input (3D; a 2D configuration runs slice by slice along axis 0).
        shape_before_cropping: spatial shape after ``transpose_forward``.
        bbox: ``[[start, stop], ...]`` of the nonzero crop, per axis.
        shape_after_cropping: spatial shape of the crop, before resampling.
        spacing: the case's spacing after ``transpose_forward``.
        target_spacing: the spacing of ``data`` (3 entries).
    """

    data: np.ndarray
    shape_before_cropping: tuple[int, ...]
    bbox: list[list[int]]
    shape_after_cropping: tuple[int, ...]
    spacing: tuple[float, ...]
    target_spacing: tuple[float, ...]


def _normalizer(scheme: str) -> type:
    schemes = require("nnunetv2.preprocessing.normalization.default_normalization_schemes", _FEATURE)
    return getattr(schemes, scheme)  # the name was checked against NORMALIZATIONS when the plans were read


def preprocess(
    data: np.ndarray, spacing: tuple[float, ...], plans: NnunetPlans, configuration: NnunetConfiguration
) -> Preprocessed:
    """Apply nnU-Net's preprocessing to one case.

    Args:
        data: ``(C, z, y, x)`` from :func:`to_nnunet_axes`.
        spacing: ``(sz, sy, sx)`` from :func:`to_nnunet_axes`.
        plans: the plans (transposes and intensity statistics).
        configuration: the configuration (target spacing, normalisation, resampling).

    Returns:
        The preprocessed case.
    """
    cropping = require("nnunetv2.preprocessing.cropping.cropping", _FEATURE)
    resampling = require("nnunetv2.preprocessing.resampling.default_resampling", _FEATURE)
    forward = plans.transpose_forward
    data = data.astype(np.float32).transpose(0, *[a + 1 for a in forward])
    spacing_t = tuple(float(spacing[a]) for a in forward)
    shape_before = tuple(int(n) for n in data.shape[1:])
    data, mask, bbox = cropping.crop_to_nonzero(data, None)
    shape_after = tuple(int(n) for n in data.shape[1:])
    target = configuration.spacing if len(configuration.spacing) == 3 else (spacing_t[0], *configuration.spacing)
    new_shape = resampling.compute_new_shape(shape_after, spacing_t, target)
    for c in range(data.shape[0]):
        normalizer = _normalizer(configuration.normalization_schemes[c])(
            use_mask_for_norm=configuration.use_mask_for_norm[c],
            intensityproperties=plans.intensity_properties.get(str(c), {}),
        )
        data[c] = normalizer.run(data[c], mask[0])
    data = resampling.resample_data_or_seg_to_shape(data, new_shape, spacing_t, target, **configuration.resampling_data)
    return Preprocessed(
        data=np.ascontiguousarray(data, dtype=np.float32),
        shape_before_cropping=shape_before,
        bbox=[[int(a), int(b)] for a, b in bbox],
        shape_after_cropping=shape_after,
        spacing=spacing_t,
        target_spacing=tuple(float(s) for s in target),
    )


def restore_logits(logits: np.ndarray, case: Preprocessed, configuration: NnunetConfiguration) -> np.ndarray:
    """Resample predicted logits back to the cropped input grid (undoes step 4), as nnU-Net does before its softmax.

    Args:
        logits: ``(H, *S)`` on the grid of ``case.data``.
        case: the preprocessing record.
        configuration: the configuration (its probability resampling options).

    Returns:
        ``(H, *shape_after_cropping)`` float32.
    """
    resampling = require("nnunetv2.preprocessing.resampling.default_resampling", _FEATURE)
    out = resampling.resample_data_or_seg_to_shape(
        logits, case.shape_after_cropping, case.target_spacing, case.spacing,
        **configuration.resampling_probabilities,
    )
    return np.asarray(out, dtype=np.float32)


def uncrop(array: np.ndarray, case: Preprocessed, fill: float | list[float] = 0) -> np.ndarray:
    """Place a cropped ``(*crop)`` or ``(H, *crop)`` array back into the full transposed grid (undoes step 2).

    Args:
        array: data on the crop.
        case: the preprocessing record.
        fill: value outside the crop; one per channel for ``(H, *crop)`` arrays.

    Returns:
        ``(*shape_before_cropping)`` or ``(H, *shape_before_cropping)``.
    """
    lead = array.shape[: array.ndim - 3]
    out = np.empty(lead + case.shape_before_cropping, dtype=array.dtype)
    if lead and isinstance(fill, list):
        out[...] = np.asarray(fill, dtype=array.dtype).reshape(lead + (1, 1, 1))
    else:
        out[...] = fill
    box = tuple(slice(a, b) for a, b in case.bbox)
    out[(Ellipsis, *box)] = array
    return out
