"""``medseg segment``: label maps for NIfTI files, case folders, DICOM series or folders of these.

Per case: load (medseg.io, strict), the model's inference preset (orientation, spacing, normalisation,
crop to the foreground box), sliding-window prediction with Gaussian blending, probabilities to labels
(BraTS regions back to labels in the input's convention), inversion onto the input's exact voxel grid,
then an atomic write with the input's geometry, checked before writing. A failing case in a folder run is
reported and skipped; the run's exit code then says so. An out-of-memory error during prediction is retried
with one window per batch, then (on a GPU) on the CPU, with a warning (see :func:`out_of_memory_fallbacks`).
"""

from __future__ import annotations

import dataclasses
import io as _io
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import ModelConfig
from medseg.errors import ConfigError, InputError, MedsegError, unknown_choice
from medseg.pipelines.distributed import DistributedContext
from medseg.pipelines.predictor import InferenceOptions, predict_probabilities
from medseg.pipelines.segment_inputs import SegmentCase, find_cases, safe_case_id

DEVICES = ("auto", "cpu", "cuda")
MAX_WINDOW_VOXELS = 512**3
"""Largest sliding window (voxels) a model config may ask for; more is a damaged or hostile file."""
SEGMENT_NONFINITE = ("reject", "replace")
"""Non-finite voxel policies a segmentation accepts (``"keep"`` would let NaN reach the network)."""


@dataclass(frozen=True)
class SegmentOptions:
    """Options of a segmentation run.

    Attributes:
        inference: window overlap, windows per batch, mirroring TTA and blending.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        keep_largest_component: keep only the largest connected component of each foreground label.
        probabilities: also write class/region probabilities as float16 ``<case>_probabilities.npz``.
        overwrite: replace existing outputs (otherwise an existing output is an error for that case).
        nonfinite: NaN/inf input voxels: ``"reject"`` (the case fails with the counts) or ``"replace"``
            (NaN -> 0, +/-inf -> the largest/smallest finite value, with a warning; see docs/io.md).
        folds: nnU-Net results folders only: the folds to ensemble (``"0"``, ``"1"``, ... or ``"all"``);
            ``None`` takes every fold with a final checkpoint (see docs/nnunet.md).
        allow_irregular: accept DICOM series with missing slices, duplicated positions or gantry tilt (their
            exact, possibly sheared, affine is used); refused by default (see docs/io.md).
    """

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    device: str = "auto"
    keep_largest_component: bool = False
    probabilities: bool = False
    overwrite: bool = True
    nonfinite: str = "reject"
    folds: tuple[str, ...] | None = None
    allow_irregular: bool = False

    def __post_init__(self) -> None:
        if self.nonfinite not in SEGMENT_NONFINITE:
            raise unknown_choice("non-finite policy for segmentation", self.nonfinite, SEGMENT_NONFINITE)


@dataclass
class CaseResult:
    """What happened to one case: ``output`` on success, ``error`` on failure."""

    case_id: str
    output: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    shape: tuple[int, ...] = ()


@dataclass
class SegmentSummary:
    """The results of a run, one per case, and whether the input was a folder of cases."""

    results: list[CaseResult]
    folder_run: bool

    @property
    def failed(self) -> list[CaseResult]:
        """The cases that failed."""
        return [r for r in self.results if r.error is not None]


def _naming_folder(exc: MedsegError, model_dir: str | os.PathLike) -> MedsegError:
    """The same error, its message prefixed with the model folder unless it names it already."""
    if str(model_dir) in str(exc):
        return exc
    return type(exc)(f"model folder {model_dir} (config.json): {exc}")


