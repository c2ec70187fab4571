"""Map a network output from preset space back onto the input's original voxel grid, exactly.

The inference presets record every voxel grid a volume passes through (see :mod:`medseg.transforms.grids`).
:func:`invert_to_input` walks those grids backwards. Each step compares two affines, so it needs nothing
from the transform that made it:

* a step whose voxel map is a signed axis permutation with integer offsets (orientation, crop, pad) is
  undone exactly by index arithmetic; voxels that the later grid does not cover (cropped away) get the
  fill value;
* any other step (resampling) is undone by interpolation from the later grid at the earlier grid's voxel
  centres: nearest neighbour for label maps, linear for probabilities. Centres up to half a voxel beyond
  the later grid's edge take the edge value (resampling rounds the extent of the grid); farther ones get
  the fill value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.errors import ConfigError, GeometryError, InputError, unknown_choice
from medseg.io import Geometry
from medseg.transforms.grids import GEOMETRY_KEY, Grid, recorded_grids
from medseg.transforms.label_values import as_numpy

KINDS = ("label", "probabilities")
# A voxel map whose entries are this close to integers is treated as exact index arithmetic.
_INTEGER_TOL = 1e-4
# Nearest-neighbour positions are rounded to this many decimals (of a voxel) before choosing a voxel.
_SNAP_DECIMALS = 6
# Chunk of output voxels for the general (oblique) resampling path, to bound memory.
_CHUNK_VOXELS = 1 << 20


def invert_to_input(
    prediction: np.ndarray | torch.Tensor,
    data: Mapping | MetaTensor,
    key: str = "image",
    kind: Literal["label", "probabilities"] = "label",
    fill: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Bring a prediction made in preset space back to the original voxel grid of the input.

    Args:
        prediction: network output on the grid of ``data[key]``: a label map ``(*spatial)`` or
            ``(C, *spatial)`` (integer or boolean) for ``kind="label"``, or probabilities ``(C, *spatial)``
            for ``kind="probabilities"``; numpy array or tensor (any device). No batch axis.
        data: the data dictionary produced by a medseg inference preset (or its ``MetaTensor`` item itself).
        key: the item whose recorded grids to follow.
        kind: ``"label"`` (nearest neighbour, keeps the dtype) or ``"probabilities"`` (linear, float32).
        fill: value for voxels outside the preset's field of view (e.g. cropped-away background), one for
            all channels or one per channel; for softmax probabilities pass ``(1, 0, ..., 0)``.

    Returns:
        The prediction on the input's grid: ``(*I)`` or ``(C, *I)`` (same channel layout as given) where
        ``I`` is the input Geometry's shape.

    Raises:
        ConfigError: for an unknown ``kind`` or a ``fill`` of the wrong length.
        InputError: if ``data`` was not made by an inference preset, or a label map is not integer.
        GeometryError: if ``prediction``'s spatial shape is not that of ``data[key]``.
    """
    if kind not in KINDS:
        raise unknown_choice("prediction kind", kind, KINDS)
    tensor = data if isinstance(data, MetaTensor) else data.get(key) if isinstance(data, Mapping) else None
    what = f"data[{key!r}]"
    grids = recorded_grids(tensor, what)
    values = as_numpy(prediction)
    spatial = grids[-1].shape
    if values.shape[-len(spatial) :] != spatial or values.ndim not in (len(spatial), len(spatial) + 1):
        raise GeometryError(
            f"prediction has shape {values.shape}; expected {spatial} or (C, *{spatial}) to match {what} "
            "(remove any batch axis)"
        )
    has_channels = values.ndim == len(spatial) + 1
    values = values if has_channels else values[None]
    if kind == "label":
        if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
            raise InputError(
                f"a label prediction must be integer or boolean, got {values.dtype}; use kind='probabilities'"
            )
    else:
        values = values.astype(np.float32, copy=False)
    fills = _channel_fill(fill, values.shape[0], values.dtype)
    for later, earlier in zip(reversed(grids[1:]), reversed(grids[:-1])):
        values = to_earlier_grid(values, later, earlier, nearest=kind == "label", fill=fills)
    geometry = tensor.meta.get(GEOMETRY_KEY)
    if geometry is not None and tuple(values.shape[1:]) != tuple(geometry.shape):
        raise GeometryError(f"inverted prediction has shape {values.shape[1:]}, input geometry {geometry.shape}")
    return values if has_channels else values[0]


