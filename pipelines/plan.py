"""``medseg plan``: nnU-Net's rules of thumb, turned into a training configuration for medseg's ``unet``.

From a dataset fingerprint (:mod:`medseg.pipelines.nnunet_fingerprint`), following the heuristics of the
nnU-Net paper (Isensee et al., Nature Methods 2021), in the presets' RAS axis order:

* **target spacing**: the median spacing per axis; when one axis is more than 3x coarser than the others
  and the images are correspondingly thin along it, that axis takes the 10th percentile of its spacings
  instead (never finer than the other axes), so thick-slice scans are not over-interpolated;
* **image size**: the median shape after cropping, rescaled to the target spacing;
* **topology**: an axis is downsampled (stride 2) while its feature map stays at least 8 voxels long and its
  current spacing is within 2x of the finest; kernels are 3 along axes within 2x of the finest spacing, else
  1 (the bottleneck always 3); features start at 32 and double per stage up to 320;
* **patch size**: starts proportional to 1/spacing with 256^3 voxels, is clipped to the median image size,
  then the axis largest relative to the image is shrunk until the estimated activation memory at batch size
  2 fits the budget of nnU-Net's reference 3D configuration (patch 128^3, six stages of 32..320 features);
  it is made divisible by the strides;
* **batch size**: as many patches as the budget allows, at least 2, at most 5 % of the dataset's voxels
  per step.

The result is written as YAML with only :class:`~medseg.config.TrainConfig` keys: ``model``,
``network_kwargs`` (features, strides, kernel_sizes), ``patch_size``, ``batch_size`` and the preset's
``preprocessing`` (``spacing``; for CT ``hu_window`` from the foreground's 0.5th-99.5th percentiles, nnU-Net's
CT clipping).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import TrainConfig
from medseg.errors import InputError
from medseg.pipelines.nnunet_fingerprint import Fingerprint, dataset_fingerprint

PLANNABLE_LAYOUTS: tuple[str, ...] = ("brats2021", "brats2023", "synapse")
ANISOTROPY_RATIO = 3.0
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = 320
INITIAL_PATCH_VOXELS = 256**3
MIN_BATCH_SIZE = 2
MAX_DATASET_FRACTION_PER_STEP = 0.05
# nnU-Net's reference 3D configuration that fits its GPU budget at batch size 2.
REFERENCE_PATCH = (128, 128, 128)
REFERENCE_STRIDES = ((1, 1, 1),) + ((2, 2, 2),) * 5
REFERENCE_FEATURES = (32, 64, 128, 256, 320, 320)
REFERENCE_BATCH = 2


@dataclass(frozen=True)
class Topology:
    """A U-Net layout for one patch.

    Attributes:
        strides: per stage, the per-axis stride (first stage all 1).
        kernel_sizes: per stage, the per-axis kernel size.
        features: channels per stage.
    """

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    features: tuple[int, ...]

    @property
    def divisor(self) -> tuple[int, ...]:
        """What each patch axis must be a multiple of: the product of that axis' strides."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(len(self.strides[0])))


@dataclass(frozen=True)
class Plan:
    """The planned configuration, RAS axis order.

    Attributes:
        target_spacing: mm per voxel after resampling.
        median_shape: median cropped image shape at the target spacing.
        patch_size: training patch.
        batch_size: patches per step.
        topology: network layout.
        resample: whether any case differs from the target spacing (else the presets keep the grid).
    """

    target_spacing: tuple[float, ...]
    median_shape: tuple[int, ...]
    patch_size: tuple[int, ...]
    batch_size: int
    topology: Topology
    resample: bool


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """The target spacing: per-axis median, with nnU-Net's exception for one much coarser axis.

    Args:
        spacings: ``(N, 3)`` spacings.
        shapes: ``(N, 3)`` shapes (after cropping) at those spacings.

    Returns:
        ``(3,)`` target spacing.
    """
    target = np.median(spacings, axis=0)
    sizes = np.median(shapes, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != coarse]
    anisotropic_spacing = target[coarse] > ANISOTROPY_RATIO * min(target[others])
    thin = sizes[coarse] * ANISOTROPY_RATIO < min(sizes[others])
    if anisotropic_spacing and thin:
        low = float(np.percentile(spacings[:, coarse], 10))
        target[coarse] = max(low, float(max(target[others])) + 1e-5)
    return target


