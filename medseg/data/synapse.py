"""The raw Synapse (BTCV) layout as distributed (``RawData.zip``)::

    ROOT/RawData/Training/img/img0001.nii.gz
    ROOT/RawData/Training/label/label0001.nii.gz
    ROOT/RawData/Testing/img/img0061.nii.gz        (optional, no labels)

``ROOT`` may also be the ``RawData`` folder itself. Case ids are ``case`` plus the four digits
(``case0001``), the name TransUNet gives the same scan.
"""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.scan import CaseFiles, Problem, Scan, visible_entries
from medseg.data.spec import DatasetSpec

SUBSETS: tuple[str, ...] = ("train", "test")

_IMAGE = re.compile(r"^img(\d{4})\.nii\.gz$")
_LABEL = re.compile(r"^label(\d{4})\.nii\.gz$")
_SUBSET_FOLDER = {"train": "Training", "test": "Testing"}


def _raw_data(root: Path) -> Path:
    """The folder holding ``Training`` (``ROOT/RawData``, or ``ROOT`` when it is ``RawData`` itself)."""
    return root / "RawData" if (root / "RawData").is_dir() else root


def looks_like(root: Path, spec: DatasetSpec | None = None) -> bool:
    """Whether ``root`` (or ``root/RawData``) has a ``Training/img`` folder."""
    return (_raw_data(root) / "Training" / "img").is_dir()


def scan(root: Path, spec: DatasetSpec, subset: str = "train") -> Scan:
    """Read a raw Synapse folder.

    Args:
        root: the dataset folder (holding ``RawData``) or ``RawData`` itself.
        spec: :data:`~medseg.data.spec.SYNAPSE`.
        subset: ``"train"`` (``Training``, labelled) or ``"test"`` (``Testing``; labels only where a
            ``label`` folder exists).

    Returns:
        The cases found from the image files, and stray or unmatched files.
    """
    result = Scan(root=root, spec=spec, subset=subset)
    base = _raw_data(root) / _SUBSET_FOLDER[subset]
    image_folder, label_folder = base / "img", base / "label"
    labelled = subset == "train" or label_folder.is_dir()
    numbers = set()
    for entry in visible_entries(image_folder):
        match = _IMAGE.match(entry.name)
        if not match or not entry.is_file():
            result.problems.append(
                Problem(entry.name, entry, f"unexpected entry {entry.name} in {image_folder.name}/ "
                        "(images are named img0001.nii.gz)")
            )
            continue
        number = match.group(1)
        numbers.add(number)
        label = label_folder / f"label{number}.nii.gz" if labelled else None
        result.cases.append(CaseFiles(case_id=f"case{number}", images=(entry,), label=label, group=f"case{number}"))
    for entry in visible_entries(label_folder):
        match = _LABEL.match(entry.name)
        if not match or not entry.is_file():
            result.problems.append(
                Problem(entry.name, entry, f"unexpected entry {entry.name} in {label_folder.name}/ "
                        "(labels are named label0001.nii.gz)")
            )
        elif match.group(1) not in numbers:
            result.problems.append(
                Problem(f"case{match.group(1)}", entry, f"label {entry.name} has no image img{match.group(1)}.nii.gz")
            )
    return result
