"""What a layout scan finds: the expected files of each case, and problems with the folder structure.

Every layout module (:mod:`~medseg.data.brats`, :mod:`~medseg.data.synapse`,
:mod:`~medseg.data.transunet`, :mod:`~medseg.data.nnunet`) turns a dataset folder into a :class:`Scan`.
``index`` turns a clean scan into case dictionaries; ``check`` reports the scan's problems and then
inspects every file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.spec import DatasetSpec

SUBSETS: tuple[str, ...] = ("train", "test")
DATASET_CASE_ID = "(dataset)"
"""The ``case_id`` of problems that concern the dataset as a whole (a list file, ``dataset.json``)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Args:
        case_id: the case concerned, or :data:`DATASET_CASE_ID` for the dataset as a whole.
        path: the file or folder concerned, when there is one.
        message: what is wrong, naming the file.
    """

    case_id: str
    path: Path | None
    message: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.message}"


@dataclass(frozen=True)
class CaseFiles:
    """The files one case should have (whether or not they exist).

    Args:
        case_id: the case's name, e.g. ``"BraTS2021_00000"`` or ``"case0005_slice012"``.
        images: one path per modality in the spec's order (one ``.npz`` or ``.h5`` file for TransUNet).
        label: the label file, or ``None`` for an unlabelled case.
        group: the patient the case belongs to; TransUNet slices of one volume share it, so that
            splits never separate them. Equal to ``case_id`` elsewhere.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    group: str


@dataclass
class Scan:
    """A dataset folder as a layout reads it.

    Args:
        root: the dataset folder.
        spec: the layout's spec.
        subset: ``"train"`` or ``"test"``.
        cases: the cases found, sorted by ``case_id``.
        problems: structural problems (stray or misnamed files, list files that disagree with the folder).
    """

    root: Path
    spec: DatasetSpec
    subset: str
    cases: list[CaseFiles] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def is_hidden(path: Path) -> bool:
    """Hidden entries (leading dot, e.g. ``.DS_Store`` or an unfinished atomic write) are ignored."""
    return path.name.startswith(".")


def visible_entries(folder: Path) -> list[Path]:
    """The non-hidden entries of ``folder``, sorted by name (empty if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if not is_hidden(p)), key=lambda p: p.name)
