"""Segment with a trained nnU-Net v2 results folder, through medseg's inputs, predictor and outputs.

A results folder (``nnUNet_results/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres``) holds
``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth``. :class:`NnunetSegmenter` offers the
interface of :class:`medseg.pipelines.segment.Segmenter`:

1. load the case with :mod:`medseg.io` and reorder it as nnU-Net's reader would (``(z, y, x)``);
2. nnU-Net's preprocessing from the plans (:mod:`medseg.pipelines.nnunet_preprocess`);
3. sliding-window logits with nnU-Net's window placement and Gaussian weights
   (:mod:`medseg.pipelines.nnunet_windows`; overlap 0.5 = nnU-Net's step 0.5), averaged over the folds (and
   over the mirrored inputs nnU-Net allows, with ``tta``);
4. logits resampled back to the input grid, then softmax or sigmoid; regions turned into labels by
   ``regions_class_order`` (softmax: argmax); the crop and the transposes undone, and the label map written
   with the input's exact geometry.

Labels are nnU-Net's values, except for datasets converted by ``medseg convert``: their ``dataset.json``
records the source convention, and predictions are written back in it (BraTS 2021 ``1, 2, 3`` ->
``2, 1, 4``). Network and checkpoint loading are restricted as described in
:mod:`medseg.pipelines.nnunet_plans` and :mod:`medseg.pipelines.nnunet_checkpoint`.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.config import ModelConfig
from medseg.errors import ConfigError, InputError
from medseg.pipelines.nnunet_checkpoint import NnunetCheckpoint, load_checkpoint
from medseg.pipelines.nnunet_plans import (
    DATASET_NAME,
    PLANS_NAME,
    NnunetLabels,
    build_network,
    read_labels,
    read_plans,
)
from medseg.pipelines.nnunet_preprocess import (
    from_nnunet_axes,
    preprocess,
    require_nnunet,
    restore_logits,
    to_nnunet_axes,
    uncrop,
)
from medseg.pipelines.nnunet_windows import sliding_window_logits
from medseg.pipelines.predictor import activate
from medseg.pipelines.segment import (
    CaseResult,
    SegmentOptions,
    case_target,
    keep_largest_components,
    output_path,
    resolve_device,
    write_probabilities,
)
from medseg.pipelines.segment_inputs import SegmentCase

CHECKPOINT_NAME = "checkpoint_final.pth"
_FOLD_FOLDER = re.compile(r"^fold_(\d+|all)$")


def is_nnunet_model_folder(path: str | os.PathLike) -> bool:
    """Whether a folder is an nnU-Net v2 results folder.

    Args:
        path: the model folder given to ``medseg segment``.

    Returns:
        ``True`` when it holds ``plans.json`` and ``dataset.json`` side by side.
    """
    folder = Path(path)
    return folder.is_dir() and (folder / PLANS_NAME).is_file() and (folder / DATASET_NAME).is_file()


def available_folds(folder: Path) -> list[str]:
    """The folds of a results folder that have a final checkpoint.

    Args:
        folder: the results folder.

    Returns:
        Fold numbers as strings, sorted (``fold_all`` is not included, as in nnU-Net).
    """
    folds = []
    for entry in folder.iterdir():
        match = _FOLD_FOLDER.match(entry.name)
        if match and match.group(1) != "all" and (entry / CHECKPOINT_NAME).is_file():
            folds.append(match.group(1))
    return sorted(folds, key=int)


def _configuration_name(folder: Path, checkpoint: NnunetCheckpoint) -> str:
    if checkpoint.configuration:
        return checkpoint.configuration
    parts = folder.name.split("__")
    if len(parts) == 3 and all(parts):
        return parts[2]
    raise InputError(f"{checkpoint.path}: names no configuration (init_args) and the folder name {folder.name!r} is "
                     "not TRAINER__PLANS__CONFIGURATION")


class NnunetSegmenter:
    """A trained nnU-Net v2 results folder, ready to segment cases one after another.

    Args:
        model_dir: the results folder (``plans.json``, ``dataset.json``, ``fold_N/checkpoint_final.pth``).
        options: run options; ``options.folds`` picks the folds to ensemble (``None``: every fold with a
            final checkpoint; ``"all"`` names ``fold_all``).

    Raises:
        InputError: missing files or folds, checkpoints that do not fit the plans.
        UnsafeFileError: a checkpoint that would import anything beyond tensors and numpy scalars.
        ConfigError: plans naming components medseg does not implement.
    """

    def __init__(self, model_dir: str | os.PathLike, options: SegmentOptions | None = None) -> None:
        self.folder = Path(model_dir)
        self.options = options or SegmentOptions()
        self.device = resolve_device(self.options.device)
        require_nnunet()
        self.plans = read_plans(self.folder / PLANS_NAME)
        self.labels: NnunetLabels = read_labels(self.folder / DATASET_NAME)
        folds = [str(f) for f in (self.options.folds or available_folds(self.folder))]
        if not folds:
            raise InputError(f"{self.folder}: no fold_N/{CHECKPOINT_NAME}; train at least one fold or point at "
                             "the folder that holds them")
        checkpoints = []
        for fold in folds:
            path = self.folder / f"fold_{fold}" / CHECKPOINT_NAME
            if not path.is_file():
                raise InputError(f"{path}: fold {fold} has no final checkpoint (available folds: "
                                 f"{', '.join(available_folds(self.folder)) or 'none'})")
            checkpoints.append(load_checkpoint(path))
        self.folds = folds
        name = _configuration_name(self.folder, checkpoints[0])
        others = sorted({c.configuration for c in checkpoints if c.configuration not in (None, name)})
        if others:
            raise InputError(f"{self.folder}: the folds were trained with different configurations ({name}, "
                             f"{', '.join(others)}); ensemble folds of one configuration")
        self.configuration = self.plans.configuration(name)
        in_channels = len(self.labels.channel_names)
        if len(self.configuration.normalization_schemes) != in_channels:
            raise InputError(f"{self.plans.path}: {len(self.configuration.normalization_schemes)} normalization "
                             f"schemes for {in_channels} channels in {DATASET_NAME}")
        self.network = build_network(self.configuration, in_channels, self.labels.num_heads, str(self.plans.path))
        self.weights = []
        for checkpoint in checkpoints:
            try:
                self.network.load_state_dict(checkpoint.weights)
            except RuntimeError as exc:
                raise InputError(f"{checkpoint.path}: weights do not fit the {self.configuration.name} network of "
                                 f"{self.plans.path} (trainer {checkpoint.trainer_name!r}): {exc}") from exc
            self.weights.append(checkpoint.weights)
        self.network.to(self.device).eval()
        self.mirroring_axes = checkpoints[0].mirroring_axes
        self.config = self._model_config()

    def _model_config(self) -> ModelConfig:
        """A :class:`ModelConfig` describing the model, for records and probability files."""
        regions = self.labels.regions
        return ModelConfig(
            network=f"nnunet:{self.configuration.network_class_name.rpartition('.')[2]}",
            spatial_dims=self.configuration.spatial_dims,
            in_channels=len(self.labels.channel_names),
            out_channels=self.labels.num_heads,
            modalities=list(self.labels.channel_names),
            dataset="nnunet",
            output_activation="sigmoid" if self.labels.region_based else "softmax",
            class_names=list(self.labels.head_names),
            label_values=list(self.labels.label_values),
            regions={k: list(v) for k, v in regions.items()} if regions is not None else None,
            patch_size=list(self.configuration.patch_size),
        )

    @property
    def modalities(self) -> list[str]:
        """The input channel names in order (``channel_names`` of ``dataset.json``)."""
        return list(self.labels.channel_names)

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

        start = time.perf_counter()
        target = case_target(case, output_dir, self.options.overwrite)
        volume = self._load(case)
        data, spacing, change = to_nnunet_axes(volume.array, volume.geometry, self.plans.reader)
        prepared = preprocess(data, spacing, self.plans, self.configuration)
        logits = restore_logits(self._predict_logits(prepared.data), prepared, self.configuration)
        probabilities = self._activate(logits)
        del logits
        labels = from_nnunet_axes(self._transpose_back(uncrop(self._to_labels(probabilities), prepared, 0)), change)
        if self.options.keep_largest_component:
            labels = keep_largest_components(labels)
        save_like(labels, volume.geometry, target, kind="label")
        if self.options.probabilities:
            heads = probabilities.shape[0]
            fill = [0.0] * heads if self.labels.region_based else [1.0] + [0.0] * (heads - 1)
            full = from_nnunet_axes(self._transpose_back(uncrop(probabilities, prepared, fill)), change)
            write_probabilities(output_path(output_dir, case.case_id, "_probabilities.npz"), full, self.config,
                                volume.geometry)
        return CaseResult(case.case_id, target, seconds=time.perf_counter() - start, shape=tuple(labels.shape))

    def _load(self, case: SegmentCase):
        from medseg.io import load_case, load_volume

        n = len(self.labels.channel_names)
        load_options = {"nonfinite": self.options.nonfinite, "allow_irregular": self.options.allow_irregular}
        if case.channels_in_file:
            volume = load_volume(case.paths[0], channels=True, **load_options)
        else:
            names = self.modalities if len(case.paths) == n and len(set(self.modalities)) == n else None
            volume = load_case(case.paths, names=names, **load_options)
        if volume.array.ndim == 3:
            volume.array = volume.array[None]
        if volume.array.shape[0] != n:
            raise InputError(f"case {case.case_id}: the model needs {n} channels {self.modalities}, "
                             f"got {volume.array.shape[0]}")
        return volume

    def _predict_logits(self, data: np.ndarray) -> np.ndarray:
        """Logits ``(H, *S)`` for preprocessed ``(C, *S)`` data.

        As in nnU-Net, logits are blended over windows and averaged over folds (and mirrored inputs with
        ``tta``); the softmax or sigmoid comes after they are resampled back to the input grid.
        """
        image = torch.from_numpy(data).to(self.device)
        flips = self._mirror_sets() if self.options.inference.tta else [()]
        total = None
        for weights in self.weights:
            self.network.load_state_dict(weights)
            for axes in flips:
                source = torch.flip(image, [a + 1 for a in axes]) if axes else image
                logits = self._windowed(source)
                logits = torch.flip(logits, [a + 1 for a in axes]) if axes else logits
                total = logits if total is None else total + logits
        return (total / (len(self.weights) * len(flips))).cpu().numpy()

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        activation = "sigmoid" if self.labels.region_based else "softmax"
        return activate(torch.from_numpy(logits)[None], activation)[0].numpy()

    def _windowed(self, image: torch.Tensor) -> torch.Tensor:
        patch = self.configuration.patch_size
        inference = self.options.inference
        if len(patch) == 3:
            batch = image[None]
        else:  # 2D configurations segment the slices along nnU-Net's first axis
            batch = image.transpose(0, 1)
        logits = sliding_window_logits(self.network, batch, patch, inference.overlap, inference.batch_size,
                                       inference.blend)
        return logits[0] if len(patch) == 3 else logits.transpose(0, 1)

    def _mirror_sets(self) -> list[tuple[int, ...]]:
        if self.mirroring_axes is None:
            return [()]
        offset = 1 if self.configuration.spatial_dims == 2 else 0  # 2D axes count within the slice
        axes = [a + offset for a in self.mirroring_axes]
        return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]

    def _to_labels(self, probabilities: np.ndarray) -> np.ndarray:
        values = self.labels.label_values
        dtype = np.uint8 if max(values) <= 255 else np.uint16
        if self.labels.region_based:
            labels = np.zeros(probabilities.shape[1:], dtype=dtype)
            for channel, value in enumerate(values):
                labels[probabilities[channel] > 0.5] = value
        else:
            labels = np.asarray(values, dtype=dtype)[np.argmax(probabilities, axis=0)]
        if self.labels.to_source is not None:
            table = np.arange(max(max(self.labels.to_source), int(labels.max(initial=0))) + 1)
            for value, source in self.labels.to_source.items():
                table[value] = source
            labels = table[labels].astype(np.uint8 if table.max() <= 255 else np.uint16)
        return labels

    def _transpose_back(self, array: np.ndarray) -> np.ndarray:
        backward = self.plans.transpose_backward
        lead = array.ndim - 3
        return array.transpose(*range(lead), *[a + lead for a in backward])


def parse_folds(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Check ``--folds`` values: non-negative integers or ``all``.

    Args:
        values: the values given, or ``None``.

    Returns:
        The folds as strings, or ``None`` when none were given.

    Raises:
        ConfigError: any other value.
    """
    if not values:
        return None
    for value in values:
        if not (str(value).isdigit() or str(value) == "all"):
            raise ConfigError(f"--folds takes fold numbers (0, 1, ...) or 'all', got {value!r}")
    return tuple(str(v) for v in values)
