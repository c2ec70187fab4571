"""Find the cases to segment in what the user points ``medseg segment`` at.

An input is one of:

* a NIfTI file (``.nii`` / ``.nii.gz``): one case; a 4D file holds its channels (``(i, j, k, C)``);
* a case folder holding one NIfTI file per modality, named ``<anything>_<modality>.nii.gz`` or
  ``<anything>-<modality>.nii.gz`` (BraTS), or ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (nnU-Net);
  files named ``*seg*`` are ignored;
* a DICOM series folder (one channel);
* a TransUNet test volume ``<case>.npy.h5`` (its ``image`` dataset, one channel; see medseg.io.transunet_h5);
* a folder of the above: sub-folders (case folders or DICOM series), NIfTI files (single-channel
  cases, or nnU-Net channel groups ``<case>_NNNN.nii.gz``) and ``.npy.h5`` volumes (e.g. TransUNet's
  ``test_vol_h5`` folder).

Hidden entries (a leading dot: ``.DS_Store``, or the temporary file of an atomic write that was killed,
``.<name>.<random>.tmp.nii.gz``) are ignored everywhere.

Modality names are matched with their BraTS 2021 / 2023 synonyms (``t1ce`` = ``t1c``, ``flair`` = ``t2f``, ...),
so a model trained on one naming segments cases named the other way; the stacking order is always the model's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError
from medseg.io.transunet_h5 import transunet_h5_stem

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Each group names one MRI contrast; BraTS 2021 uses the first name, BraTS 2023 the second.
MODALITY_SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"t1", "t1n"}),
    frozenset({"t1ce", "t1c", "t1gd"}),
    frozenset({"t2", "t2w"}),
    frozenset({"flair", "t2f"}),
)
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SegmentCase:
    """One case to segment.

    Attributes:
        case_id: the name its outputs are written under (``<case_id>.nii.gz``).
        paths: one path per modality in the model's channel order, or a single 4D NIfTI / DICOM folder.
        channels_in_file: whether ``paths`` is a single file holding all channels (4D NIfTI).
        naming: the modality naming found in the file names (``"brats2021"``, ``"brats2023"``) or ``None``.
        problem: in a folder run, why this case's files could not be resolved (the case then fails alone).
    """

    case_id: str
    paths: tuple[Path, ...]
    channels_in_file: bool = False
    naming: str | None = None
    problem: str | None = None


def strip_nifti_suffix(name: str) -> str | None:
    """The file name without its NIfTI suffix, or ``None`` if it is not a NIfTI file name."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def volume_file_stem(name: str) -> str | None:
    """The case name of a single-volume file: a NIfTI file or a TransUNet ``.npy.h5`` volume, else ``None``."""
    return strip_nifti_suffix(name) or transunet_h5_stem(name)


def safe_case_id(name: str, source: Path) -> str:
    """Check that a case id can be used as an output file name inside the output folder.

    Args:
        name: the candidate case id.
        source: where it came from, for the message.

    Returns:
        ``name`` unchanged.

    Raises:
        InputError: if the id is empty, absolute, contains a path separator or ``..``, or other characters
            than letters, digits, ``.``, ``_`` and ``-``.
    """
    if not _SAFE_CASE_ID.match(name) or ".." in name or os.sep in name or "/" in name:
        raise InputError(
            f"{source}: case id {name!r} cannot be used as an output file name "
            "(allowed: letters, digits, '.', '_', '-', starting with a letter or digit, no '..')"
        )
    return name


def _synonyms(modality: str) -> frozenset[str]:
    lower = modality.lower()
    for group in MODALITY_SYNONYMS:
        if lower in group:
            return group
    return frozenset({lower})


def _modality_suffix(stem: str) -> str:
    parts = re.split(r"[_-]", stem)
    return parts[-1].lower() if len(parts) > 1 else ""


