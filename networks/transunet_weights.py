"""Load the official ImageNet-21k ``R50+ViT-B_16.npz`` (Google's ViT hybrid checkpoint) into a TransUNet.

Nothing is downloaded: the user supplies the file. It is read with ``numpy.load(allow_pickle=False)``; the
official array names are mapped to the model's parameters with the layout conversions below. The CUP
decoder and the segmentation head are not in the checkpoint and keep their initialisation (as in TransUNet).

=====================================================  =====================================================
official key                                           conversion
=====================================================  =====================================================
``conv_root/kernel``, ``block{b}/unit{u}/conv{1,2,3}`` HWIO -> OIHW; the root's RGB filters are averaged
``/kernel``, ``.../conv_proj/kernel``                  and repeated for ``in_channels != 3`` (the StdConv
                                                       standardisation makes the scale irrelevant)
``gn_root/{scale,bias}``, ``.../gn{1,2,3,_proj}/...``  flattened
``embedding/{kernel,bias}``                            HWIO -> OIHW
``Transformer/posembed_input/pos_embedding``           class token dropped; grid resampled (bilinear) to
                                                       the model's ``grid_size``
``.../MultiHeadDotProductAttention_1/{query,key,       ``(D, H, Dh) -> (D, D)``, transposed to ``(out, in)``
value}/kernel``
``.../MultiHeadDotProductAttention_1/out/kernel``      ``(H, Dh, D) -> (D, D)``, transposed
``.../MlpBlock_3/Dense_{0,1}/kernel``                  transposed
``.../LayerNorm_0``, ``LayerNorm_2``,                  attention_norm, ffn_norm, encoder_norm
``Transformer/encoder_norm``
=====================================================  =====================================================

3D models (``spatial_dims=3``): every 2D kernel is inflated along the first spatial axis (I3D inflation:
repeated ``k`` times and divided by ``k``), and the 2D position-embedding grid is resampled to the in-plane
grid and repeated along the first axis. With ``load_stem=False`` the stem (ResNet and patch embedding) is
left untouched and only the transformer is loaded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from functools import partial
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError, InputError, UnsafeFileError
from medseg.networks.transunet import TransUNet

Converter = Callable[[np.ndarray, torch.Tensor], np.ndarray]


def load_pretrained_npz(model: TransUNet, path: str | PathLike[str], *, load_stem: bool = True) -> list[str]:
    """Copy the official R50+ViT-B/16 ImageNet-21k weights from ``path`` into ``model``.

    Args:
        model: a :class:`~medseg.networks.transunet.TransUNet` whose encoder matches the checkpoint
            (for ``R50+ViT-B_16.npz``: the ``"default"`` / ``"r50_vit_b16"`` variant); any ``in_channels``,
            ``out_channels``, ``grid_size`` and 2D or 3D.
        path: the ``.npz`` file.
        load_stem: also load the ResNet stem and the patch embedding (set False to load only the
            transformer, e.g. for a 3D model trained from scratch at the stem).

    Returns:
        The names of the model parameters that were overwritten.

    Raises:
        ConfigError: ``model`` is not a TransUNet.
        InputError: the file is missing or not an ``.npz``, a needed key is missing, or an array's shape does
            not match the model (the message names the key, both shapes and the file).
        UnsafeFileError: the file holds pickled objects.
    """
    if not isinstance(model, TransUNet):
        raise ConfigError(f"load_pretrained_npz loads TransUNet weights; got a {type(model).__name__}")
    path = Path(path)
    arrays = _read_npz(path)
    plan = _mapping(model, load_stem)
    missing = [key for key, _, _ in plan if key not in arrays]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InputError(
            f"{path}: missing key(s) {shown}; is this the R50+ViT-B_16 checkpoint and does the model's "
            f"depth/stem match it?"
        )
    params = dict(model.named_parameters())
    converted = {}
    for key, name, convert in plan:
        target = params[name]
        value = convert(arrays[key], target)
        if tuple(value.shape) != tuple(target.shape):
            raise InputError(
                f"{path}: {key} has shape {arrays[key].shape} (-> {tuple(value.shape)}) but {name} expects "
                f"{tuple(target.shape)}; the model configuration does not match the checkpoint"
            )
        converted[name] = value
    with torch.no_grad():
        for name, value in converted.items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(value)).to(params[name].dtype))
    return list(converted)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (pass the official R50+ViT-B_16.npz)")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise UnsafeFileError(f"{path}: contains pickled objects; refused (weights are never unpickled)") from exc
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc


def _mapping(model: TransUNet, load_stem: bool) -> list[tuple[str, str, Converter]]:
    """``(official key, parameter name, converter)`` for every parameter the checkpoint provides."""
    plan: list[tuple[str, str, Converter]] = []
    if load_stem:
        plan += [
            ("conv_root/kernel", "stem.root.conv.weight", _root_kernel),
            ("gn_root/scale", "stem.root.gn.weight", _flat),
            ("gn_root/bias", "stem.root.gn.bias", _flat),
        ]
        for block_name, block in model.stem.body.named_children():
            for unit_name, unit in block.named_children():
                prefix, module = f"{block_name}/{unit_name}", f"stem.body.{block_name}.{unit_name}"
                convs = ["conv1", "conv2", "conv3"] + (["conv_proj"] if unit.conv_proj is not None else [])
                for conv in convs:
                    plan.append((f"{prefix}/{conv}/kernel", f"{module}.{conv}.weight", _conv_kernel))
                norms = ["gn1", "gn2", "gn3"] + (["gn_proj"] if unit.conv_proj is not None else [])
                for gn in norms:
                    plan.append((f"{prefix}/{gn}/scale", f"{module}.{gn}.weight", _flat))
                    plan.append((f"{prefix}/{gn}/bias", f"{module}.{gn}.bias", _flat))
        plan += [
            ("embedding/kernel", "embeddings.patch.weight", _conv_kernel),
            ("embedding/bias", "embeddings.patch.bias", _flat),
        ]
    pos_embedding = partial(_pos_embedding, grid=model.grid_size)
    plan.append(("Transformer/posembed_input/pos_embedding", "embeddings.position_embeddings", pos_embedding))
    for i in range(len(model.encoder.layers)):
        src, dst = f"Transformer/encoderblock_{i}", f"encoder.layers.{i}"
        attn = f"{src}/MultiHeadDotProductAttention_1"
        for proj in ("query", "key", "value"):
            plan.append((f"{attn}/{proj}/kernel", f"{dst}.attn.{proj}.weight", _qkv_kernel))
            plan.append((f"{attn}/{proj}/bias", f"{dst}.attn.{proj}.bias", _flat))
        plan += [
            (f"{attn}/out/kernel", f"{dst}.attn.out.weight", _out_kernel),
            (f"{attn}/out/bias", f"{dst}.attn.out.bias", _flat),
            (f"{src}/LayerNorm_0/scale", f"{dst}.attention_norm.weight", _flat),
            (f"{src}/LayerNorm_0/bias", f"{dst}.attention_norm.bias", _flat),
            (f"{src}/LayerNorm_2/scale", f"{dst}.ffn_norm.weight", _flat),
            (f"{src}/LayerNorm_2/bias", f"{dst}.ffn_norm.bias", _flat),
            (f"{src}/MlpBlock_3/Dense_0/kernel", f"{dst}.ffn.fc1.weight", _dense_kernel),
            (f"{src}/MlpBlock_3/Dense_0/bias", f"{dst}.ffn.fc1.bias", _flat),
            (f"{src}/MlpBlock_3/Dense_1/kernel", f"{dst}.ffn.fc2.weight", _dense_kernel),
            (f"{src}/MlpBlock_3/Dense_1/bias", f"{dst}.ffn.fc2.bias", _flat),
        ]
    plan += [
        ("Transformer/encoder_norm/scale", "encoder.encoder_norm.weight", _flat),
        ("Transformer/encoder_norm/bias", "encoder.encoder_norm.bias", _flat),
    ]
    return plan


def _flat(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    return value.reshape(-1) if target.ndim == 1 else value


def _conv_kernel(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """HWIO -> OIHW; for a 3D target ``(O, I, D, H, W)`` inflate along D."""
    if value.ndim != 4:
        return value
    kernel = value.transpose(3, 2, 0, 1)
    if target.ndim == 5:
        depth = target.shape[2]
        kernel = np.repeat(kernel[:, :, None], depth, axis=2) / depth
    return kernel


def _root_kernel(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """Root conv: as :func:`_conv_kernel`, adapting the 3 RGB input filters to the model's input channels."""
    kernel = _conv_kernel(value, target)
    in_channels = target.shape[1]
    if kernel.ndim >= 4 and kernel.shape[1] == 3 and in_channels != 3:
        kernel = np.repeat(kernel.mean(axis=1, keepdims=True), in_channels, axis=1)
    return kernel


