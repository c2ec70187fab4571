"""Rebuild, from a model folder's configuration, the inference preprocessing its training used.

Training stores ``ModelConfig.preprocessing = {"preset": NAME, "config": {...}}`` (see
:mod:`medseg.pipelines.train_data`); this module turns it back into the matching inference preset of
:mod:`medseg.transforms`. A 2D model trained on TransUNet's preprocessed slices segments CT volumes with the
same HU window that TransUNet's preprocessing applied to its slices, each slice resized to the training
patch when training resized its slices (as TransUNet's test does); TransUNet's own test volumes (``.npy.h5``,
``Geometry.source_format == "transunet_h5"``) hold CT already windowed to [0, 1] and are not windowed again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medseg.config import ModelConfig
from medseg.errors import ConfigError, unknown_choice


def _brats(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from medseg.transforms import BratsTransformConfig, brats_inference_transforms

    return brats_inference_transforms(_build(BratsTransformConfig, config))


def _synapse(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from medseg.transforms import SynapseTransformConfig, synapse_inference_transforms

    return synapse_inference_transforms(_build(SynapseTransformConfig, config))


PREWINDOWED_FORMATS: tuple[str, ...] = ("transunet_h5",)
"""``Geometry.source_format`` values whose images are already CT windowed and scaled to [0, 1]."""


class BySourceFormat:
    """An inference preset that depends on the input's file format (``Geometry.source_format``).

    Args:
        default: the preset for every other format.
        by_format: ``source_format`` -> the preset for inputs read from that format.
    """

    def __init__(self, default: Callable[[Any], Any], by_format: Mapping[str, Callable[[Any], Any]]) -> None:
        self.default = default
        self.by_format = dict(by_format)

    def __call__(self, data: Mapping[str, Any]) -> Any:
        """Run the preset of ``data["image"]``'s format (a ``medseg.io.Volume``, a path or a list of paths)."""
        return self.by_format.get(source_format(data["image"]), self.default)(data)


def source_format(item: Any) -> str | None:
    """The ``Geometry.source_format`` of a loaded volume, or of the (first) file a path names.

    Args:
        item: a ``medseg.io.Volume``, a path, or a list of paths (one per modality).

    Returns:
        The format, or ``None`` for anything else (the preset's loader then reports the problem).
    """
    from medseg.io import Volume, read_geometry

    if isinstance(item, Volume):
        return item.geometry.source_format
    if isinstance(item, Sequence) and not isinstance(item, str) and item:
        item = item[0]
    if isinstance(item, (str, os.PathLike)):
        return read_geometry(item).source_format
    return None


def _transunet_slices(config: Mapping[str, Any]) -> Callable[[Any], Any]:
    from monai.transforms import Resized

    from medseg.data.labels import TRANSUNET_HU_WINDOW
    from medseg.transforms import PresetCompose, SynapseTransformConfig, synapse_inference_transforms
    from medseg.transforms.grids import RecordGridd

    patch = tuple(int(n) for n in config.get("patch_size", (224, 224)))
    # Trained on whole slices resized to the patch ("resize", TransUNet's recipe), the network segments each
    # slice resized the same way, as TransUNet's test does; trained on crops at native scale, native slices.
    resize = config.get("fit", "resize") == "resize"

    def preset(hu_window: tuple[float, float]) -> Callable[[Any], Any]:
        base = synapse_inference_transforms(
            SynapseTransformConfig(
                label_set="transunet8", hu_window=hu_window, spacing=None, crop_foreground=False, patch_size=patch
            )
        )
        if not resize:
            return base
        in_plane = Resized("image", spatial_size=(*patch, -1), mode="bilinear")  # -1 keeps the slices
        return PresetCompose([*base.transforms, in_plane, RecordGridd("image")])

    # TransUNet's slices are CT windowed to [-125, 275] HU and scaled to [0, 1]. Its test volumes are stored
    # that way already: for them the window is (0, 1), the identity on [0, 1].
    windowed = preset(tuple(TRANSUNET_HU_WINDOW))
    return BySourceFormat(windowed, {name: preset((0.0, 1.0)) for name in PREWINDOWED_FORMATS})


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
