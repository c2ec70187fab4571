"""Recognise which layout a dataset folder follows, and find the module that reads it."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from medseg.data import brats, nnunet, synapse, transunet
from medseg.data.spec import BRATS2021, BRATS2023, LAYOUT_NAMES, SYNAPSE, TRANSUNET, DatasetSpec, builtin_spec
from medseg.errors import InputError, unknown_choice

ACCEPTED_LAYOUTS = """accepted layouts:
  brats2021  ROOT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
  brats2023  ROOT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz
  synapse    ROOT/RawData/Training/{img/img0001.nii.gz, label/label0001.nii.gz}
  transunet  ROOT/{train_npz/case0005_slice000.npz, test_vol_h5/case0001.npy.h5, lists/lists_Synapse/*.txt}
  nnunet     ROOT/{dataset.json, imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz}
(see docs/datasets.md)"""

_MODULES: dict[str, ModuleType] = {
    "brats2021": brats,
    "brats2023": brats,
    "synapse": synapse,
    "transunet": transunet,
    "nnunet": nnunet,
}


def layout_module(spec: DatasetSpec) -> ModuleType:
    """The module that scans folders of ``spec``'s layout (has ``SUBSETS``, ``looks_like`` and ``scan``)."""
    return _MODULES[spec.name]


def dataset_folder(root: str | os.PathLike) -> Path:
    """``root`` as a path, checked to be an existing folder (:class:`InputError` otherwise)."""
    folder = Path(root)
    if not folder.exists():
        raise InputError(f"{folder}: dataset folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the dataset's root folder")
    return folder


def detect(root: str | os.PathLike) -> DatasetSpec:
    """Recognise the layout of a dataset folder.

    Args:
        root: the dataset folder.

    Returns:
        The layout's spec (for nnU-Net, read from ``dataset.json``).

    Raises:
        InputError: the folder does not exist, matches no accepted layout (the message lists them), or
            matches more than one (for example BraTS 2021 and 2023 case folders side by side).
    """
    folder = dataset_folder(root)
    if nnunet.looks_like(folder):
        return nnunet.read_spec(folder)
    candidates = (TRANSUNET, SYNAPSE, BRATS2021, BRATS2023)
    matches = [spec for spec in candidates if layout_module(spec).looks_like(folder, spec)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"{folder}: no known dataset layout found; {ACCEPTED_LAYOUTS}")
    names = ", ".join(spec.name for spec in matches)
    raise InputError(f"{folder}: looks like several layouts at once ({names}); keep one dataset per folder "
                     "or name the layout explicitly")


def resolve_spec(root: str | os.PathLike, spec: DatasetSpec | str | None) -> DatasetSpec:
    """The spec to read ``root`` with: detected, given, or named.

    Args:
        root: the dataset folder.
        spec: ``None`` to detect; a layout name (``"nnunet"`` reads ``ROOT/dataset.json``); or a spec.

    Returns:
        The spec.

    Raises:
        ConfigError: unknown layout name.
        InputError: see :func:`detect` and :func:`medseg.data.nnunet.read_spec`.
    """
    if isinstance(spec, DatasetSpec):
        return spec
    if spec is None:
        return detect(root)
    if spec not in LAYOUT_NAMES:
        raise unknown_choice("dataset layout", spec, LAYOUT_NAMES)
    if spec == "nnunet":
        return nnunet.read_spec(dataset_folder(root))
    return builtin_spec(spec)

