"""Read a trained nnU-Net v2 folder's ``plans.json`` and ``dataset.json`` into typed records, and build its network.

Only what the default nnU-Net pipeline names is accepted, each through an explicit table (never an import
of a dotted name found in a file): the networks of ``dynamic_network_architectures``' U-Nets, the
``torch.nn`` layers they are assembled from, the ``DefaultPreprocessor``, the default resampling function,
nnU-Net's five intensity normalisations, the default ``LabelManager`` and the NIfTI readers. Anything else
is refused with a :class:`~medseg.errors.ConfigError` that lists what is supported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from medseg.errors import ConfigError, InputError, MedsegError, unknown_choice
from medseg.optional import require

PLANS_NAME = "plans.json"
DATASET_NAME = "dataset.json"
SOURCE_RECORD_KEY = "medseg_source"

READERS: tuple[str, ...] = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient")
NORMALIZATIONS: tuple[str, ...] = (
    "ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization", "RGBTo01Normalization",
)
RESAMPLING_FUNCTIONS: tuple[str, ...] = ("resample_data_or_seg_to_shape",)
_UNET_MODULE = "dynamic_network_architectures.architectures.unet"
NETWORK_CLASSES: tuple[str, ...] = tuple(
    f"{_UNET_MODULE}.{n}" for n in ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
)
_TORCH_LAYERS = frozenset({
    "Conv1d", "Conv2d", "Conv3d",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU",
})
_RESIDUAL_BLOCKS = {
    "dynamic_network_architectures.building_blocks.residual.BasicBlockD": "BasicBlockD",
    "dynamic_network_architectures.building_blocks.residual.BottleneckD": "BottleneckD",
}


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from a file.

    Args:
        path: the file.

    Returns:
        The object.

    Raises:
        InputError: naming the file when it is missing, not JSON, or not an object.
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not found; an nnU-Net results folder holds plans.json, dataset.json and "
                         "fold_N/checkpoint_final.pth") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(content, dict):
        raise InputError(f"{path}: must hold a JSON object")
    return content


@dataclass(frozen=True)
class NnunetConfiguration:
    """One configuration of ``plans.json`` (e.g. ``3d_fullres``), with inheritance resolved.

    Attributes:
        name: the configuration name.
        patch_size: the training patch, in nnU-Net's (transposed) axis order; 2 entries for 2D configurations.
        spacing: the target spacing in mm, same order and length as ``patch_size``.
        normalization_schemes: one normalisation class name per input channel.
        use_mask_for_norm: per channel, whether z-scoring uses only the nonzero region.
        resampling_data: keyword arguments of the image resampling (``order``, ``order_z``, ``force_separate_z``...).
        resampling_probabilities: keyword arguments of the resampling of predictions back to the input grid.
        network_class_name: the dotted class name of the network.
        arch_kwargs: the network's keyword arguments as written in the plans.
        arch_kwargs_requires_import: names of ``arch_kwargs`` entries that hold class names.
    """

    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    resampling_data: dict[str, Any]
    resampling_probabilities: dict[str, Any]
    network_class_name: str
    arch_kwargs: dict[str, Any]
    arch_kwargs_requires_import: tuple[str, ...]

    @property
    def spatial_dims(self) -> int:
        """2 or 3: the rank of the network's windows."""
        return len(self.patch_size)


