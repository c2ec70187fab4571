"""Evaluate predicted label maps against reference label maps: pair the files, compute, write tables.

Pairing (see docs/evaluation.md): ``prediction`` and ``reference`` are both files (one case) or both folders.
In a folder, every ``.nii``/``.nii.gz`` file below it is a candidate (hidden files and folders are skipped);
when some candidates end in ``_seg``/``-seg`` (BraTS layouts, where the images sit beside the labels) only
those count. The case id of a file is its name without the extension, without a ``_seg``/``-seg`` suffix,
and for the Synapse names ``imgNNNN``/``labelNNNN`` just the digits ``NNNN``. Predictions and references
pair by case id; a reference without prediction and a prediction without reference are errors that list
the cases, unless ``missing="empty"`` scores a missing prediction as an empty one.

TransUNet's test volumes (``case0001.npy.h5``) count as label files too: their ``label`` dataset is read
(``medseg.io.load_volume(path, dataset="label")``, identity geometry), so ``medseg segment``'s
``case0001.nii.gz`` pairs with ``case0001.npy.h5``. Distances are then in voxels (1 mm), as in TransUNet.

Every pair must share a geometry (shape and affine): nothing is resampled. The spacing comes from the
reference header. Results are written only after every case has been evaluated, atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.data.spec import BUILTIN_SPECS, DatasetSpec
from medseg.errors import ConfigError, InputError, unknown_choice
from medseg.io import Volume, atomic_write_text, is_transunet_h5_path, load_volume, transunet_h5_stem
from medseg.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    METRIC_NAMES,
    SUMMARY_COLUMNS,
    check_convention,
    check_label_map,
    check_tolerance,
    evaluate_case,
    normalise_regions,
    summarise,
)

#: ``--dataset`` values: the built-in layouts, and ``"brats"`` which tells 2021 from 2023 per case.
DATASET_CHOICES: tuple[str, ...] = ("brats", *BUILTIN_SPECS)
#: What to do with a reference case that has no prediction.
MISSING_POLICIES: tuple[str, ...] = ("error", "empty")
#: Columns of the per-case CSV, in order.
CASE_COLUMNS: tuple[str, ...] = ("case", "region", *METRIC_NAMES, "prediction_missing")
#: Metrics shown in the printed summary table.
TABLE_METRICS: tuple[str, ...] = ("dice", "hd95", "nsd", "precision", "recall")

_SEG_SUFFIX = re.compile(r"[_-]seg$", re.IGNORECASE)
_SYNAPSE_NAME = re.compile(r"^(?:img|label)(\d+)$", re.IGNORECASE)
_BRATS_ENHANCING = {"brats2021": 4, "brats2023": 3}


@dataclass(frozen=True)
class EvaluationSettings:
    """What to evaluate and how.

    Args:
        labels: region name -> label value(s); exclusive with ``dataset``.
        dataset: one of :data:`DATASET_CHOICES`; its regions (BraTS TC/WT/ET) or organ labels are evaluated
            and every label value in the files must belong to it.
        convention: empty-mask convention, ``"brats"`` or ``"nnunet"`` (see :mod:`medseg.metrics.binary`).
        nsd_tolerance_mm: tolerance of the normalised surface Dice, in mm.
        missing: ``"error"`` (a reference without prediction is an error) or ``"empty"`` (scored as an
            empty prediction and flagged in the ``prediction_missing`` column).
    """

    labels: Mapping[str, int | tuple[int, ...]] | None = None
    dataset: str | None = None
    convention: str = "brats"
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    missing: str = "error"

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.dataset is None):
            raise ConfigError("give either label regions (--labels) or a dataset (--dataset), not both or neither")
        if self.dataset is not None and self.dataset not in DATASET_CHOICES:
            raise unknown_choice("dataset", self.dataset, DATASET_CHOICES)
        if self.labels is not None:
            object.__setattr__(self, "labels", normalise_regions(self.labels))
        check_convention(self.convention)
        object.__setattr__(self, "nsd_tolerance_mm", check_tolerance(self.nsd_tolerance_mm))
        if self.missing not in MISSING_POLICIES:
            raise unknown_choice("missing-prediction policy", self.missing, MISSING_POLICIES)


@dataclass(frozen=True)
class CasePair:
    """One case to evaluate.

    Args:
        case_id: the case identifier (see the module docstring).
        reference: the reference label file.
        prediction: the predicted label file, or ``None`` when it is missing (``missing="empty"``).
    """

    case_id: str
    reference: Path
    prediction: Path | None


@dataclass
class EvaluationResult:
    """Per-case rows, their summary, and what produced them.

    Args:
        rows: one row per case and region with the keys of :data:`CASE_COLUMNS`.
        summary: one row per region and metric with the keys of ``SUMMARY_COLUMNS``.
        regions: the regions evaluated, name -> label values (for ``dataset="brats"`` the release found).
        settings: the settings, as given.
        dataset: the dataset layout used, or ``None`` with explicit labels. ``"brats"`` is resolved to
            ``"brats2021"`` or ``"brats2023"`` by the enhancing-tumour value found; it stays ``"brats"`` when
            no case holds one (both releases then give the same masks).
        sources: ``{"prediction": ..., "reference": ...}``, the paths given to :func:`evaluate`.
    """

    rows: list[dict[str, object]]
    summary: list[dict[str, object]]
    regions: dict[str, tuple[int, ...]]
    settings: EvaluationSettings
    dataset: str | None = None
    sources: dict[str, str] = field(default_factory=dict)


def case_id_of(path: str | os.PathLike) -> str:
    """The case id of a label file name (see the module docstring for the rules).

    Args:
        path: a ``.nii``, ``.nii.gz`` or TransUNet ``.npy.h5`` file path.

    Returns:
        For example ``"BraTS2021_00000"`` for ``BraTS2021_00000_seg.nii.gz``, ``"BraTS-GLI-00000-000"`` for
        ``BraTS-GLI-00000-000-seg.nii.gz``, ``"0001"`` for ``label0001.nii.gz`` and ``img0001.nii.gz``,
        ``"case_7"`` for ``case_7.nii.gz``, ``"case0001"`` for ``case0001.npy.h5``.
    """
    stem = _SEG_SUFFIX.sub("", _stem(Path(path)))
    synapse = _SYNAPSE_NAME.match(stem)
    return synapse.group(1) if synapse else stem


def find_label_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The label files below a folder, by case id.

    Args:
        folder: the folder to search (recursively; hidden files and folders are skipped).

    Returns:
        case id -> file, sorted by case id. When any file ends in ``_seg``/``-seg``, only those.

    Raises:
        InputError: if the folder holds no NIfTI or ``.npy.h5`` file, or two files give the same case id.
    """
    root = Path(folder)
    candidates = sorted(
        path
        for path in root.rglob("*")
        if _is_label_file(path)
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not candidates:
        raise InputError(f"{root}: no .nii, .nii.gz or .npy.h5 files found")
    segmentations = [path for path in candidates if _SEG_SUFFIX.search(_stem(path))]
    files: dict[str, Path] = {}
    for path in segmentations or candidates:
        case_id = case_id_of(path)
        if case_id in files:
            raise InputError(
                f"{root}: two files give case id {case_id!r}: {files[case_id].relative_to(root)} and "
                f"{path.relative_to(root)}; keep one"
            )
        files[case_id] = path
    return dict(sorted(files.items()))


def pair_cases(
    prediction: str | os.PathLike, reference: str | os.PathLike, *, missing: str = "error"
) -> list[CasePair]:
    """Pair predictions with references (both files, or both folders), by case id.

    Args:
        prediction: a predicted label file or a folder of them.
        reference: a reference label file or a folder of them.
        missing: ``"error"`` or ``"empty"`` (see :class:`EvaluationSettings`).

    Returns:
        The pairs, sorted by case id.

    Raises:
        InputError: a path is missing, one is a file and the other a folder, a folder holds no label files or
            repeats a case id, references lack predictions (``missing="error"``; the cases are listed), or
            predictions lack references (listed).
    """
    pred_path, ref_path = Path(prediction), Path(reference)
    for what, path in (("prediction", pred_path), ("reference", ref_path)):
        if not path.exists():
            raise InputError(f"{path}: {what} not found")
        if path.is_file() and not _is_label_file(path):
            raise InputError(f"{path}: {what} is not a .nii, .nii.gz or TransUNet .npy.h5 file")
    if pred_path.is_file() and ref_path.is_file():
        return [CasePair(case_id_of(ref_path), ref_path, pred_path)]
    if pred_path.is_file() or ref_path.is_file():
        raise InputError(
            f"prediction {pred_path} and reference {ref_path}: give two files or two folders, not one of each"
        )
    predictions, references = find_label_files(pred_path), find_label_files(ref_path)
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise InputError(
            f"{pred_path}: {len(extra)} prediction(s) without a reference in {ref_path}: {_listing(extra)} "
            "(files pair by case id, see docs/evaluation.md)"
        )
    absent = sorted(set(references) - set(predictions))
    if absent and missing == "error":
        raise InputError(
            f"{pred_path}: no prediction for {len(absent)} reference case(s): {_listing(absent)} "
            "(use --missing empty to score them as empty predictions)"
        )
    return [CasePair(case_id, path, predictions.get(case_id)) for case_id, path in references.items()]


def dataset_regions(dataset: str) -> dict[str, tuple[int, ...]]:
    """The regions evaluated for a built-in dataset layout.

    Args:
        dataset: a name of ``medseg.data.spec.BUILTIN_SPECS``.

    Returns:
        The BraTS regions (``TC``, ``WT``, ``ET``) of a region-based layout, else one region per
        foreground label, named after the structure (``{"spleen": (1,), ...}``).

    Raises:
        ConfigError: for an unknown name.
    """
    if dataset not in BUILTIN_SPECS:
        raise unknown_choice("dataset", dataset, BUILTIN_SPECS)
    spec = BUILTIN_SPECS[dataset]
    if spec.region_based:
        return {name: tuple(values) for name, values in spec.regions.items()}
    return {name: (value,) for value, name in spec.labels.items() if value != 0}


def evaluate_pairs(
    pairs: Sequence[CasePair],
    settings: EvaluationSettings,
    *,
    on_case: Callable[[CasePair], None] | None = None,
) -> EvaluationResult:
    """Evaluate every pair; nothing is written.

    Args:
        pairs: the cases (see :func:`pair_cases`).
        settings: regions or dataset, convention, tolerance.
        on_case: called after each case (for a progress bar).

    Returns:
        The rows, in case order then region order, and their summary.

    Raises:
        GeometryError: a prediction's shape or affine differs from its reference's (both files named).
        InputError: a file cannot be read, is not a 3D label map, or (with a dataset) holds a label value the
            dataset does not have.
    """
    if not pairs:
        raise InputError("no cases to evaluate")
    brats = _BratsRelease() if settings.dataset == "brats" else None
    rows: list[dict[str, object]] = []
    for pair in pairs:
        reference = load_label_volume(pair.reference)
        if pair.prediction is None:
            predicted = np.zeros_like(reference.array)
        else:
            prediction = load_label_volume(pair.prediction)
            prediction.geometry.require_match(
                reference.geometry, f"case {pair.case_id!r}: prediction {pair.prediction} vs reference {pair.reference}"
            )
            predicted = prediction.array
        check_label_map(predicted, f"case {pair.case_id!r}: prediction {pair.prediction}")
        check_label_map(reference.array, f"case {pair.case_id!r}: reference {pair.reference}")
        if brats is not None:
            dataset = brats.observe(pair, predicted, reference.array)
        else:
            dataset = settings.dataset
        if dataset is not None:
            _check_dataset_labels(BUILTIN_SPECS[dataset], pair, predicted, reference.array)
        regions = settings.labels if dataset is None else dataset_regions(dataset)
        for row in evaluate_case(
            predicted,
            reference.array,
            reference.geometry.spacing,
            regions,  # type: ignore[arg-type]
            case_id=pair.case_id,
            nsd_tolerance_mm=settings.nsd_tolerance_mm,
            convention=settings.convention,
        ):
            row["prediction_missing"] = pair.prediction is None
            rows.append(row)
        if on_case is not None:
            on_case(pair)
    # With no enhancing tumour in any case, 2021 and 2023 give the same masks; the 2021 table is reported.
    dataset = (brats.release or "brats") if brats is not None else settings.dataset
    if dataset is None:
        regions = dict(settings.labels)  # type: ignore[arg-type]
    else:
        regions = dataset_regions("brats2021" if dataset == "brats" else dataset)
    return EvaluationResult(rows=rows, summary=summarise(rows), regions=regions, settings=settings, dataset=dataset)


def evaluate(
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
    settings: EvaluationSettings,
    *,
    output: str | os.PathLike | None = None,
    on_case: Callable[[CasePair], None] | None = None,
) -> EvaluationResult:
    """Pair, evaluate and (optionally) write the results: the library form of ``medseg evaluate``.

    Args:
        prediction: a predicted label file or a folder of them.
        reference: a reference label file or a folder of them.
        settings: regions or dataset, convention, tolerance, missing-prediction policy.
        output: the per-case CSV path (``.csv``); the JSON and summary CSV go beside it (see
            :func:`output_paths`). ``None`` writes nothing.
        on_case: called after each case (for a progress bar).

    Returns:
        The result.

    Raises:
        ConfigError: ``output`` does not end in ``.csv``.
        InputError, GeometryError: see :func:`pair_cases` and :func:`evaluate_pairs`; nothing is written then.
    """
    paths = output_paths(output) if output is not None else None
    pairs = pair_cases(prediction, reference, missing=settings.missing)
    result = evaluate_pairs(pairs, settings, on_case=on_case)
    result.sources = {"prediction": str(prediction), "reference": str(reference)}
    if paths is not None:
        write_results(result, paths["cases"])
    return result


def output_paths(output: str | os.PathLike) -> dict[str, Path]:
    """The three files written for an output path ``NAME.csv``.

    Args:
        output: the per-case CSV path; must end in ``.csv``.

    Returns:
        ``{"cases": NAME.csv, "summary": NAME_summary.csv, "json": NAME.json}``.

    Raises:
        ConfigError: if the path does not end in ``.csv`` or is a folder.
    """
    path = Path(output)
    if path.suffix.lower() != ".csv" or path.is_dir():
        raise ConfigError(f"--output {path}: give a file name ending in .csv (the JSON and summary go beside it)")
    return {
        "cases": path,
        "summary": path.with_name(f"{path.stem}_summary.csv"),
        "json": path.with_suffix(".json"),
    }


def write_results(result: EvaluationResult, output: str | os.PathLike) -> dict[str, Path]:
    """Write the per-case CSV, the summary CSV and the JSON (rows, summary, settings), each atomically.

    Args:
        result: what :func:`evaluate_pairs` returned.
        output: the per-case CSV path, ending in ``.csv``.

    Returns:
        The paths written (see :func:`output_paths`).
    """
    paths = output_paths(output)
    atomic_write_text(paths["cases"], _csv_text(result.rows, CASE_COLUMNS))
    atomic_write_text(paths["summary"], _csv_text(result.summary, SUMMARY_COLUMNS))
    document = {
        "medseg_version": __version__,
        "prediction": result.sources.get("prediction"),
        "reference": result.sources.get("reference"),
        "dataset": result.dataset,
        "regions": {name: list(values) for name, values in result.regions.items()},
        "settings": {
            key: value
            for key, value in asdict(result.settings).items()
            if key in ("convention", "nsd_tolerance_mm", "missing")
        },
        "cases": [_json_safe(row) for row in result.rows],
        "summary": [_json_safe(row) for row in result.summary],
    }
    atomic_write_text(paths["json"], json.dumps(document, indent=2, allow_nan=False) + "\n")
    return paths


def format_summary(summary: Iterable[Mapping[str, object]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A plain-text table of the summary: one line per region and metric.

    Args:
        summary: rows of :func:`medseg.metrics.summarise`.
        metrics: which metrics to show.

    Returns:
        The table, columns ``region metric n mean median std``.
    """
    shown = [row for row in summary if row["metric"] in metrics]
    width = max([len("region"), *(len(str(row["region"])) for row in shown)])
    lines = [f"{'region':<{width}}  {'metric':<9} {'n':>5} {'mean':>10} {'median':>10} {'std':>10}"]
    for row in shown:
        stats = " ".join(f"{float(row[key]):>10.4f}" for key in ("mean", "median", "std"))  # type: ignore[arg-type]
        lines.append(f"{row['region']!s:<{width}}  {row['metric']!s:<9} {row['n']:>5} {stats}")
    return "\n".join(lines)


class _BratsRelease:
    """Tells BraTS 2021 from 2023 by the enhancing-tumour value each case holds, and refuses a mix.

    A case with neither 3 nor 4 gives the same TC/WT/ET masks under both releases, so it decides nothing.
    """

    def __init__(self) -> None:
        self.release: str | None = None
        self._first_case = ""

    def observe(self, pair: CasePair, predicted: np.ndarray, reference: np.ndarray) -> str:
        present = _label_values(predicted) | _label_values(reference)
        found = [name for name, value in _BRATS_ENHANCING.items() if value in present]
        if len(found) == 2:
            raise InputError(
                f"case {pair.case_id!r}: holds both 3 and 4, the enhancing-tumour values of BraTS 2023 and 2021 "
                f"({pair.reference}); choose --dataset brats2021 or brats2023"
            )
        if found:
            if self.release is not None and found[0] != self.release:
                raise InputError(
                    f"--dataset brats: case {self._first_case!r} uses {self.release} labels but case "
                    f"{pair.case_id!r} uses {found[0]} labels (enhancing tumour 4 in 2021, 3 in 2023)"
                )
            self.release, self._first_case = found[0], pair.case_id
        return self.release or "brats2021"


def _check_dataset_labels(spec: DatasetSpec, pair: CasePair, predicted: np.ndarray, reference: np.ndarray) -> None:
    allowed = spec.allowed_labels
    for what, path, array in (("prediction", pair.prediction, predicted), ("reference", pair.reference, reference)):
        unknown = sorted(_label_values(array) - allowed)
        if unknown:
            raise InputError(
                f"case {pair.case_id!r}: {what} {path} holds label value(s) {unknown} that {spec.name} does not "
                f"have (valid: {sorted(allowed)}); check --dataset"
            )


def _label_values(array: np.ndarray) -> set[int]:
    """The distinct values of an integer-valued label map (a bincount for small non-negative integers)."""
    if array.size and np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() < 65536:
        return {int(v) for v in np.flatnonzero(np.bincount(array.ravel()))}
    return {int(v) for v in np.unique(array)}


def _csv_text(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row[key]) for key in columns})
    return buffer.getvalue()


def _csv_value(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def _json_safe(row: Mapping[str, object]) -> dict[str, object]:
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def load_label_volume(path: Path) -> Volume:
    """Load a label file: a NIfTI label map, or the ``label`` dataset of a TransUNet ``.npy.h5`` volume.

    Args:
        path: the file.

    Returns:
        The label map ``(I, J, K)`` with its geometry.
    """
    return load_volume(path, dataset="label" if is_transunet_h5_path(path) else None)


def _is_label_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz") or is_transunet_h5_path(path)


def _stem(path: Path) -> str:
    """The file name without ``.nii.gz``, ``.nii``, ``.npy.h5`` or ``.h5`` (any case)."""
    name = path.name
    for extension in (".nii.gz", ".nii"):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return transunet_h5_stem(name) or name


def _listing(case_ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(case_ids[:limit])
    return shown + (f" and {len(case_ids) - limit} more" if len(case_ids) > limit else "")
