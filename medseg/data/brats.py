"""BraTS 2021 and 2023 folder layouts: one folder per case, one file per modality plus ``seg``.

2021::

    ROOT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz

2023 (GLI, and the sister challenges MEN, MET, PED, SSA with the same naming)::

    ROOT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz

A folder whose cases have no ``seg`` files (a validation set) is indexed with ``label = None``; when
some cases have one, every case must.
"""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.scan import CaseFiles, Problem, Scan, visible_entries
from medseg.data.spec import DatasetSpec
from medseg.errors import ConfigError

SUBSETS: tuple[str, ...] = ("train",)

_CASE_PATTERN = {
    "brats2021": re.compile(r"^BraTS2021_\d{5}$"),
    "brats2023": re.compile(r"^BraTS-[A-Z]+-\d{5}-\d{3}$"),
}
_SEPARATOR = {"brats2021": "_", "brats2023": "-"}
_EXAMPLE = {"brats2021": "BraTS2021_00000", "brats2023": "BraTS-GLI-00000-000"}


def _file_name(spec: DatasetSpec, case_id: str, suffix: str) -> str:
    return f"{case_id}{_SEPARATOR[spec.name]}{suffix}.nii.gz"


def case_folders(root: Path, spec: DatasetSpec) -> list[Path]:
    """The case folders of ``root`` whose names follow ``spec``'s naming, sorted."""
    pattern = _CASE_PATTERN[spec.name]
    return [p for p in visible_entries(root) if p.is_dir() and pattern.match(p.name)]


def looks_like(root: Path, spec: DatasetSpec) -> bool:
    """Whether ``root`` holds at least one case folder named as ``spec`` (BRATS2021 or BRATS2023) names them."""
    return bool(case_folders(root, spec))


def scan(root: Path, spec: DatasetSpec, subset: str = "train") -> Scan:
    """Read a BraTS folder.

    Args:
        root: the folder holding the case folders.
        spec: :data:`~medseg.data.spec.BRATS2021` or :data:`~medseg.data.spec.BRATS2023`.
        subset: must be ``"train"``: a BraTS folder is one set (point at the validation folder to
            index validation cases).

    Returns:
        The cases (labelled when any case has a ``seg`` file) and the stray or misnamed entries.

    Raises:
        ConfigError: ``subset`` is not ``"train"``.
    """
    if subset not in SUBSETS:
        raise ConfigError(
            f"BraTS folders hold a single set; subset {subset!r} is not available (valid: train). "
            "Index the validation folder itself for validation cases"
        )
    result = Scan(root=root, spec=spec, subset=subset)
    folders = case_folders(root, spec)
    labelled = any((f / _file_name(spec, f.name, "seg")).exists() for f in folders)
    for folder in folders:
        case_id = folder.name
        images = tuple(folder / _file_name(spec, case_id, m) for m in spec.modalities)
        label = folder / _file_name(spec, case_id, "seg") if labelled else None
        result.cases.append(CaseFiles(case_id=case_id, images=images, label=label, group=case_id))
        expected = {p.name for p in images} | {_file_name(spec, case_id, "seg")}
        for entry in visible_entries(folder):
            if entry.name not in expected:
                result.problems.append(
                    Problem(case_id, entry, f"unexpected {'folder' if entry.is_dir() else 'file'} {entry.name} "
                            f"(a {spec.name} case holds {', '.join(sorted(expected))})")
                )
    known = {f.name for f in folders}
    for entry in visible_entries(root):
        name = entry.name
        if name in known:
            continue
        if name.lower().startswith("brats") or name.lower().endswith((".nii", ".nii.gz")):
            result.problems.append(
                Problem(name, entry, f"{name} does not follow the {spec.name} layout "
                        f"(case folders are named like {_EXAMPLE[spec.name]})")
            )
    return result