def _qkv_kernel(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """``(D_in, heads, head_dim) -> (heads * head_dim, D_in)``."""
    return value.reshape(value.shape[0], -1).T if value.ndim == 3 else value


def _out_kernel(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """``(heads, head_dim, D_out) -> (D_out, heads * head_dim)``."""
    return value.reshape(-1, value.shape[-1]).T if value.ndim == 3 else value


def _dense_kernel(value: np.ndarray, target: torch.Tensor) -> np.ndarray:
    return value.T if value.ndim == 2 else value


def _pos_embedding(value: np.ndarray, target: torch.Tensor, *, grid: tuple[int, ...]) -> np.ndarray:
    """``(1, [1 +] g*g, D)`` -> ``(1, prod(grid), D)`` (class token dropped, grid resampled, 3D repeated)."""
    if value.ndim != 3 or value.shape[0] != 1:
        return value
    n, hidden = value.shape[1], value.shape[2]
    side = int(round(np.sqrt(n)))
    if side * side != n:  # a leading class token
        side = int(round(np.sqrt(n - 1)))
        if side * side != n - 1:
            return value
        value = value[:, 1:]
    table = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    table = table.transpose(1, 2).reshape(1, hidden, side, side)
    plane = grid[-2:]
    if tuple(plane) != (side, side):
        table = F.interpolate(table, size=plane, mode="bilinear", align_corners=False)
    if len(grid) == 3:
        table = table.unsqueeze(2).expand(1, hidden, grid[0], *plane)
    return table.flatten(2).transpose(1, 2).numpy()

