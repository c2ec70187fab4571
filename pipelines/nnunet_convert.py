"""``medseg convert --to nnunet``: write any dataset medseg reads in nnU-Net v2's raw format.

Output, under ``OUT/DatasetXXX_Name``::

    dataset.json                 channel_names, labels, numTraining, file_ending (+ regions_class_order)
    imagesTr/CASE_0000.nii.gz    one file per modality, in medseg's modality order
    labelsTr/CASE.nii.gz
    imagesTs/CASE_0000.nii.gz    unlabelled cases (Synapse ``Testing``, BraTS folders without seg files)

Images that are already ``.nii.gz`` are copied byte for byte (their geometry cannot change); other images
and every label map are written with :func:`medseg.io.save_like` and the source file's geometry.

Label conventions (nnU-Net wants consecutive values ``0..N``):

* BraTS 2021 follows nnU-Net's own conversion (``Dataset137_BraTS21``): 2 (oedema) -> 1, 1 (necrotic
  core) -> 2, 4 (enhancing) -> 3, declared as regions ``whole tumor [1, 2, 3]``, ``tumor core [2, 3]``,
  ``enhancing tumor [3]`` with ``regions_class_order [1, 2, 3]``. BraTS 2023 (enhancing = 3) gets the
  same nnU-Net values, so models trained on either release read each other's conversions.
* Synapse keeps its 13 organ values; nnU-Net raw datasets keep theirs.

``dataset.json`` also records the source layout and the nnU-Net -> source value table under
:data:`SOURCE_RECORD_KEY` (nnU-Net ignores unknown keys and copies ``dataset.json`` into its results
folders), so that ``medseg segment`` can write predictions back in the source convention.

TransUNet's preprocessed folders are refused: their ``.npz`` slices and ``.npy.h5`` volumes carry no
voxel spacing or orientation, and their intensities are already clipped and rescaled; convert the raw
Synapse data instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data import TRANSUNET, DatasetSpec, detect, scan_dataset
from medseg.data.scan import CaseFiles
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io import CASE_AFFINE_ATOL, atomic_write, atomic_write_text, load_volume, read_geometry, save_like

NNUNET_FILE_ENDING = ".nii.gz"
SOURCE_RECORD_KEY = "medseg_source"
"""dataset.json key holding ``{"layout": ..., "nnunet_to_source": {"1": 2, ...}}``."""

# nnU-Net's BraTS region declaration (Dataset137_BraTS21), in its nnU-Net label values.
NNUNET_BRATS_LABELS: Mapping[str, object] = {
    "background": 0,
    "whole tumor": [1, 2, 3],
    "tumor core": [2, 3],
    "enhancing tumor": [3],
}
NNUNET_BRATS_REGIONS_CLASS_ORDER: tuple[int, ...] = (1, 2, 3)
# source value -> nnU-Net value; oedema first, then necrotic core, then enhancing tumour.
BRATS_TO_NNUNET: Mapping[str, Mapping[int, int]] = {
    "brats2021": {0: 0, 2: 1, 1: 2, 4: 3},
    "brats2023": {0: 0, 2: 1, 1: 2, 3: 3},
}
# nnU-Net picks CT normalisation for a channel named "CT" (any case); every other name gets z-scoring.
CHANNEL_NAMES: Mapping[str, str] = {
    "t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "Flair",
    "t1n": "T1", "t1c": "T1C", "t2w": "T2W", "t2f": "T2F",
    "ct": "CT",
}
DEFAULT_NAMES: Mapping[str, str] = {
    "brats2021": "BraTS2021", "brats2023": "BraTS2023", "synapse": "Synapse", "nnunet": "Converted",
}
TRANSUNET_REFUSAL = (
    "TransUNet's preprocessed Synapse folders cannot be converted to nnU-Net: the .npz slices and .npy.h5 volumes "
    "carry no voxel spacing or orientation and are already intensity-rescaled; convert the raw Synapse folder "
    "(RawData/Training/img, label) instead"
)
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class LabelPlan:
    """How a layout's label maps become nnU-Net label maps.

    Attributes:
        labels: dataset.json ``labels`` (name -> value, or list of values for a region).
        to_nnunet: source value -> nnU-Net value (identity for layouts whose values are already consecutive).
        regions_class_order: dataset.json ``regions_class_order`` for region-based datasets, else ``None``.
    """

    labels: dict[str, object]
    to_nnunet: dict[int, int]
    regions_class_order: tuple[int, ...] | None = None


def label_plan(spec: DatasetSpec, source_json: Mapping[str, object] | None = None) -> LabelPlan:
    """The label conversion for a dataset layout.

    Args:
        spec: the source layout (``medseg.data.detect``).
        source_json: the source ``dataset.json`` for nnU-Net inputs (its labels are kept as they are).

    Returns:
        The label plan.

    Raises:
        InputError: TransUNet's preprocessed layout, or labels nnU-Net cannot use (not consecutive from 0).
    """
    if spec.name == TRANSUNET.name:
        raise InputError(TRANSUNET_REFUSAL)
    if spec.name in BRATS_TO_NNUNET:
        return LabelPlan(
            labels={k: (list(v) if isinstance(v, list) else v) for k, v in NNUNET_BRATS_LABELS.items()},
            to_nnunet=dict(BRATS_TO_NNUNET[spec.name]),
            regions_class_order=NNUNET_BRATS_REGIONS_CLASS_ORDER,
        )
    if spec.name == "nnunet" and source_json is not None:
        labels = dict(source_json["labels"])  # validated by medseg.data.nnunet.read_spec
        order = source_json.get("regions_class_order")
        values = sorted(spec.allowed_labels)
        return LabelPlan(labels=labels, to_nnunet={v: v for v in values},
                         regions_class_order=tuple(order) if order is not None else None)
    values = sorted(spec.labels)
    if values != list(range(len(values))):
        raise InputError(f"{spec.name}: label values {values} are not consecutive from 0, as nnU-Net requires")
    return LabelPlan(labels={name: value for value, name in sorted(spec.labels.items())},
                     to_nnunet={v: v for v in values})


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_Name``.

    Args:
        dataset_id: 1..999.
        name: letters, digits, ``_`` and ``-``.

    Raises:
        ConfigError: an id outside 1..999 or a name with other characters.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ConfigError(f"dataset id must be an integer in 1..999 (nnU-Net's DatasetXXX), got {dataset_id!r}")
    if not _DATASET_NAME.match(name):
        raise ConfigError(f"dataset name {name!r} may hold only letters, digits, '_' and '-', starting with a letter "
                          "or digit")
    return f"Dataset{dataset_id:03d}_{name}"


def _relabel(array: np.ndarray, to_nnunet: Mapping[int, int], path: Path) -> np.ndarray:
    values = np.unique(array)
    unknown = [v.item() for v in values if v != np.round(v) or int(v) not in to_nnunet]
    if unknown:
        raise InputError(f"{path}: label values {unknown} are not in this layout's convention "
                         f"(allowed: {sorted(to_nnunet)})")
    if all(k == v for k, v in to_nnunet.items()):
        return array.astype(np.uint8 if max(to_nnunet) <= 255 else np.uint16)
    table = np.zeros(max(to_nnunet) + 1, dtype=np.uint8)
    for source, target in to_nnunet.items():
        table[source] = target
    return table[array.astype(np.intp)]


def _copy_image(source: Path, target: Path) -> None:
    if source.name.endswith(NNUNET_FILE_ENDING):
        read_geometry(source)  # refuse truncated or non-3D files before copying them
        with atomic_write(target) as tmp:
            shutil.copyfile(source, tmp)
        return
    volume = load_volume(source)
    save_like(volume.array, volume.geometry, target, kind="image")


def _check_case_grid(case: CaseFiles) -> None:
    paths = [*case.images, *([case.label] if case.label is not None else [])]
    first = read_geometry(paths[0])
    for path in paths[1:]:
        other = read_geometry(path)
        if not first.matches(other, atol=CASE_AFFINE_ATOL):
            raise GeometryError(f"case {case.case_id}: {path} is not on the voxel grid of {paths[0]} "
                                f"({'; '.join(first.differences(other, atol=CASE_AFFINE_ATOL))}); "
                                "nnU-Net needs every modality and the label on one grid")


def _write_case(case: CaseFiles, images_dir: Path, labels_dir: Path | None, plan: LabelPlan) -> None:
    if labels_dir is None:
        case = CaseFiles(case_id=case.case_id, images=case.images, label=None, group=case.group)
    _check_case_grid(case)
    for channel, source in enumerate(case.images):
        _copy_image(source, images_dir / f"{case.case_id}_{channel:04d}{NNUNET_FILE_ENDING}")
    if labels_dir is not None and case.label is not None:
        label = load_volume(case.label)
        save_like(_relabel(label.array, plan.to_nnunet, case.label), label.geometry,
                  labels_dir / f"{case.case_id}{NNUNET_FILE_ENDING}", kind="label")


def _cases(root: Path, spec: DatasetSpec) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """(training cases with labels, test or unlabelled cases), with their files checked to exist.

    Test-subset cases (Synapse ``Testing``, nnU-Net ``imagesTs``) stay test cases even when labelled.
    """
    labelled: list[CaseFiles] = []
    unlabelled: list[CaseFiles] = []
    subsets = ("train",) if spec.name.startswith("brats") else ("train", "test")
    for subset in subsets:
        for case in scan_dataset(root, spec, subset).cases:
            training = subset == "train" and case.label is not None
            files = (*case.images, case.label) if training else case.images
            missing = [p for p in files if p is not None and not p.is_file()]
            if missing:
                raise InputError(f"case {case.case_id}: missing file(s) {', '.join(map(str, missing))}; run "
                                 f"`medseg check {root}` for every problem")
            (labelled if training else unlabelled).append(case)
    ids = [c.case_id for c in labelled + unlabelled]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise InputError(f"{root}: case ids {repeated} appear in more than one subset")
    if not ids:
        raise InputError(f"{root}: no cases found in the {spec.name} layout")
    return labelled, unlabelled


def _channel_names(modalities: Sequence[str]) -> dict[str, str]:
    return {str(i): CHANNEL_NAMES.get(m.lower(), m) for i, m in enumerate(modalities)}


def convert_to_nnunet(
    dataset_dir: str | os.PathLike, out_root: str | os.PathLike, dataset_id: int, name: str | None = None
) -> Path:
    """Write a dataset in nnU-Net v2's raw format.

    Args:
        dataset_dir: a dataset folder in any layout ``medseg.data`` reads except TransUNet's (BraTS 2021/2023,
            Synapse raw, nnU-Net raw).
        out_root: the folder to create ``DatasetXXX_Name`` in (nnU-Net's ``nnUNet_raw``).
        dataset_id: nnU-Net dataset id, 1..999.
        name: the name after the id; default from the layout (``BraTS2021``, ``BraTS2023``, ``Synapse``).

    Returns:
        The dataset folder written (``out_root/DatasetXXX_Name``).

    Raises:
        ConfigError: invalid id or name.
        InputError: unknown or TransUNet layout, missing files, labels outside the layout's convention, an
            output folder that exists and is not empty, or any id already used in ``out_root``.
        GeometryError: modalities or label of a case on different voxel grids.
    """
    root = Path(dataset_dir)
    spec = detect(root)
    if spec.name == TRANSUNET.name:
        raise InputError(f"{root}: {TRANSUNET_REFUSAL}")
    source_json = None
    if spec.name == "nnunet":
        source_json = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    plan = label_plan(spec, source_json)
    folder_name = dataset_folder_name(dataset_id, name or DEFAULT_NAMES.get(spec.name, spec.name))
    out_root = Path(out_root)
    target = out_root / folder_name
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{target}: exists and is not empty; choose another id or name, or remove it")
    siblings = out_root.glob(f"Dataset{dataset_id:03d}_*") if out_root.is_dir() else []
    taken = sorted(p.name for p in siblings if p != target)
    if taken:
        raise InputError(f"{out_root}: dataset id {dataset_id} is already used by {', '.join(taken)}; nnU-Net "
                         "finds datasets by id, so ids must be unique")
    labelled, unlabelled = _cases(root, spec)
    images_tr, labels_tr, images_ts = target / "imagesTr", target / "labelsTr", target / "imagesTs"
    for folder in (images_tr, labels_tr):
        folder.mkdir(parents=True, exist_ok=True)
    for case in labelled:
        _write_case(case, images_tr, labels_tr, plan)
    if unlabelled:
        images_ts.mkdir(parents=True, exist_ok=True)
        for case in unlabelled:
            _write_case(case, images_ts, None, plan)
    channels = dict(source_json["channel_names"]) if source_json and "channel_names" in source_json else None
    content: dict[str, object] = {
        "channel_names": channels or _channel_names(spec.modalities),
        "labels": plan.labels,
        "numTraining": len(labelled),
        "file_ending": NNUNET_FILE_ENDING,
    }
    if plan.regions_class_order is not None:
        content["regions_class_order"] = list(plan.regions_class_order)
    content["name"] = folder_name
    content["description"] = f"converted by medseg from {spec.description or spec.name}"
    content[SOURCE_RECORD_KEY] = {
        "layout": spec.name,
        "label_convention": spec.label_convention,
        "nnunet_to_source": {str(v): k for k, v in sorted(plan.to_nnunet.items(), key=lambda kv: kv[1])},
    }
    atomic_write_text(target / "dataset.json", json.dumps(content, indent=2) + "\n")
    return target
