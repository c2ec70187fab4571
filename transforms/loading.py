"""Load volumes into MONAI ``MetaTensor`` items through :mod:`medseg.io`, keeping their geometry.

MONAI's own readers are not used: :func:`medseg.io.load_volume` applies medseg's checks (truncated files,
qform/sform disagreement, non-finite voxels, modality grids that differ) and its RAS+ convention.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.errors import ConfigError, InputError
from medseg.io import CASE_AFFINE_ATOL, Geometry, Volume, load_case, load_volume
from medseg.io.volume import cast_checked
from medseg.transforms.grids import GEOMETRY_KEY, add_grid

IMAGE_DTYPE = np.float32
LABEL_DTYPE = np.uint8


class LoadVolumed(MapTransform):
    """Load each key's file(s) into a channel-first ``MetaTensor`` ``(C, I, J, K)`` with its RAS+ affine.

    An item may be one path (a 3D volume, ``C = 1``), a list of paths (one 3D volume per modality, stacked
    in the given order with :func:`medseg.io.load_case`) or an already loaded :class:`medseg.io.Volume`.
    Images become float32, label maps uint8 (whole numbers 0..255 are required). Every key after the first
    must have the first key's grid (shape, and affine within ``affine_atol`` mm); it then gets exactly the
    first key's affine.

    The meta dict holds ``"affine"`` (the input's voxel-to-RAS+ matrix, as MONAI expects), ``"space": "RAS"``,
    ``"filename_or_obj"``, ``"original_affine"``, ``"spatial_shape"`` and, with ``keep_geometry``, the
    :class:`medseg.io.Geometry` under ``"medseg_geometry"`` plus the input grid under ``"medseg_grids"``
    (needed by :func:`~medseg.transforms.inversion.invert_to_input`). The Geometry object does not go
    through PyTorch's default collation, so training presets leave it out.

    Args:
        keys: keys to load, the reference (image) key first.
        label_keys: those of ``keys`` that hold label maps.
        keep_geometry: keep the input Geometry and grid record (inference).
        nonfinite: NaN/inf policy passed to :func:`medseg.io.load_volume`: ``"reject"``, ``"replace"``
            or ``"keep"``.
        affine_atol: tolerance (mm per affine entry) between the grids of the keys and of a case's modalities.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: Sequence[str] = (),
        keep_geometry: bool = True,
        nonfinite: str = "reject",
        affine_atol: float = CASE_AFFINE_ATOL,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        unknown = [k for k in label_keys if k not in self.keys]
        if unknown:
            raise ConfigError(f"label_keys {unknown} are not among the keys to load {list(self.keys)}")
        self.label_keys = tuple(label_keys)
        self.keep_geometry = keep_geometry
        self.nonfinite = nonfinite
        self.affine_atol = float(affine_atol)

    def __call__(self, data: Mapping) -> dict:
        """Load the items; raises medseg InputError/GeometryError naming the case and file on bad inputs."""
        out = dict(data)
        reference = None
        for key in self.key_iterator(out):
            is_label = key in self.label_keys
            volume, source = self._load(out[key], key, is_label, out.get("case_id"))
            if reference is None:
                reference = (key, volume.geometry, source)
            else:
                ref_key, ref_geometry, ref_source = reference
                ref_geometry.require_match(
                    volume.geometry, f"{key} {source} vs {ref_key} {ref_source}", atol=self.affine_atol
                )
            out[key] = self._to_tensor(volume.array, reference[1], source)
        return out

    def _load(self, item: object, key: str, is_label: bool, case_id: object) -> tuple[Volume, str]:
        dtype = LABEL_DTYPE if is_label else IMAGE_DTYPE
        if isinstance(item, Volume):
            source = str(item.path or "in memory")
            return Volume(cast_checked(item.array, dtype, f"{key} {source}"), item.geometry, item.path), source
        if isinstance(item, (str, os.PathLike)):
            volume = load_volume(item, nonfinite=self.nonfinite, dtype=dtype)
            return Volume(volume.array[None], volume.geometry, volume.path), str(item)
        if isinstance(item, Sequence) and item and all(isinstance(p, (str, os.PathLike)) for p in item):
            volume = load_case(list(item), nonfinite=self.nonfinite, dtype=dtype, affine_atol=self.affine_atol)
            return volume, ", ".join(str(p) for p in item)
        case = f" of case {case_id}" if case_id is not None else ""
        raise InputError(
            f"{key}{case}: cannot load a {type(item).__name__}; give a file path, a list of paths (one per "
            "modality) or a medseg.io.Volume"
        )

    def _to_tensor(self, array: np.ndarray, geometry: Geometry, source: str) -> MetaTensor:
        channel_first = array if array.ndim == 4 else array[None]
        affine = torch.as_tensor(np.array(geometry.affine, dtype=np.float64))
        meta = {
            "filename_or_obj": source,
            "original_affine": np.array(geometry.affine, dtype=np.float64),
            "spatial_shape": np.array(geometry.shape),
            "original_channel_dim": 0,
            "space": "RAS",
        }
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(channel_first)), affine=affine, meta=meta)
        if self.keep_geometry:
            tensor.meta[GEOMETRY_KEY] = geometry
            add_grid(tensor)
        return tensor