def input_geometry(data: Mapping | MetaTensor, key: str = "image") -> Geometry:
    """The :class:`medseg.io.Geometry` of the input that an inference preset loaded.

    Args:
        data: the data dictionary produced by a medseg inference preset (or its ``MetaTensor`` item).
        key: the item loaded from the input file(s).

    Returns:
        The input's Geometry, to write outputs with ``medseg.io.save_like``.

    Raises:
        InputError: if no geometry was kept (training presets do not keep it).
    """
    tensor = data if isinstance(data, MetaTensor) else data.get(key)
    geometry = tensor.meta.get(GEOMETRY_KEY) if isinstance(tensor, MetaTensor) else None
    if geometry is None:
        raise InputError(f"data[{key!r}] carries no input geometry; load it with an inference preset")
    return geometry


class InvertToInputd(MapTransform):
    """Dictionary form of :func:`invert_to_input`: replace predictions by numpy arrays on the input grid.

    Args:
        keys: keys of the predictions (in preset space).
        reference_key: key of the preprocessed input whose recorded grids to follow.
        kind: ``"label"`` or ``"probabilities"``.
        fill: value(s) outside the preset's field of view, see :func:`invert_to_input`.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "image",
        kind: Literal["label", "probabilities"] = "label",
        fill: float | Sequence[float] = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if kind not in KINDS:
            raise unknown_choice("prediction kind", kind, KINDS)
        self.reference_key = reference_key
        self.kind = kind
        self.fill = fill

    def __call__(self, data: Mapping) -> dict:
        """Invert every key's prediction onto the grid of ``data[reference_key]``'s input."""
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = invert_to_input(out[key], out, self.reference_key, self.kind, self.fill)
        return out


def _channel_fill(fill: float | Sequence[float], channels: int, dtype: np.dtype) -> np.ndarray:
    values = np.atleast_1d(np.asarray(fill, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, channels):
        raise ConfigError(f"fill must be one value or one per channel ({channels}), got {fill!r}")
    return np.broadcast_to(values, (channels,)).astype(dtype)


def to_earlier_grid(values: np.ndarray, later: Grid, earlier: Grid, nearest: bool, fill: np.ndarray) -> np.ndarray:
    """Map channel-first values from one grid onto another (one step of :func:`invert_to_input`).

    Args:
        values: ``(C, *later.shape)`` values on the later grid.
        later: the grid the values are on.
        earlier: the grid to map them to.
        nearest: nearest-neighbour interpolation (labels) instead of linear (probabilities).
        fill: ``(C,)`` values for voxels of ``earlier`` that ``later`` does not cover.

    Returns:
        ``(C, *earlier.shape)`` values.
    """
    d = len(later.shape)
    if len(earlier.shape) != d:
        raise GeometryError(f"cannot map a {d}D grid onto a {len(earlier.shape)}D grid")
    # Voxel map: index on the earlier grid -> continuous index on the later grid.
    voxel_map = np.linalg.solve(later.affine_nd(), earlier.affine_nd())
    linear, offset = voxel_map[:d, :d], voxel_map[:d, d]
    axes = _axis_permutation(linear)
    if axes is None:
        return _resample_general(values, linear, offset, earlier.shape, nearest, fill)
    scales = np.array([linear[axes[a], a] for a in range(d)])
    offsets = np.array([offset[axes[a]] for a in range(d)])
    # Put the later grid's axes in the earlier grid's order: axis a of `moved` runs along earlier axis a.
    moved = np.transpose(values, [0, *(1 + p for p in axes)])
    exact = np.allclose(np.abs(scales), 1.0, rtol=0.0, atol=1e-6) and np.allclose(
        offsets, np.round(offsets), rtol=0.0, atol=_INTEGER_TOL
    )
    if exact:
        return _index_exact(moved, np.round(scales).astype(int), np.round(offsets).astype(int), earlier.shape, fill)
    return _resample_separable(moved, scales, offsets, earlier.shape, nearest, fill)


def _axis_permutation(linear: np.ndarray) -> list[int] | None:
    """For each earlier axis, the later axis it runs along, if the map never mixes axes; else None."""
    d = linear.shape[0]
    magnitude = np.abs(linear)
    axes = [int(np.argmax(magnitude[:, a])) for a in range(d)]
    if sorted(axes) != list(range(d)):
        return None
    off_axis = magnitude.copy()
    off_axis[axes, range(d)] = 0.0
    if np.max(off_axis) > 1e-6 * np.max(magnitude):
        return None
    return axes


def _fill_array(fill: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    out = np.empty((fill.shape[0], *shape), dtype=dtype)
    out[...] = fill.reshape((-1,) + (1,) * len(shape)).astype(dtype)
    return out


def _index_exact(
    moved: np.ndarray, signs: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...], fill: np.ndarray
) -> np.ndarray:
    """Copy ``moved[:, s0 * i0 + o0, s1 * i1 + o1, ...]`` to every earlier index, fill where uncovered."""
    out = _fill_array(fill, shape, moved.dtype)
    earlier_slices, later_slices = [slice(None)], [slice(None)]
    for a, n in enumerate(shape):
        sign, offset, size = int(signs[a]), int(offsets[a]), moved.shape[1 + a]
        # Earlier indices i with 0 <= sign * i + offset < size form one contiguous run [low, high).
        bounds = sorted(((0 - offset) * sign, (size - 1 - offset) * sign))
        low, high = max(bounds[0], 0), min(bounds[1] + 1, n)
        if low >= high:
            return out
        first, last = sign * low + offset, sign * (high - 1) + offset
        earlier_slices.append(slice(low, high))
        if sign > 0:
            later_slices.append(slice(first, last + 1))
        else:
            later_slices.append(slice(first, last - 1 if last > 0 else None, -1))
    out[tuple(earlier_slices)] = moved[tuple(later_slices)]
    return out


def _resample_separable(
    moved: np.ndarray,
    scales: np.ndarray,
    offsets: np.ndarray,
    shape: tuple[int, ...],
    nearest: bool,
    fill: np.ndarray,
) -> np.ndarray:
    """Resample axis by axis: earlier index ``i`` on axis ``a`` reads later position ``scales[a] * i + offsets[a]``.

    Channels are done one at a time so that temporaries stay the size of one channel.
    """
    out = np.empty((moved.shape[0], *shape), dtype=moved.dtype)
    positions = [scales[a] * np.arange(n) + offsets[a] for a, n in enumerate(shape)]
    for channel in range(moved.shape[0]):
        values = moved[channel]
        for a, position in enumerate(positions):
            values = _interpolate_axis(values, a, position, nearest)
            covered = _covered(position, moved.shape[1 + a])
            if not covered.all():
                index = [slice(None)] * values.ndim
                index[a] = ~covered
                values[tuple(index)] = fill[channel]
        out[channel] = values
    return out


def _covered(position: np.ndarray, size: int) -> np.ndarray:
    # A grid of `size` voxels covers [-0.5, size - 0.5] in its own index units.
    return (position >= -0.5 - _INTEGER_TOL) & (position <= size - 0.5 + _INTEGER_TOL)


def _nearest_index(position: np.ndarray, size: int) -> np.ndarray:
    # Halfway positions round up. Positions are snapped to 1e-6 voxel first so that a tie is a tie even
    # when float rounding in the affines (e.g. of a flipped copy of the same volume) nudges it either way.
    snapped = np.round(position, _SNAP_DECIMALS)
    return np.clip(np.floor(snapped + 0.5).astype(np.int64), 0, size - 1)


def _interpolate_axis(values: np.ndarray, axis: int, position: np.ndarray, nearest: bool) -> np.ndarray:
    size = values.shape[axis]
    clamped = np.clip(position, 0.0, size - 1.0)
    if nearest:
        return np.take(values, _nearest_index(clamped, size), axis=axis)
    low = np.clip(np.floor(clamped).astype(np.int64), 0, max(size - 2, 0))
    high = np.minimum(low + 1, size - 1)
    weight = (clamped - low).astype(values.dtype)
    shape = [1] * values.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(values, low, axis=axis) * (1 - weight) + np.take(values, high, axis=axis) * weight


def _resample_general(
    values: np.ndarray,
    linear: np.ndarray,
    offset: np.ndarray,
    shape: tuple[int, ...],
    nearest: bool,
    fill: np.ndarray,
) -> np.ndarray:
    """Resample along an oblique voxel map, a slab of earlier voxels at a time."""
    from scipy.ndimage import map_coordinates

    d = len(shape)
    later_shape = np.array(values.shape[1:])
    out = _fill_array(fill, shape, values.dtype)
    slab = max(1, _CHUNK_VOXELS // max(1, int(np.prod(shape[1:]))))
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        index = np.stack(np.meshgrid(np.arange(start, stop), *[np.arange(n) for n in shape[1:]], indexing="ij"))
        position = np.tensordot(linear, index.reshape(d, -1).astype(np.float64), axes=1) + offset[:, None]
        covered = np.all(
            (position >= -0.5 - _INTEGER_TOL) & (position <= later_shape[:, None] - 0.5 + _INTEGER_TOL), axis=0
        )
        clamped = np.clip(position, 0.0, later_shape[:, None] - 1.0)
        block = out[:, start:stop].reshape(values.shape[0], -1)
        if nearest:
            index_per_axis = [_nearest_index(clamped[a], int(later_shape[a])) for a in range(d)]
            sampled = values[(slice(None), *index_per_axis)]
        else:
            sampled = np.stack([map_coordinates(channel, clamped, order=1, mode="nearest") for channel in values])
        block[:, covered] = sampled[:, covered]
        out[:, start:stop] = block.reshape(values.shape[0], stop - start, *shape[1:])
    return out
