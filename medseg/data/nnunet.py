"""nnU-Net v2 raw dataset layout::

    ROOT/dataset.json               channel_names, labels, numTraining, file_ending
    ROOT/imagesTr/CASE_0000.nii.gz  one file per channel, channel index in four digits
    ROOT/labelsTr/CASE.nii.gz
    ROOT/imagesTs/CASE_0000.nii.gz  (optional; labelsTs optional)

``labels`` maps names to values (``{"background": 0, "tumour": 1}``); region-based datasets map region
names to lists of values (``{"background": 0, "whole tumour": [1, 2, 3], ...}``), and label files then
hold the plain values that appear in those lists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.data.scan import DATASET_CASE_ID, CaseFiles, Problem, Scan, visible_entries
from medseg.data.spec import DatasetSpec
from medseg.errors import InputError

SUBSETS: tuple[str, ...] = ("train", "test")
DATASET_JSON = "dataset.json"
_FOLDERS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def looks_like(root: Path, spec: DatasetSpec | None = None) -> bool:
    """Whether ``root`` has a ``dataset.json`` file and an ``imagesTr`` folder."""
    return (root / DATASET_JSON).is_file() and (root / "imagesTr").is_dir()


def _label_value(name: str, value: object, path: Path) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise InputError(f"{path}: label {name!r} must be a non-negative integer or a list of them, got {value!r}")
    return tuple(values)


def read_spec(root: Path) -> DatasetSpec:
    """Build the spec of an nnU-Net raw dataset from its ``dataset.json``.

    Args:
        root: the dataset folder (e.g. ``nnUNet_raw/Dataset001_BrainTumour``).

    Returns:
        A spec named ``"nnunet"``: modalities from ``channel_names`` (or the older ``modality``) in
        channel order, labels and (for region-based datasets) regions from ``labels``, and ``file_ending``.

    Raises:
        InputError: ``dataset.json`` missing, not JSON, or without valid ``channel_names``, ``labels``
            or ``file_ending``.
    """
    path = root / DATASET_JSON
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not found; an nnU-Net raw dataset needs a dataset.json") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(content, dict):
        raise InputError(f"{path}: must hold a JSON object with channel_names, labels and file_ending")
    channels = content.get("channel_names", content.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{path}: 'channel_names' must map channel indices to names, e.g. {{\"0\": \"CT\"}}")
    try:
        order = sorted(int(k) for k in channels)
    except ValueError as exc:
        raise InputError(f"{path}: channel_names keys must be integers 0, 1, ..., got {list(channels)}") from exc
    if order != list(range(len(order))):
        raise InputError(f"{path}: channel_names keys must be 0..{len(order) - 1} without gaps, got {order}")
    modalities = tuple(str(channels[str(i)]) for i in order)
    labels_json = content.get("labels")
    if not isinstance(labels_json, dict) or not labels_json:
        raise InputError(f"{path}: 'labels' must map label names to values, e.g. {{\"background\": 0, \"organ\": 1}}")
    parsed = {name: _label_value(name, value, path) for name, value in labels_json.items()}
    region_based = any(isinstance(v, list) for v in labels_json.values()) or "regions_class_order" in content
    ending = content.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(f"{path}: 'file_ending' must be a suffix such as \".nii.gz\", got {ending!r}")
    if region_based:
        values = sorted({v for vs in parsed.values() for v in vs} | {0})
        names_of = {vs[0]: name for name, vs in parsed.items() if len(vs) == 1}
        labels = {v: names_of.get(v, f"label {v}") for v in values}
        regions = {name: vs for name, vs in parsed.items() if vs != (0,)}
    else:
        labels = {vs[0]: name for name, vs in parsed.items()}
        regions = {}
    if 0 not in labels:
        raise InputError(f"{path}: 'labels' must give background the value 0, got {labels_json}")
    described = (f"{name} {list(v) if len(v) > 1 else v[0]}" for name, v in parsed.items())
    convention = "nnU-Net labels: " + ", ".join(described)
    return DatasetSpec(
        name="nnunet",
        modalities=modalities,
        labels=labels,
        label_convention=convention,
        region_based=region_based,
        regions=regions,
        file_ending=ending,
        description=str(content.get("name", root.name)),
    )


def scan(root: Path, spec: DatasetSpec, subset: str = "train") -> Scan:
    """Read one subset of an nnU-Net raw dataset.

    Args:
        root: the dataset folder.
        spec: from :func:`read_spec`.
        subset: ``"train"`` (``imagesTr``/``labelsTr``) or ``"test"`` (``imagesTs``, labels from
            ``labelsTs`` when it exists).

    Returns:
        The cases (from the channel files present) and stray files, labels without images, channel
        indices beyond ``channel_names``, and a ``numTraining`` that does not match.
    """
    result = Scan(root=root, spec=spec, subset=subset)
    image_folder, label_folder = (root / name for name in _FOLDERS[subset])
    ending = spec.file_ending
    channel_file = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    n_channels = len(spec.modalities)
    case_ids: set[str] = set()
    for entry in visible_entries(image_folder):
        match = channel_file.match(entry.name)
        if not match or not entry.is_file():
            result.problems.append(Problem(entry.name, entry, f"unexpected entry {entry.name} in {image_folder.name}/ "
                                           f"(images are named CASE_0000{ending})"))
            continue
        case_id, channel = match.group(1), int(match.group(2))
        if channel >= n_channels:
            result.problems.append(Problem(case_id, entry, f"{entry.name}: channel {channel} beyond the "
                                           f"{n_channels} channel(s) in {DATASET_JSON} ({', '.join(spec.modalities)})"))
        case_ids.add(case_id)
    labelled = subset == "train" or label_folder.is_dir()
    for case_id in sorted(case_ids):
        images = tuple(image_folder / f"{case_id}_{c:04d}{ending}" for c in range(n_channels))
        label = label_folder / f"{case_id}{ending}" if labelled else None
        result.cases.append(CaseFiles(case_id=case_id, images=images, label=label, group=case_id))
    for entry in visible_entries(label_folder):
        if not entry.name.endswith(ending) or not entry.is_file():
            result.problems.append(Problem(entry.name, entry, f"unexpected entry {entry.name} in {label_folder.name}/ "
                                           f"(labels are named CASE{ending})"))
        elif entry.name[: -len(ending)] not in case_ids:
            case_id = entry.name[: -len(ending)]
            result.problems.append(Problem(case_id, entry, f"label {entry.name} has no images in {image_folder.name}/"))
    if subset == "train":
        declared = _num_training(root)
        if declared is not None and declared != len(result.cases):
            result.problems.append(Problem(DATASET_CASE_ID, root / DATASET_JSON, f"{DATASET_JSON} says numTraining "
                                           f"{declared} but imagesTr holds {len(result.cases)} case(s)"))
    return result


def _num_training(root: Path) -> int | None:
    try:
        value = json.loads((root / DATASET_JSON).read_text(encoding="utf-8")).get("numTraining")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None
