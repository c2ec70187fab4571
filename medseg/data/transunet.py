"""TransUNet's preprocessed Synapse layout: 2-D training slices, 3-D test volumes and list files::

    ROOT/train_npz/case0005_slice000.npz      keys image (H, W) float32 in [0, 1], label (H, W) 0..8
    ROOT/test_vol_h5/case0001.npy.h5          datasets image, label: (slices, H, W)
    ROOT/lists/lists_Synapse/train.txt        training slice names, no extension
    ROOT/lists/lists_Synapse/test_vol.txt     test case names
    ROOT/lists/lists_Synapse/all.lst          every case name (not used for indexing)

The list files decide the split, as in TransUNet. Without them, every file in the folder is taken
(and ``check`` reports the missing list). A training case is one slice (``case_id`` is the slice name,
``group`` its volume, e.g. ``case0005``); a test case is one volume.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from medseg.data.scan import DATASET_CASE_ID, CaseFiles, Problem, Scan, visible_entries
from medseg.data.spec import DatasetSpec

SUBSETS: tuple[str, ...] = ("train", "test")
LIST_FOLDER = Path("lists") / "lists_Synapse"

_FOLDER = {"train": "train_npz", "test": "test_vol_h5"}
_SUFFIX = {"train": ".npz", "test": ".npy.h5"}
_LIST = {"train": "train.txt", "test": "test_vol.txt"}
_NAME = {"train": re.compile(r"^(case\d{4})_slice\d{3}$"), "test": re.compile(r"^(case\d{4})$")}
_EXAMPLE = {"train": "case0005_slice012", "test": "case0001"}


def looks_like(root: Path, spec: DatasetSpec | None = None) -> bool:
    """Whether ``root`` has a ``train_npz`` or ``test_vol_h5`` folder."""
    return (root / _FOLDER["train"]).is_dir() or (root / _FOLDER["test"]).is_dir()


def _read_list(path: Path, result: Scan) -> list[str] | None:
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            result.problems.append(Problem(DATASET_CASE_ID, path, f"{path.name} lists {name} more than once"))
        seen.add(name)
    return list(dict.fromkeys(names))


def scan(root: Path, spec: DatasetSpec, subset: str = "train") -> Scan:
    """Read one subset of a TransUNet folder.

    Args:
        root: the dataset folder.
        spec: :data:`~medseg.data.spec.TRANSUNET`.
        subset: ``"train"`` (npz slices listed in ``train.txt``) or ``"test"`` (h5 volumes listed in
            ``test_vol.txt``).

    Returns:
        The cases (each image path is also its label path) and list/folder disagreements.
    """
    result = Scan(root=root, spec=spec, subset=subset)
    folder, suffix = root / _FOLDER[subset], _SUFFIX[subset]
    list_path = root / LIST_FOLDER / _LIST[subset]
    files = {p.name[: -len(suffix)]: p for p in visible_entries(folder) if p.name.endswith(suffix) and p.is_file()}
    for entry in visible_entries(folder):
        if not entry.name.endswith(suffix) or not entry.is_file():
            result.problems.append(
                Problem(entry.name, entry, f"unexpected entry {entry.name} in {folder.name}/ (only *{suffix} files)")
            )
    listed = _read_list(list_path, result)
    if listed is None:
        if files:
            result.problems.append(
                Problem(DATASET_CASE_ID, list_path, f"missing list file {LIST_FOLDER / _LIST[subset]}; "
                        f"TransUNet reads its {subset} cases from it")
            )
        names = sorted(files)
    else:
        names = listed
        for name in sorted(set(files) - set(listed)):
            result.problems.append(
                Problem(name, files[name], f"{files[name].name} is not listed in {_LIST[subset]}")
            )
    for name in names:
        path = folder / f"{name}{suffix}"
        match = _NAME[subset].match(name)
        if not match:
            result.problems.append(
                Problem(name, path, f"{name} does not follow TransUNet's naming (like {_EXAMPLE[subset]})")
            )
        group = match.group(1) if match else name
        result.cases.append(CaseFiles(case_id=name, images=(path,), label=path, group=group))
    result.cases.sort(key=lambda c: c.case_id)
    return result


def _check_arrays(case: CaseFiles, image: np.ndarray, label: np.ndarray, ndim: int, spec: DatasetSpec) -> list[Problem]:
    name = case.images[0].name
    problems = []
    if image.ndim != ndim or label.ndim != ndim:
        problems.append(Problem(case.case_id, case.images[0], f"{name}: image {image.shape} and label {label.shape} "
                                f"must both be {ndim}-D"))
    elif image.shape != label.shape:
        problems.append(Problem(case.case_id, case.images[0], f"{name}: image shape {image.shape} differs from "
                                f"label shape {label.shape}"))
    if image.dtype.kind != "f":
        problems.append(Problem(case.case_id, case.images[0], f"{name}: image dtype {image.dtype}, expected float"))
    elif not np.all(np.isfinite(image)):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        problems.append(Problem(case.case_id, case.images[0], f"{name}: {bad} non-finite image value(s)"))
    elif image.size and (image.min() < 0.0 or image.max() > 1.0):
        problems.append(Problem(case.case_id, case.images[0], f"{name}: image values {image.min():g}..{image.max():g} "
                                "outside [0, 1] (TransUNet clips CT to [-125, 275] HU and scales to [0, 1])"))
    if label.dtype.kind not in "biuf" or (label.dtype.kind == "f" and not np.all(np.isfinite(label))):
        problems.append(Problem(case.case_id, case.images[0], f"{name}: label is not numeric and finite"))
        return problems
    values = np.unique(label)
    bad_values = [v.item() for v in values if v != np.round(v) or int(v) not in spec.allowed_labels]
    if bad_values:
        allowed = ", ".join(str(v) for v in sorted(spec.allowed_labels))
        problems.append(Problem(case.case_id, case.images[0], f"{name}: label values {bad_values} not allowed "
                                f"in {spec.name} (allowed: {allowed})"))
    return problems


def check_case(case: CaseFiles, spec: DatasetSpec) -> list[Problem]:
    """Open one slice (``.npz``) or volume (``.npy.h5``) and check its arrays.

    Args:
        case: from :func:`scan`.
        spec: :data:`~medseg.data.spec.TRANSUNET`.

    Returns:
        Problems: missing or unreadable file, missing ``image``/``label`` arrays, wrong dimensions or
        shapes, non-float or non-finite images, values outside [0, 1], labels outside 0..8.
    """
    path = case.images[0]
    if not path.is_file():
        return [Problem(case.case_id, path, f"missing file {path.name}")]
    try:
        if path.name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in ("image", "label") if key not in data.files]
                if missing:
                    return [Problem(case.case_id, path, f"{path.name}: no {' or '.join(missing)} array "
                                    f"(has {', '.join(data.files) or 'nothing'})")]
                image, label = data["image"], data["label"]
            return _check_arrays(case, image, label, 2, spec)
        import h5py

        with h5py.File(path, "r") as handle:
            missing = [key for key in ("image", "label") if key not in handle]
            if missing:
                return [Problem(case.case_id, path, f"{path.name}: no {' or '.join(missing)} dataset "
                                f"(has {', '.join(handle.keys()) or 'nothing'})")]
            image, label = handle["image"][()], handle["label"][()]
        return _check_arrays(case, np.asarray(image), np.asarray(label), 3, spec)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return [Problem(case.case_id, path, f"cannot read {path.name}: {exc}")]


def cross_subset_problems(train: Scan, test: Scan) -> list[Problem]:
    """Volumes that appear both as training slices and as a test volume (a leak between the sets)."""
    shared = sorted({c.group for c in train.cases} & {c.group for c in test.cases})
    return [Problem(group, None, f"{group} is both a training volume (train.txt) and a test volume "
                    "(test_vol.txt)") for group in shared]
