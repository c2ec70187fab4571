"""Turn a dataset folder into MONAI-style case dictionaries."""

from __future__ import annotations

import os

from medseg.data.detection import dataset_folder, layout_module, resolve_spec
from medseg.data.scan import SUBSETS, Scan
from medseg.data.spec import TRANSUNET, DatasetSpec
from medseg.errors import InputError, unknown_choice

_SHOWN_MISSING = 5


def scan_dataset(root: str | os.PathLike, spec: DatasetSpec | str | None = None, subset: str = "train") -> Scan:
    """Scan one subset of a dataset folder without opening any file.

    Args:
        root: the dataset folder.
        spec: ``None`` to detect the layout, a layout name, or a spec.
        subset: ``"train"`` or ``"test"`` (BraTS folders have only ``"train"``).

    Returns:
        The scan: expected files per case and structural problems.

    Raises:
        ConfigError: unknown subset or layout name, or a subset the layout does not have.
        InputError: missing folder or unrecognised layout.
    """
    if subset not in SUBSETS:
        raise unknown_choice("subset", subset, SUBSETS)
    folder = dataset_folder(root)
    spec = resolve_spec(folder, spec)
    return layout_module(spec).scan(folder, spec, subset)


def index(root: str | os.PathLike, spec: DatasetSpec | str | None = None, subset: str = "train") -> list[dict]:
    """List the cases of a dataset as MONAI-style dictionaries.

    Volume layouts (BraTS, Synapse raw, nnU-Net) give
    ``{"image": [one path per modality, in spec.modalities order], "label": path or None, "case_id": id}``.
    TransUNet gives one dictionary per training slice,
    ``{"image": "train_npz/case0005_slice012.npz", "label": same path, "case_id": "case0005_slice012",
    "group": "case0005"}`` (the ``.npz`` holds arrays ``image`` and ``label``), and one per test volume
    (``.npy.h5`` with datasets ``image`` and ``label``, ``group`` equal to ``case_id``). Paths are
    strings. Stray files are ignored here; ``check`` reports them.

    Args:
        root: the dataset folder.
        spec: ``None`` to detect the layout, a layout name, or a spec.
        subset: ``"train"`` (labelled training cases) or ``"test"`` (Synapse ``Testing``, nnU-Net
            ``imagesTs``, TransUNet ``test_vol.txt``); BraTS folders are one set, ``"train"``.

    Returns:
        The cases sorted by ``case_id``.

    Raises:
        InputError: unrecognised layout, no cases, or expected files missing (the first few are named;
            ``medseg check`` lists them all).
        ConfigError: unknown subset or layout name.
    """
    scan = scan_dataset(root, spec, subset)
    if not scan.cases:
        raise InputError(f"{scan.root}: no {subset} cases found in the {scan.spec.name} layout")
    expected = [path for case in scan.cases for path in (*case.images, case.label) if path is not None]
    missing = [path for path in expected if not path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:_SHOWN_MISSING])
        more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
        raise InputError(f"{scan.root}: {len(missing)} expected file(s) missing: {shown}{more}; "
                         f"run `medseg check {scan.root}` for every problem")
    entries = []
    for case in scan.cases:
        if scan.spec.name == TRANSUNET.name:
            entries.append({"image": str(case.images[0]), "label": str(case.label), "case_id": case.case_id,
                            "group": case.group})
        else:
            entries.append({"image": [str(p) for p in case.images],
                            "label": None if case.label is None else str(case.label), "case_id": case.case_id})
    return entries