def topology_for(patch: Sequence[int], spacing: Sequence[float]) -> Topology:
    """nnU-Net's pooling and kernel rule for a patch at a spacing.

    Args:
        patch: patch size per axis.
        spacing: spacing per axis.

    Returns:
        The topology (its number of stages follows from how often the axes can be halved).
    """
    size = [float(p) for p in patch]
    current = [float(s) for s in spacing]
    dims = len(size)
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernel = [3 if current[a] / min(current) < 2 else 1 for a in range(dims)]
    kernels: list[tuple[int, ...]] = [tuple(kernel)]
    while True:
        poolable = [a for a in range(dims) if size[a] >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current[a] for a in poolable)
        axes = [a for a in poolable if current[a] / finest < 2]
        if len(axes) == 1 and size[axes[0]] < 3 * MIN_FEATURE_MAP:
            break
        stride = tuple(2 if a in axes else 1 for a in range(dims))
        for a in axes:
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        kernel = [3 if k == 3 or current[a] / min(current) < 2 else 1 for a, k in enumerate(kernel)]
        strides.append(stride)
        kernels.append(tuple(kernel))
    kernels[-1] = (3,) * dims  # the bottleneck
    features = tuple(min(BASE_FEATURES * 2**s, MAX_FEATURES) for s in range(len(strides)))
    return Topology(tuple(strides), tuple(kernels), features)


def activation_estimate(patch: Sequence[int], topology_or_strides: Topology | Sequence[Sequence[int]],
                        features: Sequence[int] | None = None) -> float:
    """A proxy for training memory of one patch: feature-map voxels summed over the U-Net's convolutions.

    Each encoder stage holds 2 convolution outputs; each decoder stage the upsampled map, the concatenation
    (twice the channels) and 2 convolution outputs.

    Args:
        patch: patch size.
        topology_or_strides: a :class:`Topology`, or per-stage strides (then ``features`` is required).
        features: channels per stage when strides are given.

    Returns:
        The estimate (arbitrary units, comparable between configurations).
    """
    if isinstance(topology_or_strides, Topology):
        strides, features = topology_or_strides.strides, topology_or_strides.features
    else:
        strides = topology_or_strides
    voxels = np.asarray(patch, dtype=float)
    total = 0.0
    for stage, (stride, channels) in enumerate(zip(strides, features)):
        voxels = voxels / np.asarray(stride)
        per_map = channels * float(np.prod(voxels))
        total += 2 * per_map
        if stage < len(strides) - 1:
            total += 5 * per_map
    return total


REFERENCE_BUDGET = activation_estimate(REFERENCE_PATCH, REFERENCE_STRIDES, REFERENCE_FEATURES) * REFERENCE_BATCH