def check_window(patch_size: list[int], model_dir: str | os.PathLike) -> None:
    """Refuse a sliding window that is missing, not positive or absurdly large (a damaged or hostile config).

    Args:
        patch_size: the model's training patch, used as the window.
        model_dir: the model folder, for the message.

    Raises:
        ConfigError: no window, a size below 1, or more than :data:`MAX_WINDOW_VOXELS` voxels.
    """
    if not patch_size:
        raise ConfigError(f"{model_dir}: config.json has no patch_size (the sliding window)")
    if any(int(n) < 1 for n in patch_size) or math.prod(int(n) for n in patch_size) > MAX_WINDOW_VOXELS:
        raise ConfigError(
            f"{model_dir}: config.json patch_size {list(patch_size)} is not a usable sliding window "
            f"(every size >= 1, at most {MAX_WINDOW_VOXELS} voxels in all)"
        )


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU is an error."""
    if device not in DEVICES:
        raise unknown_choice("device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    return torch.device(device)


class Segmenter:
    """A loaded model and its preprocessing, ready to segment cases one after another.

    Args:
        model_dir: a medseg model folder (``config.json`` + ``weights.safetensors``).
        options: run options.
    """

    def __init__(self, model_dir: str | os.PathLike, options: SegmentOptions | None = None) -> None:
        from medseg.pipelines.inference_preset import inference_preset
        from medseg.pipelines.model_folder import load_model_folder

        self.options = options or SegmentOptions()
        self.device = resolve_device(self.options.device)
        try:
            self.model, self.config = load_model_folder(model_dir, device=self.device)
            self.model.eval()
            check_window(self.config.patch_size, model_dir)
            self.preset = inference_preset(self.config)
        except MedsegError as exc:
            named = _naming_folder(exc, model_dir)
            if named is exc:
                raise
            raise named from exc
        except (TypeError, ValueError) as exc:  # a preset option of the wrong type in config.json
            raise ConfigError(f"{model_dir}: config.json has invalid preprocessing options: {exc}") from exc

    @property
    def modalities(self) -> list[str]:
        """The model's input modalities in channel order."""
        return list(self.config.modalities) or [f"channel{i}" for i in range(self.config.in_channels)]

    def segment_case(self, case: SegmentCase, output_dir: Path) -> CaseResult:
        """Segment one case and write ``<output_dir>/<case_id>.nii.gz``.

        Args:
            case: the case's input files.
            output_dir: the folder to write to (must exist).

        Returns:
            The result with the written path.

        Raises:
            MedsegError: on input, geometry or configuration problems of this case.
        """
        from medseg.io import save_like
        from medseg.transforms import input_geometry, invert_to_input

        start = time.perf_counter()
        target = case_target(case, output_dir, self.options.overwrite)
        volume = self._load(case)
        data = self.preset({"image": volume})
        image = torch.as_tensor(data["image"]).float().to(self.device)
        probs = self._predict(image, case.case_id)
        if not bool(torch.isfinite(probs).all()):
            # NaN probabilities would threshold to an empty mask: fail loudly instead of writing one.
            raise InputError(
                f"case {case.case_id}: the network produced non-finite probabilities; check the input intensities "
                "(medseg info) and the model folder"
            )
        labels = self._to_labels(probs, case)
        labels = invert_to_input(labels, data, kind="label", fill=0)
        if self.options.keep_largest_component:
            labels = keep_largest_components(labels)
        geometry = input_geometry(data)
        save_like(labels, geometry, target, kind="label")
        if self.options.probabilities:
            fill = [1.0] + [0.0] * (probs.shape[0] - 1) if self.config.output_activation == "softmax" else 0.0
            full = invert_to_input(probs.cpu().numpy(), data, kind="probabilities", fill=fill)
            write_probabilities(output_path(output_dir, case.case_id, "_probabilities.npz"), full, self.config, geometry)
        return CaseResult(case.case_id, target, seconds=time.perf_counter() - start, shape=tuple(labels.shape))

    def _predict(self, image: torch.Tensor, case_id: str) -> torch.Tensor:
        """Probabilities ``(C_out, *spatial)`` for one preprocessed case ``(C_in, *spatial)``.

        An out-of-memory error does not end the case: the prediction is retried along
        :func:`out_of_memory_fallbacks` (one window per batch, then the whole case on the CPU), each step
        announced with a ``RuntimeWarning``. Only when the last step also runs out of memory is the error raised.
        """
        steps = out_of_memory_fallbacks(self.options.inference, self.device)
        for index, (_, inference, device) in enumerate(steps[:-1]):
            try:
                return self._predict_on(image, inference, device)
            except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError (torch >= 2.5)
                pass  # leave the except block first, so the failed attempt's tensors can be freed
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(
                f"case {case_id}: out of memory during inference ({steps[index][0]}); "
                f"retrying {steps[index + 1][0]}",
                RuntimeWarning,
                stacklevel=3,
            )
        _, inference, device = steps[-1]
        return self._predict_on(image, inference, device)

    def _predict_on(self, image: torch.Tensor, inference: InferenceOptions, device: torch.device) -> torch.Tensor:
        """One prediction attempt with ``inference`` options on ``device`` (the model comes back afterwards)."""
        moved = device != self.device
        try:
            if moved:
                self.model.to(device)
            return predict_probabilities(
                self.model, image.to(device), self.config.patch_size, self.config.output_activation, inference
            )
        finally:
            if moved:
                self.model.to(self.device)

    def _load(self, case: SegmentCase) -> Any:
        from medseg.io import load_case, load_volume

        n = self.config.in_channels
        load_options = {"nonfinite": self.options.nonfinite, "allow_irregular": self.options.allow_irregular}
        if case.channels_in_file:
            volume = load_volume(case.paths[0], channels=n > 1, **load_options)
            if n == 1:
                volume.array = volume.array[None]
        else:
            names = self.modalities if len(case.paths) == n else None
            volume = load_case(case.paths, names=names, **load_options)
        found = volume.array.shape[0]
        if found != n:
            hint = ""
            if case.channels_in_file and volume.array.shape[1] == n:
                hint = (
                    f"; {case.paths[0].name} is read as (I, J, K, C) = {(*volume.geometry.shape, found)} but its "
                    f"first axis has {n} entries: it looks channels-first. Write 4D files as (I, J, K, C) or give "
                    "one file per modality"
                )
            raise InputError(f"case {case.case_id}: the model needs {n} channels {self.modalities}, got {found}{hint}")
        return volume

    def _to_labels(self, probs: torch.Tensor, case: SegmentCase) -> np.ndarray:
        if self.config.output_activation == "sigmoid":
            from medseg.transforms import regions_to_labels

            convention = case.naming or self.config.dataset
            if convention not in ("brats2021", "brats2023"):
                raise ConfigError(
                    f"sigmoid (region) outputs are converted to labels for BraTS conventions only; model dataset "
                    f"is {self.config.dataset!r}"
                )
            return np.asarray(regions_to_labels(probs.cpu().numpy(), convention)).astype(np.uint8)
        index = torch.argmax(probs, dim=0).cpu().numpy()
        values = np.asarray(self.config.label_values or range(probs.shape[0]))
        dtype = np.uint8 if values.max() <= 255 else np.uint16
        return values[index].astype(dtype)