@dataclass(frozen=True)
class NnunetPlans:
    """The dataset-wide part of ``plans.json``.

    Attributes:
        path: the file it was read from.
        reader: the image reader nnU-Net used (``"SimpleITKIO"``, ``"NibabelIO"``, ``"NibabelIOWithReorient"``).
        transpose_forward: axis permutation applied to ``(z, y, x)`` arrays before everything else.
        transpose_backward: its inverse.
        intensity_properties: channel index (as a string) -> foreground intensity statistics
            (``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5`` ...), used by CT normalisation.
        configurations: the raw configuration entries by name.
    """

    path: Path
    reader: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    intensity_properties: dict[str, dict[str, float]]
    configurations: dict[str, dict[str, Any]]

    def configuration(self, name: str) -> NnunetConfiguration:
        """The named configuration with ``inherits_from`` resolved and its names checked.

        Args:
            name: e.g. ``"3d_fullres"``.

        Returns:
            The configuration.

        Raises:
            ConfigError: an unknown name, a cascade stage (needs the previous stage's segmentation), or a
                preprocessor, resampling function or normalisation medseg does not implement.
            InputError: missing or malformed entries.
        """
        if name not in self.configurations:
            raise unknown_choice(f"configuration in {self.path}", name, self.configurations)
        where = f"{self.path} configuration {name!r}"
        try:
            return self._checked(name, self._resolved(name, ()), where)
        except MedsegError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: missing or malformed entry ({exc!r})") from exc

    def _checked(self, name: str, entry: dict[str, Any], where: str) -> NnunetConfiguration:
        if entry.get("previous_stage"):
            raise ConfigError(f"{where} is a cascade stage (needs the segmentation of {entry['previous_stage']!r}); "
                              "medseg runs single-stage configurations only")
        preprocessor = entry.get("preprocessor_name", "DefaultPreprocessor")
        if preprocessor != "DefaultPreprocessor":
            raise unknown_choice(f"preprocessor in {where}", preprocessor, ("DefaultPreprocessor",))
        for key in ("resampling_fn_data", "resampling_fn_probabilities"):
            if entry.get(key) not in RESAMPLING_FUNCTIONS:
                raise unknown_choice(f"{key} in {where}", entry.get(key), RESAMPLING_FUNCTIONS)
        schemes = tuple(str(s) for s in entry["normalization_schemes"])
        for scheme in schemes:
            if scheme not in NORMALIZATIONS:
                raise unknown_choice(f"normalization scheme in {where}", scheme, NORMALIZATIONS)
        arch = entry.get("architecture")
        if not isinstance(arch, Mapping):
            raise ConfigError(f"{where}: no 'architecture' entry (plans written by older nnU-Net versions are not "
                              "supported; re-plan the dataset with a current nnU-Net)")
        patch = tuple(int(p) for p in entry["patch_size"])
        spacing = tuple(float(s) for s in entry["spacing"])
        if len(patch) not in (2, 3) or len(spacing) != len(patch):
            raise ConfigError(f"{where}: patch_size {list(patch)} and spacing {list(spacing)} must both have 2 or 3 "
                              "entries")
        return NnunetConfiguration(
            name=name,
            patch_size=patch,
            spacing=spacing,
            normalization_schemes=schemes,
            use_mask_for_norm=tuple(bool(v) for v in entry["use_mask_for_norm"]),
            resampling_data=dict(entry.get("resampling_fn_data_kwargs") or {}),
            resampling_probabilities=dict(entry.get("resampling_fn_probabilities_kwargs") or {}),
            network_class_name=str(arch["network_class_name"]),
            arch_kwargs=dict(arch["arch_kwargs"]),
            arch_kwargs_requires_import=tuple(arch.get("_kw_requires_import", ())),
        )

    def _resolved(self, name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in seen:
            loop = " -> ".join(seen + (name,))
            raise ConfigError(f"{self.path}: configurations inherit from each other in a loop: {loop}")
        if name not in self.configurations:
            raise unknown_choice(f"configuration in {self.path}", name, self.configurations)
        entry = dict(self.configurations[name])
        parent = entry.pop("inherits_from", None)
        if parent is None:
            return entry
        merged = self._resolved(str(parent), seen + (name,))
        merged.update(entry)
        return merged


def read_plans(path: Path) -> NnunetPlans:
    """Read ``plans.json``.

    Args:
        path: the file.

    Returns:
        The plans.

    Raises:
        InputError: missing or malformed file, or missing keys.
        ConfigError: an image reader or label manager medseg does not implement.
    """
    content = read_json(path)
    try:
        reader = str(content.get("image_reader_writer", "SimpleITKIO"))
        forward = tuple(int(a) for a in content["transpose_forward"])
        backward = tuple(int(a) for a in content["transpose_backward"])
        properties = dict(content.get("foreground_intensity_properties_per_channel", {}))
        configurations = dict(content["configurations"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not an nnU-Net v2 plans file ({exc!r} missing or malformed)") from exc
    if reader not in READERS:
        raise unknown_choice(f"image reader in {path}", reader, READERS)
    label_manager = content.get("label_manager", "LabelManager")
    if label_manager != "LabelManager":
        raise unknown_choice(f"label manager in {path}", label_manager, ("LabelManager",))
    if sorted(forward) != [0, 1, 2] or [forward[b] for b in backward] != [0, 1, 2]:
        raise InputError(f"{path}: transpose_forward {list(forward)} and transpose_backward {list(backward)} must be "
                         "inverse permutations of (0, 1, 2)")
    return NnunetPlans(path, reader, forward, backward, properties, configurations)


@dataclass(frozen=True)
class NnunetLabels:
    """What the network's output channels mean, from ``dataset.json``.

    Attributes:
        channel_names: input channel names in order (``channel_names`` of dataset.json).
        head_names: one name per output channel.
        region_based: sigmoid outputs, one per region (labels given as lists), converted to a label map by
            ``regions_class_order``; otherwise softmax outputs, one per label value.
        label_values: softmax: the label value of each output channel; regions: ``regions_class_order``.
        regions: region-based only: head name -> the nnU-Net label values it unites.
        to_source: nnU-Net label value -> value of the dataset the model was converted from (written by
            ``medseg convert``), or ``None`` when ``dataset.json`` has no such record.
    """

    channel_names: tuple[str, ...]
    head_names: tuple[str, ...]
    region_based: bool
    label_values: tuple[int, ...]
    regions: dict[str, tuple[int, ...]] | None
    to_source: dict[int, int] | None

    @property
    def num_heads(self) -> int:
        """Number of network output channels."""
        return len(self.head_names)


def _values(value: Any, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise InputError(f"{where}: label values must be non-negative integers or lists of them, got {value!r}")
    return tuple(int(v) for v in values)


def read_labels(path: Path) -> NnunetLabels:
    """Read the label and channel declarations of ``dataset.json`` the way nnU-Net's ``LabelManager`` does.

    Region-based when any label is a list of more than one value; the ``ignore`` label is not an output.

    Args:
        path: the ``dataset.json`` of the results folder.

    Returns:
        The label record.

    Raises:
        InputError: missing keys, a background that is not 0, or ``regions_class_order`` of the wrong length.
    """
    content = read_json(path)
    channels = content.get("channel_names", content.get("modality"))
    labels = content.get("labels")
    if not isinstance(channels, Mapping) or not channels or not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{path}: needs 'channel_names' and 'labels' objects")
    try:
        channel_names = tuple(str(channels[str(i)]) for i in range(len(channels)))
    except KeyError as exc:
        raise InputError(f"{path}: channel_names keys must be \"0\"..\"{len(channels) - 1}\"") from exc
    parsed = {str(name): _values(value, f"{path} label {name!r}") for name, value in labels.items()}
    if parsed.get("background") != (0,):
        raise InputError(f"{path}: labels must declare 'background': 0, got {labels.get('background')!r}")
    parsed.pop("ignore", None)
    region_based = any(len(v) > 1 for v in parsed.values())
    if region_based:
        regions = {name: v for name, v in parsed.items() if set(v) != {0}}
        order = content.get("regions_class_order")
        if not isinstance(order, list) or len(order) != len(regions):
            raise InputError(f"{path}: a region-based dataset needs regions_class_order with one value per region "
                             f"({len(regions)}), got {order!r}")
        label_values = _values(order, f"{path} regions_class_order")
        heads = tuple(regions)
    else:
        regions = None
        by_value = sorted((v[0], name) for name, v in parsed.items())
        label_values = tuple(v for v, _ in by_value)
        heads = tuple(name for _, name in by_value)
    record = content.get(SOURCE_RECORD_KEY)
    to_source = None
    if isinstance(record, Mapping) and isinstance(record.get("nnunet_to_source"), Mapping):
        to_source = {int(k): int(v) for k, v in record["nnunet_to_source"].items()}
    return NnunetLabels(channel_names, heads, region_based, label_values, regions, to_source)


def _layer_class(name: Any, key: str, where: str) -> Any:
    if name is None:
        return None
    text = str(name)
    if text in _RESIDUAL_BLOCKS:
        from dynamic_network_architectures.building_blocks import residual

        return getattr(residual, _RESIDUAL_BLOCKS[text])
    module, _, cls = text.rpartition(".")
    if (module == "torch.nn" or module.startswith("torch.nn.modules.")) and cls in _TORCH_LAYERS:
        return getattr(nn, cls)
    valid = [f"torch.nn.{n}" for n in sorted(_TORCH_LAYERS)] + sorted(_RESIDUAL_BLOCKS)
    raise unknown_choice(f"class for {key!r} in {where}", text, valid)


def build_network(configuration: NnunetConfiguration, in_channels: int, out_channels: int, where: str) -> nn.Module:
    """Build the configuration's network (without deep supervision), in eval mode.

    Args:
        configuration: from :meth:`NnunetPlans.configuration`.
        in_channels: input channels (``len(dataset.json channel_names)``).
        out_channels: output channels (:attr:`NnunetLabels.num_heads`).
        where: names the plans file for messages.

    Returns:
        The network, randomly initialised: ``(B, in_channels, *patch) -> (B, out_channels, *patch)``.

    Raises:
        ConfigError: a network class or layer class outside the supported ones, or arguments the class refuses.
        MissingDependencyError: ``dynamic_network_architectures`` is not installed.
    """
    unet = require(_UNET_MODULE, "running nnU-Net model folders")
    if configuration.network_class_name not in NETWORK_CLASSES:
        raise unknown_choice(f"network class in {where}", configuration.network_class_name, NETWORK_CLASSES)
    network_class = getattr(unet, configuration.network_class_name.rpartition(".")[2])
    kwargs = dict(configuration.arch_kwargs)
    for key in configuration.arch_kwargs_requires_import:
        kwargs[key] = _layer_class(kwargs.get(key), key, where)
    kwargs["deep_supervision"] = False
    try:
        network = network_class(input_channels=in_channels, num_classes=out_channels, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{where}: cannot build {configuration.network_class_name} from arch_kwargs ({exc})") from exc
    return network.eval()