def plan_from_fingerprint(fingerprint: Fingerprint) -> Plan:
    """Plan spacing, patch, batch size and topology from a fingerprint.

    Args:
        fingerprint: from :func:`~medseg.pipelines.nnunet_fingerprint.dataset_fingerprint`.

    Returns:
        The plan.
    """
    spacing = target_spacing(fingerprint.spacings, fingerprint.shapes_after_crop)
    scaled = fingerprint.shapes_after_crop * fingerprint.spacings / spacing
    median_shape = np.maximum(np.round(np.median(scaled, axis=0)), 1).astype(int)
    inverse = 1.0 / spacing
    patch = np.round(inverse * (INITIAL_PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)).astype(int)
    patch = np.minimum(patch, median_shape)
    topology = topology_for(patch, spacing)
    patch = _round_up(patch, topology.divisor)
    while activation_estimate(patch, topology) * MIN_BATCH_SIZE > REFERENCE_BUDGET:
        axis = int(np.argmax(patch / median_shape))
        smaller = patch.copy()
        smaller[axis] -= topology.divisor[axis]
        topology = topology_for(smaller, spacing)
        smaller = _round_up(smaller, topology.divisor)
        if np.array_equal(smaller, patch):
            break
        patch = smaller
    batch = int(REFERENCE_BUDGET // activation_estimate(patch, topology))
    cap = int(MAX_DATASET_FRACTION_PER_STEP * np.prod(median_shape) * len(fingerprint.case_ids) / np.prod(patch))
    batch = max(MIN_BATCH_SIZE, min(batch, cap))
    resample = not np.allclose(fingerprint.spacings, spacing, rtol=0, atol=1e-3)
    return Plan(tuple(float(s) for s in spacing), tuple(int(s) for s in median_shape),
                tuple(int(p) for p in patch), batch, topology, resample)


def _round_up(patch: np.ndarray, divisor: Sequence[int]) -> np.ndarray:
    return np.asarray([max(d, math.ceil(p / d) * d) for p, d in zip(patch, divisor)], dtype=int)


def train_config_from_plan(plan: Plan, fingerprint: Fingerprint) -> dict[str, Any]:
    """The :class:`TrainConfig` keys the plan decides.

    Args:
        plan: from :func:`plan_from_fingerprint`.
        fingerprint: the fingerprint it came from (for the CT window).

    Returns:
        A mapping that :meth:`TrainConfig.from_dict` accepts.
    """
    preprocessing: dict[str, Any] = {"spacing": [round(s, 5) for s in plan.target_spacing] if plan.resample else None}
    if fingerprint.spec.name == "synapse":
        ct = fingerprint.intensity[fingerprint.spec.modalities[0]]
        if ct["percentile_99_5"] > ct["percentile_00_5"]:
            preprocessing["hu_window"] = [round(ct["percentile_00_5"], 3), round(ct["percentile_99_5"], 3)]
    config = {
        "model": "unet",
        "network_kwargs": {
            "features": list(plan.topology.features),
            "strides": [list(s) for s in plan.topology.strides],
            "kernel_sizes": [list(k) for k in plan.topology.kernel_sizes],
        },
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
        "preprocessing": preprocessing,
    }
    TrainConfig.from_dict(config, source="medseg plan")
    return config


def plan_dataset(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """Fingerprint a dataset and plan a ``unet`` training configuration for it.

    Args:
        dataset_dir: a BraTS 2021/2023 or Synapse raw dataset folder (the layouts ``medseg train`` trains on
            volumes).

    Returns:
        ``{"fingerprint": ..., "plan": ..., "train_config": ...}``: the fingerprint and plan as plain data,
        and the :class:`TrainConfig` keys to write (see :func:`plan_to_yaml`).

    Raises:
        InputError: another layout, or no labelled cases.
    """
    fingerprint = dataset_fingerprint(dataset_dir)
    if fingerprint.spec.name not in PLANNABLE_LAYOUTS:
        raise InputError(f"{dataset_dir}: medseg plans for the layouts it trains on volumes "
                         f"({', '.join(PLANNABLE_LAYOUTS)}), not {fingerprint.spec.name}")
    plan = plan_from_fingerprint(fingerprint)
    summary = {
        "target_spacing": list(plan.target_spacing),
        "median_shape_at_target_spacing": list(plan.median_shape),
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
        "stages": len(plan.topology.features),
        "resample": plan.resample,
    }
    config = train_config_from_plan(plan, fingerprint)
    return {"fingerprint": fingerprint.to_dict(), "plan": summary, "train_config": config}


def plan_to_yaml(planned: dict[str, Any]) -> str:
    """The training configuration as YAML for ``medseg train --config``, with the plan summarised in comments.

    Args:
        planned: from :func:`plan_dataset`.

    Returns:
        YAML text.
    """
    import yaml

    fp, plan = planned["fingerprint"], planned["plan"]
    lines = [
        "# medseg training configuration planned by `medseg plan` (nnU-Net heuristics).",
        f"# dataset: {fp['layout']}, {fp['cases']} labelled case(s); median relative size after crop "
        f"{fp['median_relative_size_after_crop']:.3f}",
        f"# target spacing (RAS, mm): {plan['target_spacing']}; median image size there: "
        f"{plan['median_shape_at_target_spacing']}; {plan['stages']} stages",
    ]
    for name, stats in fp["foreground_intensity_properties_per_channel"].items():
        lines.append(f"# foreground {name}: mean {stats['mean']:.4g}, std {stats['std']:.4g}, "
                     f"0.5-99.5 pct {stats['percentile_00_5']:.4g}..{stats['percentile_99_5']:.4g}")
    body = yaml.safe_dump(planned["train_config"], sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body


def write_plan(dataset_dir: str | os.PathLike, output: str | os.PathLike) -> dict[str, Any]:
    """Plan a dataset and write the configuration atomically.

    Args:
        dataset_dir: the dataset folder.
        output: the YAML file to write.

    Returns:
        What :func:`plan_dataset` returned.
    """
    from medseg.io import atomic_write_text

    planned = plan_dataset(dataset_dir)
    atomic_write_text(Path(output), plan_to_yaml(planned))
    return planned
