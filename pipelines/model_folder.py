"""Model folders: a trained network as ``config.json`` (a :class:`~medseg.config.ModelConfig`) + ``weights.safetensors``.

A model folder is what training produces (``RUN_DIR/model``) and what segmentation and export consume.
Loading never unpickles: the network is rebuilt from the registry by the names in ``config.json`` and its
weights come from safetensors. Other files in the folder (``.pt``, ``.pth``, ``.pkl`` ...) are ignored.
``info.json``, when present, records where the weights came from (epoch, step, validation Dice); it is
informational and not needed to load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.config import ModelConfig, model_config_to_json
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_write, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
INFO_NAME = "info.json"


def save_model_folder(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: ModelConfig,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and configuration to a model folder, each file atomically.

    The weights are written first and ``config.json`` last, so a folder with a ``config.json`` always has
    weights beside it.

    Args:
        path: the model folder (created if missing; existing files are replaced).
        model: the network; its ``state_dict()`` (parameters and persistent buffers) is saved.
        model_config: how to rebuild ``model``; validated before anything is written.
        info: optional JSON-able provenance written to ``info.json`` (e.g. epoch and validation Dice).

    Returns:
        The folder path.

    Raises:
        ConfigError: ``model_config`` is inconsistent.
    """
    from safetensors.torch import save_file

    model_config.validate()
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # Copies break storage sharing between tied tensors, which safetensors refuses to write.
    weights = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}
    with atomic_write(folder / WEIGHTS_NAME) as tmp:
        save_file(weights, str(tmp), metadata={"format": "medseg-model", "network": model_config.network})
    if info is not None:
        atomic_write_text(folder / INFO_NAME, json.dumps(dict(info), indent=2) + "\n")
    atomic_write_text(folder / CONFIG_NAME, model_config_to_json(model_config))
    return folder


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read the ``config.json`` of a model folder.

    Args:
        path: the model folder (or its ``config.json``).

    Returns:
        The validated :class:`ModelConfig`.

    Raises:
        InputError: the folder or ``config.json`` is missing, or it is not valid JSON.
        ConfigError: keys or values are invalid, or the network name is not registered (the message names
            the file and the valid values).
    """
    config_path = Path(path)
    if config_path.is_dir() or config_path.name != CONFIG_NAME:
        config_path = config_path / CONFIG_NAME
    if not config_path.is_file():
        raise InputError(f"not a model folder: {config_path} is missing")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InputError(f"{config_path} is nested too deeply to be a model configuration") from exc
    config = ModelConfig.from_dict(data, source=str(config_path))
    from medseg.networks import get_info

    try:
        get_info(config.network)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    return config


def build_network(model_config: ModelConfig) -> nn.Module:
    """Create the (untrained) network a :class:`ModelConfig` describes.

    Args:
        model_config: the configuration.

    Returns:
        The network, in training mode, on the CPU.

    Raises:
        ConfigError: unknown network, variant or option.
    """
    from medseg.networks import create

    return create(
        model_config.network,
        model_config.spatial_dims,
        model_config.in_channels,
        model_config.out_channels,
        variant=model_config.variant,
        **model_config.network_kwargs,
    )


def load_model_folder(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild a trained network from a model folder, without unpickling anything.

    Args:
        path: the model folder (holding ``config.json`` and ``weights.safetensors``).
        device: where to place the network.

    Returns:
        ``(model, model_config)``; the model is in eval mode on ``device``. In eval mode it returns one
        logits tensor ``(B, out_channels, *spatial)`` per input ``(B, in_channels, *spatial)``.

    Raises:
        InputError: missing files, unreadable weights, or weights that do not fit the configured network.
        ConfigError: invalid or unknown configuration values.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    model_config = load_model_config(folder)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise InputError(f"model folder {folder}: {WEIGHTS_NAME} is missing")
    try:
        shapes = weight_shapes(weights_path)
        # Build on the meta device first: a config.json declaring absurd sizes is refused by comparing
        # shapes with the weights file before a single parameter is allocated.
        with torch.device("meta"):
            check_weights_fit(build_network(model_config).state_dict(), shapes, source=str(weights_path))
        weights = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise InputError(f"model folder {folder}: cannot read {WEIGHTS_NAME}: {exc}") from exc
    model = build_network(model_config)
    load_weights(model, weights, source=str(weights_path))
    return model.to(device).eval(), model_config


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes stored in a safetensors file, read from its header without loading any data."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``weights`` into ``model``, requiring exactly the model's keys and shapes.

    Args:
        model: the network.
        weights: name -> tensor.
        source: the file the weights came from, for error messages.

    Raises:
        InputError: missing, unexpected or wrongly shaped tensors (the message lists a few).
    """
    check_weights_fit(model.state_dict(), {k: tuple(v.shape) for k, v in weights.items()}, source)
    model.load_state_dict(dict(weights), strict=True)


def check_weights_fit(
    expected: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Require exactly the expected keys with the expected shapes.

    Args:
        expected: the network's state dict (tensors may live on the meta device).
        shapes: name -> shape of the stored tensors.
        source: the weights file, for error messages.

    Raises:
        InputError: missing, unexpected or wrongly shaped tensors (the message lists a few).
    """
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong_shape = sorted(
        name for name in set(expected) & set(shapes) if tuple(expected[name].shape) != tuple(shapes[name])
    )
    if missing or unexpected or wrong_shape:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if names:
                shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise InputError(f"{source} does not fit the configured network; " + "; ".join(parts))
