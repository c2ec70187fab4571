"""Rebuild, from a model folder's configuration, the inference preprocessing its training used.

Training stores ``ModelConfig.preprocessing = {"preset": NAME, "config": {...}}`` (see
:mod:`medseg.pipelines.train_data`); this module turns it back into the matching inference preset of
:mod:`medseg.transforms`. A 2D model trained on TransUNet's preprocessed slices segments CT volumes with the
same HU window that TransUNet's preprocessing applied to its slices, on the native grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from medseg.config import ModelConfig
from medseg.errors import ConfigError, unknown_choice


def _brats(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from medseg.transforms import BratsTransformConfig, brats_inference_transforms

    return brats_inference_transforms(_build(BratsTransformConfig, config))


def _synapse(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from medseg.transforms import SynapseTransformConfig, synapse_inference_transforms

    return synapse_inference_transforms(_build(SynapseTransformConfig, config))


def _transunet_slices(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from medseg.transforms import SynapseTransformConfig, synapse_inference_transforms

    # TransUNet's slices are CT windowed to [-125, 275] HU and scaled to [0, 1] on the native grid.
    return synapse_inference_transforms(
        SynapseTransformConfig(label_set="transunet8", spacing=None, crop_foreground=False, patch_size=(224, 224))
    )


PRESETS: dict[str, Callable[[Mapping[str, Any]], Callable[[Any], Any]]] = {
    "brats": _brats,
    "synapse": _synapse,
    "transunet_slices": _transunet_slices,
}


def _build(cls: type, config: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ConfigError(f"preprocessing config has unknown keys {unknown} for {cls.__name__}; valid: {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return cls(**values)


def inference_preset(model_config: ModelConfig) -> Callable[[Any], Any]:
    """The inference preset (a MONAI ``Compose`` over ``{"image": ...}``) of a trained model.

    Args:
        model_config: the model folder's configuration.

    Returns:
        A callable taking ``{"image": paths or medseg.io.Volume}`` and returning the preprocessed dictionary,
        whose ``image`` remembers the input geometry for :func:`medseg.transforms.invert_to_input`.

    Raises:
        ConfigError: if the model folder names no preset, or one this medseg does not know.
    """
    preprocessing = model_config.preprocessing or {}
    name = preprocessing.get("preset")
    if not name:
        raise ConfigError("model config has no preprocessing preset (preprocessing.preset); retrain or fix config.json")
    if name not in PRESETS:
        raise unknown_choice("preprocessing preset", name, PRESETS)
    return PRESETS[name](preprocessing.get("config", {}))
