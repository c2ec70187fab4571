"""The data side of training: detect the layout, split the cases, pick the layout's transform preset.

Each supported layout maps to one preset of :mod:`medseg.transforms` and one output convention:

=============  ====================================  ===========================================
layout         preset                                output
=============  ====================================  ===========================================
brats2021/23   ``brats_train_transforms``            sigmoid, regions TC / WT / ET
synapse        ``synapse_train_transforms``          softmax, 14 classes (13 BTCV organs)
transunet      ``transunet_slice_train_transforms``  softmax, 9 classes (TransUNet's 8 organs), 2D
=============  ====================================  ===========================================

Training draws one patch per sample (the preset's ``num_samples`` is 1, so ``batch_size`` is the number
of patches per step). Validation uses the deterministic part of the same preset (everything before its
first random transform) on image and label together, so Dice is measured on the network's grid.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medseg.config import ModelConfig, TrainConfig
from medseg.errors import ConfigError

#: Layouts with a training preset.
TRAINABLE_LAYOUTS: tuple[str, ...] = ("brats2021", "brats2023", "synapse", "transunet")


@dataclass
class TrainingData:
    """Cases, preprocessing and output convention of one training run.

    Attributes:
        spec: the detected layout (``medseg.data.DatasetSpec``).
        train_cases: case dictionaries of the training folds.
        val_cases: case dictionaries of the validation fold.
        patch_size: the patch the preset uses by default (``TrainConfig.patch_size`` overrides it).
        deterministic: the preset up to its first random transform (cacheable per case).
        augment: the rest of the preset (random patch choice and augmentation).
        validation: deterministic preprocessing of a validation case (image and label).
        output_activation: ``"sigmoid"`` or ``"softmax"``.
        class_names: one per output channel.
        label_values: for softmax, the label value of each channel.
        regions: for sigmoid, region name -> label values.
        preprocessing: preset name and configuration (stored in the model folder).
        orientation: axis codes the preset reorients to, or ``None``.
        target_spacing: voxel size the preset resamples to, or ``None``.
        normalization: intensity normalisation name.
        normalization_params: its parameters.
    """

    spec: Any
    train_cases: list[dict[str, Any]]
    val_cases: list[dict[str, Any]]
    patch_size: list[int]
    deterministic: Callable[[Any], Any]
    augment: Callable[[Any], Any]
    validation: Callable[[Any], Any]
    output_activation: str
    class_names: list[str]
    label_values: list[int]
    regions: dict[str, list[int]] | None
    preprocessing: dict[str, Any]
    orientation: str | None
    target_spacing: list[float] | None
    normalization: str
    normalization_params: dict[str, Any] = field(default_factory=dict)
    cache: bool = False
    _cache: dict[int, Any] = field(default_factory=dict, repr=False)

    def load_training_case(self, index: int) -> Mapping[str, Any]:
        """The deterministic preprocessing of training case ``index`` (kept in memory when caching).

        Args:
            index: position in :attr:`train_cases`.
        """
        if index not in self._cache:
            item = self.deterministic(dict(self.train_cases[index]))
            if not self.cache:
                return item
            self._cache[index] = item
        # A copy, so that no augmentation can alter the cached item.
        return copy.deepcopy(self._cache[index])

    def load_validation_case(self, case: Mapping[str, Any]) -> Mapping[str, Any]:
        """The preprocessed image ``(C, *S)`` and label of a validation case.

        Args:
            case: a case dictionary from :attr:`val_cases`.
        """
        return self.validation(dict(case))

    @property
    def in_channels(self) -> int:
        """Number of input channels (modalities)."""
        return len(self.spec.modalities)

    def model_config(self, config: TrainConfig) -> ModelConfig:
        """The :class:`ModelConfig` of the network a resolved training configuration trains.

        Args:
            config: the resolved configuration (``patch_size`` and ``deep_supervision`` set).

        Returns:
            The validated model configuration.
        """
        patch = list(config.patch_size or self.patch_size)
        network_kwargs = dict(config.network_kwargs)
        if config.deep_supervision:
            network_kwargs["deep_supervision"] = True
        preprocessing = dict(self.preprocessing)
        preprocessing["config"] = {**preprocessing.get("config", {}), "patch_size": patch}
        return ModelConfig(
            network=config.model,
            spatial_dims=len(patch),
            in_channels=self.in_channels,
            out_channels=len(self.class_names),
            variant=config.variant,
            network_kwargs=network_kwargs,
            modalities=list(self.spec.modalities),
            dataset=self.spec.name,
            output_activation=self.output_activation,
            class_names=list(self.class_names),
            label_values=list(self.label_values),
            regions=self.regions,
            orientation=self.orientation,
            target_spacing=self.target_spacing,
            normalization=self.normalization,
            normalization_params=dict(self.normalization_params),
            patch_size=patch,
            preprocessing=preprocessing,
        ).validate()


def prepare_training_data(dataset_dir: str | os.PathLike, config: TrainConfig) -> TrainingData:
    """Detect the layout of ``dataset_dir``, index and split its cases, and build the preset.

    Args:
        dataset_dir: the dataset folder.
        config: the training configuration (fold, n_folds, seed, patch_size, cache are used).

    Returns:
        The :class:`TrainingData`.

    Raises:
        InputError: unrecognised layout or missing files.
        ConfigError: a layout without a training preset, or too few cases for ``n_folds``.
    """
    from medseg.data import detect, index, split

    spec = detect(dataset_dir)
    if spec.name not in TRAINABLE_LAYOUTS:
        raise ConfigError(
            f"{dataset_dir}: layout {spec.name!r} has no training preset yet; trainable layouts: "
            f"{', '.join(TRAINABLE_LAYOUTS)}"
        )
    cases = index(dataset_dir, spec)
    train_cases, val_cases = split(cases, n_folds=config.n_folds, fold=config.fold, seed=config.seed)
    builder = _PRESET_BUILDERS[spec.name]
    data = builder(spec, config)
    data.train_cases = [dict(case) for case in train_cases]
    data.val_cases = [dict(case) for case in val_cases]
    data.cache = bool(config.cache)
    return data


def _split_preset(transform: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    from medseg.pipelines.sampler import split_deterministic

    return split_deterministic(transform)


def _patch(config: TrainConfig, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(config.patch_size) if config.patch_size is not None else tuple(default)


def preset_config(defaults: Any, overrides: Mapping[str, Any], **fixed: Any) -> Any:
    """A preset's config dataclass with the user's ``preprocessing`` options and the fixed fields applied.

    Args:
        defaults: the preset's default configuration (a frozen dataclass of ``medseg.transforms``).
        overrides: ``TrainConfig.preprocessing``: field name -> value (lists become tuples).
        **fixed: fields training sets itself (``patch_size``, ``num_samples``); they may not be overridden.

    Returns:
        The new configuration (the preset's own checks apply).

    Raises:
        ConfigError: an unknown or fixed field (the message lists the valid ones), or an invalid value.
    """
    names = [f.name for f in dataclasses.fields(defaults)]
    settable = [name for name in names if name not in fixed and name not in ("patch_size", "num_samples")]
    bad = sorted(key for key in overrides if key not in settable)
    if bad:
        raise ConfigError(
            f"preprocessing option(s) {', '.join(bad)} not accepted by {type(defaults).__name__}; "
            f"valid: {', '.join(settable)} (patch_size is set with --patch)"
        )
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in overrides.items()}
    return dataclasses.replace(defaults, **values, **fixed)


def _brats(spec: Any, config: TrainConfig) -> TrainingData:
    from medseg.transforms import REGION_NAMES, BratsTransformConfig, brats_train_transforms

    defaults = BratsTransformConfig(convention=spec.name)
    preset = preset_config(
        defaults,
        config.preprocessing,
        convention=spec.name,
        modalities=len(spec.modalities),
        patch_size=_patch(config, defaults.patch_size),
        num_samples=1,
    )
    deterministic, augment = _split_preset(brats_train_transforms(preset))
    regions = {name: sorted(int(v) for v in spec.regions[name]) for name in REGION_NAMES}
    return TrainingData(
        spec=spec,
        train_cases=[],
        val_cases=[],
        patch_size=list(preset.patch_size),
        deterministic=deterministic,
        augment=augment,
        validation=deterministic,
        output_activation="sigmoid",
        class_names=list(REGION_NAMES),
        label_values=sorted(int(v) for v in spec.labels),
        regions=regions,
        preprocessing={"preset": "brats", "config": _plain(dataclasses.asdict(preset))},
        orientation="RAS",
        target_spacing=list(preset.spacing) if preset.spacing is not None else None,
        normalization="zscore_nonzero_channelwise",
    )


def _synapse(spec: Any, config: TrainConfig) -> TrainingData:
    from medseg.transforms import SYNAPSE_ORGANS, TRANSUNET_ORGANS, SynapseTransformConfig, synapse_train_transforms

    defaults = SynapseTransformConfig(label_set="synapse13")
    preset = preset_config(
        defaults, config.preprocessing, patch_size=_patch(config, defaults.patch_size), num_samples=1
    )
    deterministic, augment = _split_preset(synapse_train_transforms(preset))
    organs = TRANSUNET_ORGANS if preset.label_set == "transunet8" else SYNAPSE_ORGANS
    names = ["background", *organs]
    return TrainingData(
        spec=spec,
        train_cases=[],
        val_cases=[],
        patch_size=list(preset.patch_size),
        deterministic=deterministic,
        augment=augment,
        validation=deterministic,
        output_activation="softmax",
        class_names=names,
        label_values=list(range(len(names))),
        regions=None,
        preprocessing={"preset": "synapse", "config": _plain(dataclasses.asdict(preset))},
        orientation="RAS",
        target_spacing=list(preset.spacing) if preset.spacing is not None else None,
        normalization="ct_window",
        normalization_params={"hu_window": list(preset.hu_window), "range": [0.0, 1.0]},
    )


def _transunet(spec: Any, config: TrainConfig) -> TrainingData:
    from monai.transforms import Compose, EnsureTyped, Resized

    from medseg.transforms import TRANSUNET_ORGANS, TransUNetSliceConfig, transunet_slice_train_transforms

    defaults = TransUNetSliceConfig()
    patch = _patch(config, defaults.patch_size)
    if len(patch) != 2:
        raise ConfigError(f"the TransUNet layout holds 2D slices; the patch must be 2 numbers (H W), got {list(patch)}")
    names = ["background", *TRANSUNET_ORGANS]
    preset = preset_config(defaults, config.preprocessing, patch_size=patch, num_classes=len(names))
    deterministic, augment = _split_preset(transunet_slice_train_transforms(preset))
    validation: Callable[[Any], Any] = deterministic
    if preset.fit == "resize":
        # Training sees whole slices resized to the patch; validate on the same scale.
        validation = Compose(
            [
                deterministic,
                Resized(["image", "label"], spatial_size=patch, mode=["bilinear", "nearest-exact"]),
                EnsureTyped(["image", "label"], track_meta=False),
            ]
        )
    return TrainingData(
        spec=spec,
        train_cases=[],
        val_cases=[],
        patch_size=list(patch),
        deterministic=deterministic,
        augment=augment,
        validation=validation,
        output_activation="softmax",
        class_names=names,
        label_values=list(range(len(names))),
        regions=None,
        preprocessing={"preset": "transunet_slices", "config": _plain(dataclasses.asdict(preset))},
        orientation=None,
        target_spacing=None,
        normalization="transunet_preprocessed",
        normalization_params={"note": "slices are already HU-windowed to [-125, 275] and scaled to [0, 1]"},
    )


_PRESET_BUILDERS: dict[str, Callable[[Any, TrainConfig], TrainingData]] = {
    "brats2021": _brats,
    "brats2023": _brats,
    "synapse": _synapse,
    "transunet": _transunet,
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