def out_of_memory_fallbacks(
    inference: InferenceOptions, device: torch.device
) -> list[tuple[str, InferenceOptions, torch.device]]:
    """The ways to run a prediction, tried in order after an out-of-memory error.

    Args:
        inference: the options asked for.
        device: the model's device.

    Returns:
        ``(description, options, device)`` steps: as asked; then with one window per batch (if more were
        asked); then, on a GPU, the model and the whole case on the CPU with one window per batch.
    """
    steps = [("as configured", inference, device)]
    single = dataclasses.replace(inference, batch_size=1)
    if inference.batch_size > 1:
        steps.append(("with one window per batch", single, device))
    if device.type != "cpu":
        steps.append(("with the model and the whole case on the CPU", single, torch.device("cpu")))
    return steps


def output_path(output_dir: Path, case_id: str, suffix: str) -> Path:
    """``output_dir / (case_id + suffix)``, refusing unsafe ids and anything that would land outside ``output_dir``.

    Raises:
        InputError: the id is not a safe file name (see :func:`~medseg.pipelines.segment_inputs.safe_case_id`)
            or the path, symbolic links resolved, would leave ``output_dir``.
    """
    root = output_dir.resolve()
    target = (root / f"{case_id}{suffix}").resolve()
    if target.parent != root:
        raise InputError(f"case id {case_id!r} would write outside the output folder {root}")
    safe_case_id(case_id, output_dir)
    return target


