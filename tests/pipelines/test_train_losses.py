"""Training losses: Dice + CE (softmax classes), Dice + BCE (sigmoid regions), deep supervision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError, InputError
from medseg.pipelines.losses import SegmentationLoss, deep_supervision_weights, downsample_target, soft_dice_loss


def _labels(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (2, 1, 8, 8, 8), generator=generator)


def test_softmax_loss_is_dice_plus_cross_entropy():
    target = _labels()
    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = SegmentationLoss("softmax", dice_weight=0.0, ce_weight=1.0)(logits, target)
    assert torch.allclose(loss, F.cross_entropy(logits, target[:, 0]))
    onehot = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    probs = logits.softmax(1)
    # Foreground classes only, batch Dice: one ratio per class.
    inter = (probs * onehot)[:, 1:].sum((0, 2, 3, 4))
    denom = probs[:, 1:].sum((0, 2, 3, 4)) + onehot[:, 1:].sum((0, 2, 3, 4))
    expected_dice = 1 - ((2 * inter + 1e-5) / (denom + 1e-5)).mean()
    dice_only = SegmentationLoss("softmax", dice_weight=1.0, ce_weight=0.0)(logits, target)
    assert torch.allclose(dice_only, expected_dice)


def test_sigmoid_loss_is_dice_plus_bce_per_region():
    target = (torch.rand(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).to(torch.uint8)
    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    loss = SegmentationLoss("sigmoid", dice_weight=0.5, ce_weight=2.0)(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target.float())
    dice = soft_dice_loss(logits.sigmoid(), target.float(), batch=True, smooth=1e-5)
    assert torch.allclose(loss, 0.5 * dice + 2.0 * bce)


def test_perfect_prediction_scores_lower_than_a_wrong_one():
    target = _labels()
    perfect = 20.0 * F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    wrong = perfect.roll(1, dims=1)
    loss = SegmentationLoss("softmax")
    assert loss(perfect, target) < 0.01 < loss(wrong, target)


def test_deep_supervision_weights_and_downsampled_targets():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    target = _labels()
    small = downsample_target(target, (4, 4, 4))
    assert small.shape == (2, 1, 4, 4, 4) and small.dtype == target.dtype
    assert torch.equal(small, target[..., ::2, ::2, ::2])
    logits = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4)]
    loss_fn = SegmentationLoss("softmax")
    expected = 2 / 3 * loss_fn(logits[0], target) + 1 / 3 * loss_fn(logits[1], small)
    assert torch.allclose(loss_fn(logits, target), expected)


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="softmax"):
        SegmentationLoss("relu")
    with pytest.raises(InputError, match="class indices"):
        SegmentationLoss("softmax")(torch.randn(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(InputError, match="one target channel per output"):
        SegmentationLoss("sigmoid")(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
