"""Strict preflight of a dataset folder: every problem in every case, not just the first.

Checked: the folder structure (stray, misnamed or unlisted files; see the layout modules), every
expected file present, all files of a case (modalities and label) sharing shape and affine, images
and labels readable and finite, label values whole and within the layout's allowed set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data import transunet
from medseg.data.detection import dataset_folder, layout_module, resolve_spec
from medseg.data.scan import DATASET_CASE_ID, CaseFiles, Problem, Scan
from medseg.data.spec import TRANSUNET, DatasetSpec
from medseg.errors import MedsegError
from medseg.io import CASE_AFFINE_ATOL, Geometry, load_volume, read_geometry


@dataclass(frozen=True)
class CheckReport:
    """The outcome of :func:`check_dataset`.

    Args:
        root: the dataset folder.
        spec: the layout it was checked against.
        cases: number of cases inspected (all subsets).
        problems: every problem found, dataset-wide ones first, then by case.
    """

    root: Path
    spec: DatasetSpec
    cases: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def _label_values(array: np.ndarray) -> np.ndarray:
    """The distinct values of a label array (bincount for small non-negative integers: much faster)."""
    if array.dtype.kind in "biu" and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < 65536:
            return np.flatnonzero(np.bincount(array.ravel().astype(np.intp, copy=False), minlength=high + 1))
    return np.unique(array)


def _label_problems(case: CaseFiles, spec: DatasetSpec, array: np.ndarray) -> list[Problem]:
    path = case.label
    problems = []
    values = _label_values(array)
    fractional = [v.item() for v in values if v != np.round(v)]
    if fractional:
        problems.append(Problem(case.case_id, path, f"label {path.name} has non-integer values {fractional[:5]}"))
    unknown = [int(v) for v in values if v == np.round(v) and int(v) not in spec.allowed_labels]
    if unknown:
        allowed = ", ".join(str(v) for v in sorted(spec.allowed_labels))
        problems.append(Problem(case.case_id, path, f"label {path.name} has value(s) {unknown} not allowed in "
                                f"{spec.name} (allowed: {allowed}; {spec.label_convention})"))
    return problems


def _grid_problems(case: CaseFiles, grids: list[tuple[str, Path, Geometry]]) -> list[Problem]:
    """Files whose grid differs from the grid most files of the case share (the first file's on a tie)."""
    if len(grids) < 2:
        return []
    agreeing = [[other for other in grids if g.matches(other[2], atol=CASE_AFFINE_ATOL)] for _, _, g in grids]
    majority = max(range(len(grids)), key=lambda i: (len(agreeing[i]), -i))
    _, reference_path, reference = grids[majority]
    names = [path.name for _, path, _ in agreeing[majority]]
    shown = names[0] + (f" and {len(names) - 1} other file(s) of the case" if len(names) > 1 else "")
    problems = []
    for what, path, geometry in grids:
        if not reference.matches(geometry, atol=CASE_AFFINE_ATOL):
            differences = "; ".join(reference.differences(geometry, atol=CASE_AFFINE_ATOL))
            problems.append(Problem(case.case_id, path, f"{what} {path.name} is not on the grid of {shown}: "
                                    f"{differences}"))
    return problems


def check_volume_case(case: CaseFiles, spec: DatasetSpec) -> list[Problem]:
    """Check one case of a NIfTI layout (BraTS, Synapse raw, nnU-Net).

    Args:
        case: expected files of the case.
        spec: its layout.

    Returns:
        Every problem: missing files, unreadable files, non-finite voxels, files whose shape or affine
        differs from the grid most files of the case share, label values outside ``spec.allowed_labels``.
    """
    problems: list[Problem] = []
    grids: list[tuple[str, Path, Geometry]] = []
    files = [(f"{modality} image", path) for modality, path in zip(spec.modalities, case.images)]
    if case.label is not None:
        files.append(("label", case.label))
    for what, path in files:
        if not path.is_file():
            problems.append(Problem(case.case_id, path, f"missing {what} {path.name}"))
            continue
        try:
            geometry = read_geometry(path)
            volume = load_volume(path)  # reads the voxels: truncated data and NaN/inf are refused here
        except MedsegError as exc:
            problems.append(Problem(case.case_id, path, f"cannot use {what} {path.name}: {exc}"))
            continue
        grids.append((what, path, geometry))
        if path == case.label:
            problems.extend(_label_problems(case, spec, volume.array))
    problems.extend(_grid_problems(case, grids))
    return problems


def _scans(folder: Path, spec: DatasetSpec) -> list[Scan]:
    module = layout_module(spec)
    return [module.scan(folder, spec, subset) for subset in module.SUBSETS]


def check_dataset(root: str | os.PathLike, spec: DatasetSpec | str | None = None) -> CheckReport:
    """Inspect every case of a dataset folder (all its subsets) and report every problem.

    Args:
        root: the dataset folder.
        spec: ``None`` to detect the layout, a layout name, or a spec.

    Returns:
        The report: layout, number of cases and problems (dataset-wide first, then sorted by case id).

    Raises:
        InputError: the folder does not exist or matches no layout (nothing to check against).
        ConfigError: unknown layout name.
    """
    folder = dataset_folder(root)
    spec = resolve_spec(folder, spec)
    scans = _scans(folder, spec)
    problems = [p for scan in scans for p in scan.problems]
    cases = [case for scan in scans for case in scan.cases]
    if not cases:
        problems.append(Problem(DATASET_CASE_ID, folder, f"no cases found in the {spec.name} layout"))
    if spec.name == TRANSUNET.name:
        problems.extend(transunet.cross_subset_problems(*scans))
        for case in cases:
            problems.extend(transunet.check_case(case, spec))
    else:
        for case in cases:
            problems.extend(check_volume_case(case, spec))
    problems.sort(key=lambda p: (p.case_id != DATASET_CASE_ID, p.case_id))
    return CheckReport(root=folder, spec=spec, cases=len(cases), problems=problems)


def check(root: str | os.PathLike, spec: DatasetSpec | str | None = None) -> list[Problem]:
    """Every problem in a dataset folder (empty when it is clean); see :func:`check_dataset`.

    Args:
        root: the dataset folder.
        spec: ``None`` to detect the layout, a layout name, or a spec.

    Returns:
        The problems, dataset-wide first, then by case id.
    """
    return check_dataset(root, spec).problems
