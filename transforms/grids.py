"""Voxel grids a tensor passes through in a preset, recorded so that outputs can be mapped back exactly.

A *grid* is a spatial shape plus the affine that maps its voxel indices to RAS+ millimetres. The loader
records the input's grid; :class:`RecordGridd` records the grid after each geometric step (orientation,
resampling, cropping). :func:`medseg.transforms.inversion.invert_to_input` walks these grids backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.errors import InputError

GRIDS_KEY = "medseg_grids"
"""Meta-dict key of the list of grids a tensor passed through (first: the input file's grid)."""

GEOMETRY_KEY = "medseg_geometry"
"""Meta-dict key of the input's :class:`medseg.io.Geometry` (kept by inference presets)."""


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: spatial shape and voxel-to-RAS+ affine.

    Args:
        affine: ``(4, 4)`` float64 voxel-to-world matrix (for 2D grids only rows/columns 0, 1 and 3 are used,
            as MONAI does).
        shape: spatial shape, 2 or 3 sizes.
    """

    affine: np.ndarray
    shape: tuple[int, ...]

    def affine_nd(self) -> np.ndarray:
        """The ``(d + 1, d + 1)`` affine for this grid's ``d`` spatial dimensions."""
        d = len(self.shape)
        full = np.asarray(self.affine, dtype=np.float64)
        if full.shape == (d + 1, d + 1):
            return full
        out = np.eye(d + 1)
        out[:d, :d] = full[:d, :d]
        out[:d, d] = full[:d, -1]
        return out


def grid_of(tensor: MetaTensor) -> Grid:
    """The current grid of a channel-first ``MetaTensor`` of shape ``(C, *spatial)``.

    Args:
        tensor: the tensor.

    Returns:
        Its grid (affine copied as float64 numpy).
    """
    affine = np.array(tensor.affine.detach().cpu().numpy(), dtype=np.float64)
    return Grid(affine=affine, shape=tuple(int(n) for n in tensor.shape[1:]))


def add_grid(tensor: MetaTensor) -> None:
    """Append ``tensor``'s current grid to its recorded grids (a new list, so copies made earlier keep theirs).

    Args:
        tensor: a channel-first ``MetaTensor`` ``(C, *spatial)``.
    """
    tensor.meta[GRIDS_KEY] = [*tensor.meta.get(GRIDS_KEY, []), grid_of(tensor)]


def recorded_grids(tensor: object, what: str) -> list[Grid]:
    """The grids a tensor went through, ending with its current grid.

    Args:
        tensor: a ``MetaTensor`` made by a medseg inference preset.
        what: names the tensor in error messages.

    Returns:
        The recorded grids followed by the current one; the first is the input file's grid.

    Raises:
        InputError: if ``tensor`` carries no recorded grids.
    """
    if not isinstance(tensor, MetaTensor) or not tensor.meta.get(GRIDS_KEY):
        raise InputError(
            f"{what} has no recorded voxel grids: it must be the output of a medseg inference preset "
            "(e.g. brats_inference_transforms) to be mapped back to the input grid"
        )
    return [*tensor.meta[GRIDS_KEY], grid_of(tensor)]


class RecordGridd(MapTransform):
    """Record each key's current voxel grid in its meta dict (under ``"medseg_grids"``).

    Put one after every transform that changes the grid (orientation, resampling, cropping, padding) in
    a preset whose outputs must be mapped back with :func:`~medseg.transforms.inversion.invert_to_input`.

    Args:
        keys: keys of channel-first ``MetaTensor`` items.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __call__(self, data: Mapping) -> dict:
        """Record the grids; raises InputError if an item is not a ``MetaTensor``."""
        out = dict(data)
        for key in self.key_iterator(out):
            if not isinstance(out[key], MetaTensor):
                raise InputError(
                    f"{key}: cannot record the grid of a {type(out[key]).__name__}; load it with LoadVolumed"
                )
            # Transforms may share the meta dict between input and output; give the output its own.
            tensor = out[key]
            tensor.meta = dict(tensor.meta)
            add_grid(tensor)
        return out
