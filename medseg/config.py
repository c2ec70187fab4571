"""Typed configuration: what a trained model is (:class:`ModelConfig`) and how it is trained (:class:`TrainConfig`).

Both are dataclasses with plain JSON/YAML-able fields. :func:`load_train_config` reads a YAML file, refuses
unknown keys (the message lists the valid ones) and checks every value's type and range;
:func:`apply_overrides` layers command-line options on top. A training run writes its *resolved*
configuration (every ``None`` default replaced by the value actually used) to ``RUN_DIR/config.yaml``, and
the model folder carries the :class:`ModelConfig` as ``config.json``. See ``docs/training.md``.

This module imports no torch, so ``medseg --help`` and configuration checks stay fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, unknown_choice

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "softmax")
MODEL_SELECTIONS: tuple[str, ...] = ("best", "last")

#: Version of the ``config.json`` layout of a model folder; bumped on incompatible changes.
MODEL_CONFIG_VERSION = 1


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained network and feed it correctly prepared input.

    Stored as ``config.json`` in a model folder, beside ``weights.safetensors``.

    Attributes:
        network: registry name of the network (see ``medseg.networks.list_networks()``).
        spatial_dims: 2 or 3; a 2D network segments 3D volumes slice by slice.
        in_channels: input channels, one per modality.
        out_channels: output channels, one per class (softmax) or region (sigmoid).
        variant: network variant the weights were trained with.
        network_kwargs: builder options that override the variant's (exactly what training passed).
        modalities: input modality names in channel order (e.g. ``["t1n", "t1c", "t2w", "t2f"]``).
        dataset: the dataset layout / label convention the model was trained on (``"brats2021"``,
            ``"brats2023"``, ``"synapse"``, ``"transunet"``, ``"nnunet"``).
        output_activation: ``"sigmoid"`` (independent, possibly overlapping regions) or ``"softmax"``
            (mutually exclusive classes, channel 0 background).
        class_names: one name per output channel.
        label_values: for softmax, the label value each output channel stands for (channel ``c`` predicted
            -> voxel value ``label_values[c]``); for sigmoid, the label values of the dataset's label map.
        regions: for sigmoid outputs, region name -> the label values whose union forms the region, in
            channel order (e.g. BraTS 2021 ``{"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}``); ``None`` for softmax.
        orientation: axis codes the input is reoriented to before the network (e.g. ``"RAS"``), or ``None``.
        target_spacing: voxel spacing in mm the input is resampled to, or ``None`` to keep the native one.
        normalization: intensity normalisation name of the transform preset (e.g. ``"zscore_nonzero"``).
        normalization_params: its parameters (e.g. a CT window).
        patch_size: the training patch, used as sliding-window size at inference ``(D, H, W)`` or ``(H, W)``.
        preprocessing: the transform preset's own configuration, as given by ``medseg.transforms``, so that
            inference rebuilds exactly the training preprocessing.
        version: layout version of this record (:data:`MODEL_CONFIG_VERSION`).
    """

    network: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    variant: str = "default"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)
    dataset: str = ""
    output_activation: str = "softmax"
    class_names: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    regions: dict[str, list[int]] | None = None
    orientation: str | None = None
    target_spacing: list[float] | None = None
    normalization: str = ""
    normalization_params: dict[str, Any] = field(default_factory=dict)
    patch_size: list[int] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    version: int = MODEL_CONFIG_VERSION

    def validate(self) -> ModelConfig:
        """Check values and their consistency; return ``self``.

        Raises:
            ConfigError: naming the first inconsistent field.
        """
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"model config: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError(
                f"model config: in_channels and out_channels must be >= 1, got {self.in_channels}, {self.out_channels}"
            )
        if self.output_activation not in ACTIVATIONS:
            raise unknown_choice("output activation", self.output_activation, ACTIVATIONS)
        if self.modalities and len(self.modalities) != self.in_channels:
            raise ConfigError(
                f"model config: {len(self.modalities)} modalities {self.modalities} for in_channels={self.in_channels}"
            )
        if self.class_names and len(self.class_names) != self.out_channels:
            raise ConfigError(
                f"model config: {len(self.class_names)} class names {self.class_names} "
                f"for out_channels={self.out_channels}"
            )
        if self.output_activation == "softmax" and self.label_values and len(self.label_values) != self.out_channels:
            raise ConfigError(
                f"model config: softmax output needs one label value per channel; got {self.label_values} "
                f"for out_channels={self.out_channels}"
            )
        if self.output_activation == "sigmoid" and self.regions is not None and len(self.regions) != self.out_channels:
            raise ConfigError(
                f"model config: sigmoid output needs one region per channel; got {list(self.regions)} "
                f"for out_channels={self.out_channels}"
            )
        if self.patch_size and len(self.patch_size) != self.spatial_dims:
            raise ConfigError(
                f"model config: patch_size {self.patch_size} must have {self.spatial_dims} entries"
            )
        if self.version > MODEL_CONFIG_VERSION:
            raise ConfigError(
                f"model config version {self.version} is newer than this medseg understands "
                f"({MODEL_CONFIG_VERSION}); update medseg"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data (lists, dicts, numbers, strings)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model config") -> ModelConfig:
        """Build and validate a :class:`ModelConfig` from plain data.

        Args:
            data: mapping of field name to value, as written by :meth:`to_dict`.
            source: where the data came from, for error messages (e.g. the file path).

        Returns:
            The validated configuration.

        Raises:
            ConfigError: unknown or missing keys, or a value of the wrong type.
        """
        return from_mapping(cls, data, source).validate()


@dataclass
class TrainConfig:
    """How to train: network choice, patch, optimisation, schedule, validation and reproducibility.

    ``None`` fields are filled in by :func:`medseg.pipelines.train.resolve_train_config` from the dataset
    and the transform preset; the resolved configuration is written to ``RUN_DIR/config.yaml``.

    Attributes:
        model: registry name of the network (``medseg models`` lists them).
        variant: network variant (an argument set of the network).
        network_kwargs: extra network options overriding the variant's.
        deep_supervision: train with deep-supervision outputs; ``None`` turns it on when the network offers it.
        epochs: number of epochs.
        steps_per_epoch: optimiser steps per epoch; ``None`` = one pass over the training cases.
        batch_size: patches per step.
        patch_size: training patch ``(D, H, W)`` (3D) or ``(H, W)`` (2D); ``None`` = the preset's default.
        preprocessing: options of the dataset's transform preset that replace its defaults (e.g.
            ``{"spacing": [1.0, 1.0, 1.0]}``; the keys are the fields of the preset's config class in
            ``medseg.transforms``, except ``patch_size`` and ``num_samples``).
        optimizer: ``"adamw"`` or ``"sgd"`` (Nesterov, momentum :attr:`momentum`).
        lr: initial learning rate; ``None`` = 1e-3 for AdamW, 1e-2 for SGD.
        momentum: SGD momentum (nnU-Net: 0.99).
        weight_decay: weight decay.
        poly_exponent: the learning rate is ``lr * (1 - step / total_steps) ** poly_exponent``.
        grad_clip: maximum gradient norm, or ``None`` for no clipping.
        loss_dice_weight: weight of the Dice term of the loss.
        loss_ce_weight: weight of the cross-entropy (softmax) or binary cross-entropy (sigmoid) term.
        dice_batch: compute the Dice loss over the whole batch (True) or per sample then average.
        val_interval: validate every this many epochs (and after the last one); 0 = never.
        val_overlap: sliding-window overlap during validation, in [0, 1).
        val_sw_batch_size: windows per forward pass during validation.
        max_val_cases: validate on at most this many validation cases (``None`` = all).
        model_selection: weights placed in ``RUN_DIR/model``: ``"best"`` validation Dice or ``"last"``.
        fold: validation fold (0-based).
        n_folds: number of cross-validation folds.
        seed: seed from which every random draw of the run derives.
        deterministic: use deterministic algorithms (bitwise-reproducible runs and resumes on CPU).
        amp: mixed precision (float16 with loss scaling on CUDA, bfloat16 on CPU).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
        num_workers: data-loading worker processes.
        cache: keep the deterministic part of each training case's preprocessing in memory.
        nonfinite_patience: stop with an error after this many consecutive non-finite losses.
        max_steps: stop (with a checkpoint) after this many optimiser steps in total; ``None`` = no limit.
        max_minutes: wall-clock budget of one call of ``train``, in minutes: an epoch is started only when the
            time used so far plus the longest epoch so far fits in it (the first epoch always runs); the run
            then ends with its checkpoint and model folder, resumable. ``None`` = no limit.
        progress: show a progress bar.
    """

    model: str = "unet"
    variant: str = "default"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    deep_supervision: bool | None = None
    epochs: int = 100
    steps_per_epoch: int | None = None
    batch_size: int = 2
    patch_size: list[int] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adamw"
    lr: float | None = None
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float | None = 12.0
    loss_dice_weight: float = 1.0
    loss_ce_weight: float = 1.0
    dice_batch: bool = True
    val_interval: int = 1
    val_overlap: float = 0.5
    val_sw_batch_size: int = 2
    max_val_cases: int | None = None
    model_selection: str = "best"
    fold: int = 0
    n_folds: int = 5
    seed: int = 0
    deterministic: bool = False
    amp: bool = False
    device: str = "auto"
    num_workers: int = 2
    cache: bool = False
    nonfinite_patience: int = 5
    max_steps: int | None = None
    max_minutes: float | None = None
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Check every value's range and choice; return ``self``.

        Raises:
            ConfigError: naming the field, the value and what is valid.
        """
        if not self.model:
            raise ConfigError("model: a network name is required (see `medseg models`)")
        _positive(self, "epochs", "batch_size")
        _positive_or_none(self, "steps_per_epoch", "max_steps", "max_val_cases")
        _non_negative(self, "val_interval", "num_workers", "fold", "seed", "weight_decay", "momentum")
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.model_selection not in MODEL_SELECTIONS:
            raise unknown_choice("model selection", self.model_selection, MODEL_SELECTIONS)
        base_device = self.device.split(":", 1)[0]
        if base_device not in DEVICES or (":" in self.device and base_device != "cuda"):
            raise unknown_choice("device", self.device, (*DEVICES, "cuda:N"))
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.fold >= self.n_folds:
            raise ConfigError(f"fold must be in 0..{self.n_folds - 1} for n_folds={self.n_folds}, got {self.fold}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ConfigError(f"max_minutes must be a positive number or null, got {self.max_minutes}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be positive or null, got {self.grad_clip}")
        if not 0.0 <= self.val_overlap < 1.0:
            raise ConfigError(f"val_overlap must be in [0, 1), got {self.val_overlap}")
        if self.val_sw_batch_size < 1:
            raise ConfigError(f"val_sw_batch_size must be >= 1, got {self.val_sw_batch_size}")
        if self.loss_dice_weight < 0 or self.loss_ce_weight < 0 or self.loss_dice_weight + self.loss_ce_weight == 0:
            raise ConfigError(
                f"loss weights must be >= 0 and not both 0; got dice {self.loss_dice_weight}, ce {self.loss_ce_weight}"
            )
        if self.poly_exponent < 0:
            raise ConfigError(f"poly_exponent must be >= 0, got {self.poly_exponent}")
        if self.nonfinite_patience < 1:
            raise ConfigError(f"nonfinite_patience must be >= 1, got {self.nonfinite_patience}")
        if self.patch_size is not None:
            if len(self.patch_size) not in (2, 3) or any(p < 1 for p in self.patch_size):
                raise ConfigError(
                    f"patch_size must be 2 (H W) or 3 (D H W) positive integers, got {self.patch_size}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain YAML/JSON-able data."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "training config") -> TrainConfig:
        """Build and validate a :class:`TrainConfig` from plain data (e.g. parsed YAML).

        Args:
            data: mapping of field name to value; missing fields keep their defaults.
            source: where the data came from, for error messages.

        Returns:
            The validated configuration.

        Raises:
            ConfigError: unknown keys (the message lists the valid ones) or values of the wrong type or range.
        """
        return from_mapping(cls, data, source).validate()


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML (or JSON) training configuration file.

    Args:
        path: the file; its top level must be a mapping of :class:`TrainConfig` field names to values.

    Returns:
        The validated configuration; fields the file does not set keep their defaults.

    Raises:
        InputError: the file is missing or is not valid YAML.
        ConfigError: unknown keys or invalid values (the message names the file).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read training config {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"training config {path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"training config {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return TrainConfig.from_dict(data, source=str(path))


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """Return a copy of ``config`` with the given fields replaced (``None`` values are ignored).

    Args:
        config: the base configuration (defaults or a YAML file).
        overrides: field name -> value, e.g. the command-line options the user gave.

    Returns:
        A new validated configuration.

    Raises:
        ConfigError: an unknown field or an invalid value.
    """
    data = config.to_dict()
    data.update({key: value for key, value in overrides.items() if value is not None})
    return TrainConfig.from_dict(data, source="command-line options")


def train_config_to_yaml(config: TrainConfig) -> str:
    """Serialise a training configuration as YAML that :func:`load_train_config` reads back unchanged.

    Args:
        config: the configuration.

    Returns:
        The YAML text, keys in field order.
    """
    import yaml

    header = "# medseg training configuration (resolved). Reuse with: medseg train ... --config config.yaml\n"
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)


def model_config_to_json(config: ModelConfig) -> str:
    """Serialise a model configuration as indented JSON.

    Args:
        config: the configuration.

    Returns:
        The JSON text (ends with a newline).
    """
    return json.dumps(config.to_dict(), indent=2) + "\n"


def field_names(cls: type) -> list[str]:
    """Names of the fields of a configuration dataclass, in declaration order.

    Args:
        cls: :class:`TrainConfig` or :class:`ModelConfig`.
    """
    return [f.name for f in dataclasses.fields(cls)]


def from_mapping(cls: type, data: Mapping[str, Any], source: str) -> Any:
    """Build a configuration dataclass from a mapping, checking keys and value types.

    Args:
        cls: the dataclass type.
        data: field name -> value.
        source: where the data came from, for error messages.

    Returns:
        An instance of ``cls`` (not yet range-validated).

    Raises:
        ConfigError: unknown keys, missing required keys, or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    valid = field_names(cls)
    unknown = sorted(str(key) for key in data if key not in valid)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if not has_default:
                raise ConfigError(f"{source}: missing required key {f.name!r}")
            continue
        values[f.name] = _coerce(data[f.name], hints[f.name], f"{source}: {f.name}")
    return cls(**values)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, converting where lossless (int -> float, tuple -> list)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = args or (Any,)
        return [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, item_type = args or (Any, Any)
        return {
            _coerce(key, key_type, f"{where} key"): _coerce(item, item_type, f"{where}[{key!r}]")
            for key, item in value.items()
        }
    raise ConfigError(f"{where}: unsupported configuration type {annotation!r}")  # pragma: no cover


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so YAML and JSON writers produce plain sequences."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _positive(config: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")


def _positive_or_none(config: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 or null, got {value}")


def _non_negative(config: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(config, name)}")