def visible_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` without hidden ones (leading dot), sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_dicom_folder(folder: Path) -> bool:
    entries = visible_entries(folder)
    files = [p for p in entries if p.is_file()]
    if not files or any(p.is_dir() for p in entries):
        return False
    if any(strip_nifti_suffix(p.name) is not None for p in files):
        return False
    for path in files[:4]:
        with open(path, "rb") as handle:
            head = handle.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return True
    return any(p.suffix.lower() == ".dcm" for p in files)


def _case_from_folder(folder: Path, modalities: Sequence[str]) -> SegmentCase:
    case_id = safe_case_id(folder.name, folder)
    if _is_dicom_folder(folder):
        return SegmentCase(case_id, (folder,))
    niftis = [p for p in visible_entries(folder) if p.is_file() and strip_nifti_suffix(p.name) is not None]
    images = [p for p in niftis if "seg" not in _modality_suffix(strip_nifti_suffix(p.name) or "")]
    if not images:
        raise InputError(f"{folder}: no NIfTI image files and not a DICOM series")
    groups = _nnunet_groups(images)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(images):
        return SegmentCase(case_id, tuple(next(iter(groups.values()))))
    if len(modalities) <= 1:
        if len(images) != 1:
            raise InputError(f"{folder}: expected one image for a single-channel model, found {[p.name for p in images]}")
        return SegmentCase(case_id, (images[0],))
    chosen: list[Path] = []
    naming_votes: list[str] = []
    for modality in modalities:
        names = _synonyms(modality)
        matches = [p for p in images if _modality_suffix(strip_nifti_suffix(p.name) or "") in names]
        if len(matches) != 1:
            found = [p.name for p in images]
            raise InputError(
                f"{folder}: expected exactly one file for modality {modality!r} (named *_{modality}.nii.gz or a "
                f"synonym: {sorted(names)}), found {len(matches)} among {found}"
            )
        chosen.append(matches[0])
        suffix = _modality_suffix(strip_nifti_suffix(matches[0].name) or "")
        naming_votes.append("brats2023" if suffix in {"t1n", "t1c", "t2w", "t2f"} else "brats2021")
    naming = naming_votes[0] if len(set(naming_votes)) == 1 else None
    return SegmentCase(case_id, tuple(chosen), naming=naming)


def _nnunet_groups(files: Sequence[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[tuple[int, Path]]] = {}
    for path in files:
        match = _NNUNET_CHANNEL.match(strip_nifti_suffix(path.name) or "")
        if match:
            groups.setdefault(match["case"], []).append((int(match["channel"]), path))
    result: dict[str, list[Path]] = {}
    for case, members in groups.items():
        members.sort()
        if [c for c, _ in members] == list(range(len(members))):
            result[case] = [p for _, p in members]
    return result


def find_cases(input_path: str | os.PathLike, modalities: Sequence[str]) -> tuple[list[SegmentCase], bool]:
    """List the cases in an input path.

    Args:
        input_path: a NIfTI file, a case folder, a DICOM series folder, or a folder of these.
        modalities: the model's input modality names in channel order (its ``in_channels`` of them).

    Returns:
        ``(cases, is_collection)``: the cases sorted by id, and whether the input was a folder of cases
        (a folder run, where one failing case does not stop the others).

    Raises:
        InputError: if the path does not exist, holds no case, or two cases share an id.
    """
    path = Path(input_path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    n_channels = max(len(modalities), 1)
    if path.is_file():
        stem = volume_file_stem(path.name)
        if stem is None:
            raise InputError(
                f"{path}: not a NIfTI file (.nii or .nii.gz), a TransUNet .npy.h5 volume, a case folder or a "
                "DICOM folder"
            )
        return [SegmentCase(safe_case_id(stem, path), (path,), channels_in_file=n_channels > 1)], False
    entries = visible_entries(path)
    subfolders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file() and strip_nifti_suffix(p.name) is not None]
    is_case_folder = not subfolders and (
        _is_dicom_folder(path) or (n_channels > 1 and _looks_like_one_case(files, modalities))
    )
    if is_case_folder:
        return [_case_from_folder(path, modalities)], False
    cases = [_case_or_problem(folder, modalities) for folder in subfolders]
    groups = _nnunet_groups(files) if n_channels > 1 else {}
    grouped = {p for members in groups.values() for p in members}
    for case, members in groups.items():
        cases.append(SegmentCase(safe_case_id(case, path), tuple(members)))
    h5_volumes = [p for p in entries if p.is_file() and transunet_h5_stem(p.name) is not None]
    for file in [*files, *h5_volumes]:
        if file in grouped:
            continue
        stem = volume_file_stem(file.name) or ""
        cases.append(SegmentCase(safe_case_id(stem, file), (file,), channels_in_file=n_channels > 1))
    if not cases:
        raise InputError(f"{path}: no cases found (NIfTI files, .npy.h5 volumes, case folders or DICOM series folders)")
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"{path}: several inputs would be written as the same case id: {duplicates}")
    return sorted(cases, key=lambda c: c.case_id), True


def _case_or_problem(folder: Path, modalities: Sequence[str]) -> SegmentCase:
    case_id = safe_case_id(folder.name, folder)
    try:
        return _case_from_folder(folder, modalities)
    except InputError as exc:
        return SegmentCase(case_id, (folder,), problem=str(exc))


def _looks_like_one_case(files: Sequence[Path], modalities: Sequence[str]) -> bool:
    suffixes = {_modality_suffix(strip_nifti_suffix(p.name) or "") for p in files}
    suffixes = {s for s in suffixes if "seg" not in s}
    if all(suffixes & _synonyms(m) for m in modalities):
        return True
    known = frozenset().union(*(_synonyms(m) for m in modalities))
    if suffixes and suffixes <= known:
        return True  # a case with a modality missing: _case_from_folder then names the missing one
    groups = _nnunet_groups(files)
    return len(groups) == 1 and len(next(iter(groups.values()))) == len(files)
