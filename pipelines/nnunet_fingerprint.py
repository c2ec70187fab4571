"""An nnU-Net-style dataset fingerprint computed with medseg's readers.

Per training case: the voxel spacing and the shape after cropping to the bounding box of nonzero voxels
(any channel), both in the axis order the transform presets work in (closest RAS+ axes, as MONAI's
``Orientationd("RAS")`` reorders them); and a random sample of foreground voxels (label > 0) per channel,
from which intensity statistics are pooled over the dataset (nnU-Net's
``foreground_intensity_properties_per_channel``: mean, std, median, min, max, 0.5th and 99.5th percentiles).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from medseg.data import DatasetSpec, detect, index
from medseg.errors import InputError

DEFAULT_SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class Fingerprint:
    """What planning needs to know about a dataset.

    Attributes:
        spec: the dataset layout.
        case_ids: the training cases, in order.
        spacings: ``(N, 3)`` voxel spacing in mm per case, RAS axis order.
        shapes_after_crop: ``(N, 3)`` shape per case after cropping to the nonzero box, RAS axis order.
        relative_size_after_crop: ``(N,)`` cropped voxels / all voxels per case.
        intensity: per channel (by modality name) ``mean``, ``std``, ``median``, ``min``, ``max``,
            ``percentile_00_5``, ``percentile_99_5`` of foreground voxels.
    """

    spec: DatasetSpec
    case_ids: tuple[str, ...]
    spacings: np.ndarray
    shapes_after_crop: np.ndarray
    relative_size_after_crop: np.ndarray
    intensity: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON/YAML-able data."""
        return {
            "layout": self.spec.name,
            "cases": len(self.case_ids),
            "spacings": self.spacings.round(6).tolist(),
            "shapes_after_crop": self.shapes_after_crop.astype(int).tolist(),
            "median_relative_size_after_crop": float(np.median(self.relative_size_after_crop)),
            "foreground_intensity_properties_per_channel": self.intensity,
        }


def ras_permutation(affine: np.ndarray) -> np.ndarray:
    """For each RAS axis, the voxel axis that lies closest to it (nibabel's ``io_orientation``).

    Args:
        affine: ``(4, 4)`` voxel-to-world matrix.

    Returns:
        ``(3,)`` integer array ``p`` such that RAS axis ``r`` is voxel axis ``p[r]``.
    """
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)
    permutation = np.empty(3, dtype=int)
    permutation[ornt[:, 0].astype(int)] = np.arange(3)
    return permutation


def nonzero_box_shape(image: np.ndarray) -> tuple[int, int, int]:
    """The shape of the bounding box of voxels that are nonzero in any channel.

    Args:
        image: ``(C, I, J, K)`` data.

    Returns:
        The box's ``(I', J', K')``; the full shape when every voxel is zero.
    """
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return tuple(int(n) for n in mask.shape)
    extent = []
    for axis in range(3):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        extent.append(int(hits[-1] - hits[0] + 1))
    return tuple(extent)


def _statistics(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    low, high = np.percentile(values, (0.5, 99.5))
    return {
        "mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values)),
        "min": float(values.min()), "max": float(values.max()),
        "percentile_00_5": float(low), "percentile_99_5": float(high),
    }


def dataset_fingerprint(
    dataset_dir: str | os.PathLike, samples_per_case: int = DEFAULT_SAMPLES_PER_CASE, seed: int = 0
) -> Fingerprint:
    """Fingerprint the labelled training cases of a dataset.

    Args:
        dataset_dir: a dataset folder in a volume layout (BraTS 2021/2023, Synapse raw, nnU-Net raw).
        samples_per_case: foreground voxels drawn per case for the intensity statistics.
        seed: seed of the voxel sampling.

    Returns:
        The fingerprint.

    Raises:
        InputError: TransUNet's slice layout (no spacing), unlabelled datasets, unreadable cases.
    """
    from medseg.io import load_case, load_volume

    spec = detect(dataset_dir)
    if spec.name == "transunet":
        raise InputError(f"{dataset_dir}: TransUNet's preprocessed slices carry no voxel spacing; plan on the raw "
                         "Synapse folder instead")
    cases = [c for c in index(dataset_dir, spec, "train") if c.get("label")]
    if not cases:
        raise InputError(f"{dataset_dir}: no labelled training cases to fingerprint")
    rng = np.random.default_rng(seed)
    spacings, shapes, relative, ids = [], [], [], []
    samples: list[list[np.ndarray]] = [[] for _ in spec.modalities]
    for case in cases:
        volume = load_case(case["image"])
        label = load_volume(case["label"])
        volume.geometry.require_match(label.geometry, f"case {case['case_id']}: label vs image", atol=1e-3)
        permutation = ras_permutation(volume.geometry.affine)
        cropped = nonzero_box_shape(volume.array)
        spacings.append(np.asarray(volume.geometry.spacing)[permutation])
        shapes.append(np.asarray(cropped)[permutation])
        relative.append(np.prod(cropped) / np.prod(volume.geometry.shape))
        ids.append(case["case_id"])
        foreground = np.flatnonzero(label.array.ravel() > 0)
        if foreground.size:
            chosen = rng.choice(foreground, size=min(samples_per_case, foreground.size), replace=False)
            for channel in range(volume.array.shape[0]):
                samples[channel].append(volume.array[channel].ravel()[chosen].astype(np.float64))
    intensity = {
        name: _statistics(np.concatenate(samples[c]) if samples[c] else np.empty(0))
        for c, name in enumerate(spec.modalities)
    }
    return Fingerprint(spec, tuple(ids), np.asarray(spacings, dtype=float), np.asarray(shapes, dtype=float),
                       np.asarray(relative, dtype=float), intensity)