def case_target(case: SegmentCase, output_dir: Path, overwrite: bool) -> Path:
    """The label map path of a case, after the checks every segmenter makes before any work.

    Args:
        case: the case (a folder run records why its files could not be resolved in ``case.problem``).
        output_dir: the output folder.
        overwrite: whether an existing output may be replaced.

    Returns:
        ``output_dir / "<case_id>.nii.gz"``.

    Raises:
        InputError: the case's files could not be resolved, its id would escape ``output_dir``, or its output
            exists and ``overwrite`` is off.
    """
    if case.problem is not None:
        raise InputError(case.problem)
    target = output_path(output_dir, case.case_id, ".nii.gz")
    if target.exists() and not overwrite:
        raise InputError(f"{target}: output exists (pass overwrite to replace it)")
    return target


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep, for every foreground label value, only its largest connected component (26-connectivity in 3D).

    Args:
        labels: label map ``(*spatial)``.

    Returns:
        A new label map; removed voxels become background (0).
    """
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        components, count = ndimage.label(labels == value, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[(components != np.argmax(sizes)) & (labels == value)] = 0
    return out


def write_probabilities(path: Path, probabilities: np.ndarray, config: ModelConfig, geometry: Any) -> Path:
    """Write probabilities ``(C, *spatial)`` as float16 in a compressed ``.npz`` with names and affine, atomically."""
    from medseg.io import atomic_write_bytes

    buffer = _io.BytesIO()
    np.savez_compressed(
        buffer,
        probabilities=probabilities.astype(np.float16),
        class_names=np.asarray(config.class_names or [str(i) for i in range(probabilities.shape[0])]),
        affine=np.asarray(geometry.affine, dtype=np.float64),
    )
    return atomic_write_bytes(path, buffer.getvalue())


def segment(
    input_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    progress: Callable[[CaseResult], None] | None = None,
    distributed: DistributedContext | None = None,
) -> SegmentSummary:
    """Segment every case of ``input_path`` with the model in ``model_dir``.

    Args:
        input_path: a NIfTI file, a case folder, a DICOM series folder, or a folder of these.
        model_dir: a medseg model folder, or an nnU-Net v2 results folder (see docs/nnunet.md).
        output_dir: where ``<case_id>.nii.gz`` files are written (created if needed).
        options: run options.
        progress: called with each case's result as it finishes (this process's cases).
        distributed: in a torchrun job, rank ``r`` of ``N`` segments cases ``r, r + N, ...`` and the results of
            all ranks are gathered (see ``docs/distributed.md``); every rank must call :func:`segment`.

    Returns:
        The summary (of every rank's cases, in folder order). In a folder run, a case that fails is recorded
        with its error and the run goes on.

    Raises:
        MedsegError: for problems with the model, the options or the input path itself, and for the
            failure of a single-case run.
    """
    from medseg.pipelines.nnunet_model import NnunetSegmenter, is_nnunet_model_folder

    if is_nnunet_model_folder(model_dir):
        segmenter = NnunetSegmenter(model_dir, options)
    elif options is not None and options.folds:
        raise ConfigError(f"{model_dir}: folds apply to nnU-Net results folders (plans.json + dataset.json) only")
    else:
        segmenter = Segmenter(model_dir, options)
    cases, folder_run = find_cases(input_path, segmenter.modalities)
    if distributed is not None:
        cases = distributed.shard(cases)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        try:
            result = segmenter.segment_case(case, out)
        except MedsegError as exc:
            if not folder_run:
                raise
            result = CaseResult(case.case_id, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop a folder run
            if not folder_run:
                raise
            result = CaseResult(case.case_id, error=f"{type(exc).__name__}: {exc}")
        results.append(result)
        if progress is not None:
            progress(result)
    if distributed is not None:
        from medseg.pipelines.ddp_segment import gather_summary

        return gather_summary(SegmentSummary(results, folder_run), distributed)
    return SegmentSummary(results, folder_run)
