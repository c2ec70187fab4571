"""Training losses: Dice + cross-entropy for exclusive labels, Dice + binary cross-entropy for regions.

The loss follows the model's output activation: ``"softmax"`` (one channel per class, channel 0 the
background; target: class indices ``(B, 1, *S)``) uses a softmax Dice over the foreground classes plus
cross-entropy; ``"sigmoid"`` (one channel per possibly overlapping region such as BraTS TC/WT/ET; target:
binary masks ``(B, C, *S)``) uses a sigmoid Dice plus binary cross-entropy on every channel. With deep
supervision the network returns logits at several resolutions; each is compared with the target
downsampled by nearest neighbour, with weights ``1, 1/2, 1/4, ...`` normalised to sum to one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError, InputError, unknown_choice


class SegmentationLoss(nn.Module):
    """``dice_weight * Dice loss + ce_weight * (binary) cross-entropy``, deep supervision aware.

    Args:
        activation: ``"softmax"`` or ``"sigmoid"``, the model's output activation.
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        dice_batch: compute Dice over the whole batch (more stable with patches that miss a class) instead of
            per sample.
        smooth: additive smoothing of the Dice numerator and denominator.
        batch_sum: with ``dice_batch``, applied to the per-channel sums of this process's batch before the
            ratio, e.g. :meth:`medseg.pipelines.distributed.DistributedContext.global_batch_sum` so that
            data-parallel processes compute the Dice of the whole global batch; ``None``: this batch only.

    Raises:
        ConfigError: unknown activation or negative weights.
    """

    def __init__(
        self,
        activation: str,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        dice_batch: bool = True,
        smooth: float = 1e-5,
        batch_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise unknown_choice("output activation", activation, ("softmax", "sigmoid"))
        if dice_weight < 0 or ce_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got dice {dice_weight}, ce {ce_weight}")
        self.activation = activation
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.dice_batch = bool(dice_batch)
        self.smooth = float(smooth)
        self.batch_sum = batch_sum

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            outputs: logits ``(B, C, *S)``, or a list of them at decreasing resolution (deep supervision,
                full resolution first).
            target: softmax: class indices ``(B, 1, *S)``; sigmoid: binary masks ``(B, C, *S)``.

        Returns:
            The scalar loss (float32).
        """
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, target)
        outputs = list(outputs)
        weights = deep_supervision_weights(len(outputs))
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for weight, logits in zip(weights, outputs):
            total = total + weight * self.single(logits, downsample_target(target, logits.shape[2:]))
        return total

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one logits tensor ``(B, C, *S)`` against a target of the same spatial size.

        Args:
            logits: network output.
            target: as in :meth:`forward`.

        Returns:
            The scalar loss (float32).

        Raises:
            InputError: shapes that do not fit together.
        """
        logits = logits.float()
        if logits.shape[2:] != target.shape[2:] or logits.shape[0] != target.shape[0]:
            raise InputError(f"loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
        if self.activation == "softmax":
            if target.shape[1] != 1:
                raise InputError(f"softmax loss expects class indices (B, 1, *S); got target {tuple(target.shape)}")
            indices = target[:, 0].long()
            probs = torch.softmax(logits, dim=1)
            onehot = F.one_hot(indices, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
            # Dice over the foreground classes, as nnU-Net does; a single-channel output keeps its channel.
            start = 1 if logits.shape[1] > 1 else 0
            dice = soft_dice_loss(probs[:, start:], onehot[:, start:], self.dice_batch, self.smooth, self.batch_sum)
            ce = F.cross_entropy(logits, indices)
        else:
            if target.shape[1] != logits.shape[1]:
                raise InputError(
                    f"sigmoid loss expects one target channel per output channel; "
                    f"got logits {tuple(logits.shape)}, target {tuple(target.shape)}"
                )
            target = target.float()
            dice = soft_dice_loss(torch.sigmoid(logits), target, self.dice_batch, self.smooth, self.batch_sum)
            ce = F.binary_cross_entropy_with_logits(logits, target)
        return self.dice_weight * dice + self.ce_weight * ce


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    batch: bool,
    smooth: float,
    batch_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``1 - mean_c (2 |P.G| + s) / (|P| + |G| + s)``.

    Args:
        probs: probabilities ``(B, C, *S)``.
        target: binary masks ``(B, C, *S)``.
        batch: sum over the batch before the ratio (one Dice per channel) instead of one per sample and channel.
        smooth: the additive smoothing ``s``.
        batch_sum: with ``batch``, maps the ``(C,)`` sums of this batch to those of a larger one (the global
            batch of data-parallel training) before the ratio.

    Returns:
        The scalar loss.
    """
    dims = tuple(range(2, probs.ndim))
    if batch:
        dims = (0, *dims)
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    if batch and batch_sum is not None:
        # One collective for both sums.
        both = batch_sum(torch.stack([intersection, denominator]))
        intersection, denominator = both[0], both[1]
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


def deep_supervision_weights(n: int) -> list[float]:
    """Weights ``1, 1/2, 1/4, ...`` for ``n`` outputs, normalised to sum to one.

    Args:
        n: number of outputs (>= 1).
    """
    raw = [0.5**i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a label target to ``size`` by nearest neighbour (no new label values appear).

    Args:
        target: ``(B, C, *S)`` class indices or binary masks.
        size: the output spatial size.

    Returns:
        ``(B, C, *size)`` of the same dtype as ``target``.
    """
    size = tuple(int(s) for s in size)
    if tuple(target.shape[2:]) == size:
        return target
    return F.interpolate(target.float(), size=size, mode="nearest").to(target.dtype)
