"""Write synthetic BraTS 2021 or 2023 datasets in the official folder layout.

2021: ``OUT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``, labels 0, 1, 2, 4.
2023: ``OUT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels 0, 1, 2, 3.

Images are int16, labels uint8, and all five files of a case share one affine: BraTS's own
``diag(-s, -s, s)`` orientation (nibabel axis codes L, P, S) with the origin of the real files,
``(0, (H - 1) * s_j, 0)`` mm. Case ``n`` with seed ``s`` is drawn from ``default_rng([s, n])``, so it
is the same whatever the number of cases, and the two years share anatomy for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import unknown_choice
from medseg.io import Geometry, save_like
from medseg.synth.brain import ENHANCING, MODALITIES, NECROSIS, OEDEMA, brain_phantom
from medseg.synth.output import checked_settings, prepare_output

BRATS_YEARS: tuple[int, ...] = (2021, 2023)
DEFAULT_SHAPE: tuple[int, int, int] = (240, 240, 155)
FIELD_OF_VIEW_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)


@dataclass(frozen=True)
class BratsNaming:
    """File naming and label values of one BraTS edition.

    Args:
        year: 2021 or 2023.
        modalities: file suffixes of the four modalities, in the physical order of :data:`MODALITIES`.
        separator: between the case id and the suffix (``"_"`` in 2021, ``"-"`` in 2023).
        enhancing_label: label value of the enhancing tumour (4 in 2021, 3 in 2023).
    """

    year: int
    modalities: tuple[str, ...]
    separator: str
    enhancing_label: int

    def case_id(self, index: int) -> str:
        """The case folder name for case number ``index``."""
        return f"BraTS2021_{index:05d}" if self.year == 2021 else f"BraTS-GLI-{index:05d}-000"

    def file_name(self, case_id: str, suffix: str) -> str:
        """The file name of one modality (or ``"seg"``) of a case."""
        return f"{case_id}{self.separator}{suffix}.nii.gz"


NAMING: dict[int, BratsNaming] = {
    2021: BratsNaming(2021, ("t1", "t1ce", "t2", "flair"), "_", 4),
    2023: BratsNaming(2023, ("t1n", "t1c", "t2w", "t2f"), "-", 3),
}


def brats_affine(shape: Sequence[int], field_of_view_mm: Sequence[float] = FIELD_OF_VIEW_MM) -> np.ndarray:
    """The voxel-to-RAS+ affine of a synthetic BraTS volume.

    Args:
        shape: array shape ``(D, H, W)``.
        field_of_view_mm: physical extent along ``(D, H, W)``; voxels are ``field_of_view_mm / shape``.

    Returns:
        ``(4, 4)`` float64 matrix ``diag(-s_i, -s_j, s_k)`` with origin ``(0, (H - 1) * s_j, 0)``.
    """
    spacing = [float(f) / int(n) for f, n in zip(field_of_view_mm, shape)]
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[1, 3] = (int(shape[1]) - 1) * spacing[1]
    return affine


def brats_labels(tumour: np.ndarray, year: int) -> np.ndarray:
    """Turn a phantom's tumour sub-region map into BraTS label values.

    Args:
        tumour: uint8 map of :data:`~medseg.synth.brain.NECROSIS`, ``OEDEMA`` and ``ENHANCING``.
        year: 2021 (enhancing tumour 4) or 2023 (enhancing tumour 3).

    Returns:
        uint8 label map of the same shape.
    """
    table = np.zeros(max(NECROSIS, OEDEMA, ENHANCING) + 1, dtype=np.uint8)
    table[NECROSIS], table[OEDEMA], table[ENHANCING] = 1, 2, NAMING[year].enhancing_label
    return table[tumour]


def write_brats_case(folder: Path, index: int, year: int, shape: Sequence[int], seed: int) -> Path:
    """Synthesise case number ``index`` and write its five files.

    Args:
        folder: the dataset folder (the case folder is made inside it).
        index: case number, part of the case id and of the random stream.
        year: 2021 or 2023.
        shape: array shape ``(D, H, W)``.
        seed: dataset seed.

    Returns:
        The case folder.
    """
    naming = NAMING[year]
    case_id = naming.case_id(index)
    case_folder = folder / case_id
    phantom = brain_phantom(shape, np.random.default_rng([seed, index]), FIELD_OF_VIEW_MM)
    affine = brats_affine(shape)
    image_geometry = Geometry.from_affine(affine, tuple(shape), "int16")
    for physical, suffix in zip(MODALITIES, naming.modalities):
        path = case_folder / naming.file_name(case_id, suffix)
        save_like(phantom.images[physical], image_geometry, path, kind="image", dtype=np.int16)
    label_geometry = Geometry.from_affine(affine, tuple(shape), "uint8")
    path = case_folder / naming.file_name(case_id, "seg")
    save_like(brats_labels(phantom.tumour, year), label_geometry, path, kind="label", dtype=np.uint8)
    return case_folder


def write_brats(
    out: str | os.PathLike,
    cases: int,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    year: int = 2021,
    seed: int = 0,
) -> list[Path]:
    """Write a synthetic BraTS dataset into a new or empty folder.

    Args:
        out: the dataset folder.
        cases: number of cases (case numbers 0 to ``cases - 1``).
        shape: array shape ``(D, H, W)``; the physical field of view stays 240 x 240 x 155 mm.
        year: 2021 or 2023 layout and label convention.
        seed: random seed; the same seed gives byte-identical arrays.

    Returns:
        The case folders, in case order.

    Raises:
        ConfigError: unknown year, fewer than one case, a bad shape or a negative seed.
        InputError: ``out`` is not empty.
    """
    if year not in NAMING:
        raise unknown_choice("BraTS year", year, [str(y) for y in BRATS_YEARS])
    shape = checked_settings(cases, shape, seed)
    folder = prepare_output(out)
    return [write_brats_case(folder, index, year, shape, seed) for index in range(int(cases))]
