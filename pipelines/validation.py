"""Validation during training: Gaussian-weighted sliding-window prediction and Dice per class or region.

Validation runs on the validation fold after the deterministic part of the training preprocessing
(orientation, spacing, label-to-region conversion, crop, normalisation), so Dice is measured on the
network's own grid. A 2D network predicts a 3D volume slice by slice along its last axis.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.config import ModelConfig
from medseg.errors import InputError


def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    spatial_dims: int,
    window: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Logits of a whole image by Gaussian-weighted sliding windows (MONAI ``sliding_window_inference``).

    Args:
        model: the network in eval mode, returning logits ``(B, out_channels, *window)``.
        image: ``(C, *S)`` on the model's device, with ``len(S) == spatial_dims``, or a 3D ``(C, H, W, D)``
            volume for a 2D network (predicted slice by slice along the last axis).
        spatial_dims: the network's spatial dimensions.
        window: the window size (the training patch), a multiple of the network's divisor.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass.
        autocast: optional autocast context for the forward passes.

    Returns:
        Float32 logits ``(out_channels, *S)`` on the image's device.

    Raises:
        InputError: the image has neither ``spatial_dims`` nor (for a 2D network) 3 spatial axes.
    """
    from monai.inferers import sliding_window_inference

    window = tuple(int(w) for w in window)
    image_dims = image.ndim - 1
    context = autocast if autocast is not None else contextlib.nullcontext()

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        with context:
            out = model(batch)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float()

    if image_dims == spatial_dims:
        logits = sliding_window_inference(
            image[None], window, sw_batch_size, predictor, overlap=overlap, mode="gaussian"
        )
        return torch.as_tensor(logits)[0]
    if spatial_dims == 2 and image_dims == 3:
        slices = image.movedim(-1, 0)  # (D, C, H, W): one 2D image per slice
        outputs = []
        for start in range(0, slices.shape[0], sw_batch_size):
            chunk = slices[start : start + sw_batch_size]
            outputs.append(
                torch.as_tensor(
                    sliding_window_inference(chunk, window, chunk.shape[0], predictor, overlap=overlap, mode="gaussian")
                )
            )
        return torch.cat(outputs, dim=0).movedim(0, -1)
    raise InputError(
        f"a {spatial_dims}D network cannot predict an image of shape {tuple(image.shape)} "
        f"(expected (C, *{spatial_dims} spatial axes))"
    )


def dice_per_class(logits: torch.Tensor, label: torch.Tensor, model_config: ModelConfig) -> dict[str, float]:
    """Dice of the thresholded / arg-maxed prediction for every foreground class or region.

    A class absent from both prediction and reference gives NaN (it is left out of means).

    Args:
        logits: ``(out_channels, *S)``.
        label: softmax models: class indices ``(1, *S)`` or ``(*S)``; sigmoid models: region masks
            ``(out_channels, *S)``.
        model_config: gives the activation and the class / region names.

    Returns:
        Class or region name -> Dice in [0, 1] or NaN. For softmax models the background is omitted.
    """
    from medseg.metrics import dice

    names = model_config.class_names or [str(c) for c in range(model_config.out_channels)]
    result: dict[str, float] = {}
    if model_config.output_activation == "softmax":
        predicted = logits.argmax(dim=0).cpu().numpy()
        reference = label.cpu().numpy()
        if reference.ndim == predicted.ndim + 1 and reference.shape[0] == 1:
            reference = reference[0]
        if reference.shape != predicted.shape:
            raise InputError(f"validation label shape {tuple(label.shape)} does not fit prediction {predicted.shape}")
        for channel in range(1, logits.shape[0]):
            result[names[channel]] = dice(predicted == channel, reference == channel, convention="nnunet")
    else:
        predicted = (logits > 0).cpu().numpy()
        reference = label.cpu().numpy() > 0.5
        if reference.shape != predicted.shape:
            raise InputError(f"validation label shape {tuple(label.shape)} does not fit prediction {predicted.shape}")
        for channel in range(logits.shape[0]):
            result[names[channel]] = dice(predicted[channel], reference[channel], convention="nnunet")
    return result


def validate(
    model: nn.Module,
    items: Iterable[Mapping[str, Any]],
    model_config: ModelConfig,
    window: Sequence[int],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Mean Dice per class or region over preprocessed validation cases.

    Args:
        model: the network (set to eval mode here and back to train mode afterwards).
        items: preprocessed cases with ``"image"`` ``(C, *S)`` and ``"label"`` tensors.
        model_config: the model's configuration.
        window: sliding-window size.
        device: where to run the network.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        autocast: optional autocast context.

    Returns:
        Name -> mean Dice over the cases where it is defined (NaN when it is nowhere defined).
    """
    return summarize_dice(
        dice_per_case(model, items, model_config, window, device, overlap, sw_batch_size, autocast)
    )


def dice_per_case(
    model: nn.Module,
    items: Iterable[Mapping[str, Any]],
    model_config: ModelConfig,
    window: Sequence[int],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    autocast: contextlib.AbstractContextManager | None = None,
) -> list[dict[str, float]]:
    """Dice per class or region of each preprocessed validation case (arguments as in :func:`validate`).

    Data-parallel training scores a share of the cases on each process and gathers these lists.

    Returns:
        One ``{name: Dice or NaN}`` per case, in the order of ``items``.
    """
    was_training = model.training
    model.eval()
    per_case: list[dict[str, float]] = []
    try:
        with torch.no_grad():
            for item in items:
                image = plain_tensor(item["image"]).to(device=device, dtype=torch.float32)
                logits = predict_logits(
                    model, image, model_config.spatial_dims, window, overlap, sw_batch_size, autocast
                )
                per_case.append(dice_per_class(logits, plain_tensor(item["label"]), model_config))
    finally:
        model.train(was_training)
    return per_case


def summarize_dice(per_case: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean Dice per class or region over cases, leaving out the cases where it is NaN (undefined).

    Args:
        per_case: one ``{name: Dice or NaN}`` per case, all with the same names.

    Returns:
        Name -> mean (NaN when no case defines it); ``{}`` without cases.
    """
    if not per_case:
        return {}
    names = list(per_case[0])
    summary = {}
    for name in names:
        values = np.array([case[name] for case in per_case], dtype=np.float64)
        summary[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return summary


def plain_tensor(value: Any) -> torch.Tensor:
    """A plain ``torch.Tensor`` view of a tensor, MONAI ``MetaTensor`` or array (metadata dropped).

    Args:
        value: the data.
    """
    if hasattr(value, "as_tensor"):
        return value.as_tensor()
    return torch.as_tensor(value)


def mean_dice(per_class: Mapping[str, float]) -> float:
    """The mean over classes of the defined (non-NaN) Dice values; NaN when none is defined.

    Args:
        per_class: name -> Dice.
    """
    values = [v for v in per_class.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan
