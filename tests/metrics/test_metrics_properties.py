"""Properties every mask pair must satisfy (hypothesis-generated small masks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medseg import metrics

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def mask_pairs(draw, non_empty: bool = False):
    shape = draw(st.tuples(*[st.integers(1, 6)] * 3))
    pred = draw(arrays(np.bool_, shape))
    gt = draw(arrays(np.bool_, shape))
    if non_empty:
        pred.flat[draw(st.integers(0, pred.size - 1))] = True
        gt.flat[draw(st.integers(0, gt.size - 1))] = True
    spacing = draw(st.tuples(*[st.floats(0.25, 5.0, allow_nan=False)] * 3))
    return pred, gt, spacing


@SETTINGS
@given(mask_pairs(), st.sampled_from(metrics.EMPTY_CONVENTIONS))
def test_dice_is_symmetric_and_within_unit_interval(pair, convention):
    pred, gt, _ = pair
    forward = metrics.dice(pred, gt, convention=convention)
    backward = metrics.dice(gt, pred, convention=convention)
    if pred.any() or gt.any():
        assert 0.0 <= forward <= 1.0
        assert forward == backward
    else:
        assert np.isnan(forward) if convention == "nnunet" else forward == 1.0


@SETTINGS
@given(mask_pairs(), st.floats(0.0, 6.0))
def test_hd95_and_nsd_are_symmetric(pair, tolerance):
    pred, gt, spacing = pair
    forward = metrics.binary_metrics(pred, gt, spacing, nsd_tolerance_mm=tolerance)
    backward = metrics.binary_metrics(gt, pred, spacing, nsd_tolerance_mm=tolerance)
    assert forward.hd95 == pytest.approx(backward.hd95, rel=1e-12)
    assert forward.nsd == backward.nsd
    assert 0.0 <= forward.nsd <= 1.0


@SETTINGS
@given(mask_pairs(non_empty=True), st.tuples(*[st.integers(0, 4)] * 3), st.tuples(*[st.integers(0, 4)] * 3))
def test_hd95_and_nsd_are_unchanged_when_both_masks_move_together_in_a_bigger_canvas(pair, before, after):
    pred, gt, spacing = pair
    # Voxels on the image border count as surface, so both masks start one voxel away from the border;
    # then they move together to another place in a bigger canvas.
    pred, gt = np.pad(pred, 1), np.pad(gt, 1)
    padding = list(zip(before, after))
    moved_pred, moved_gt = np.pad(pred, padding), np.pad(gt, padding)
    original = metrics.binary_metrics(pred, gt, spacing, nsd_tolerance_mm=1.5)
    moved = metrics.binary_metrics(moved_pred, moved_gt, spacing, nsd_tolerance_mm=1.5)
    assert moved.hd95 == pytest.approx(original.hd95, rel=1e-12, abs=1e-12)
    assert moved.nsd == original.nsd
    assert moved.dice == original.dice


@SETTINGS
@given(mask_pairs(non_empty=True), st.floats(0.1, 10.0))
def test_hd95_scales_with_the_spacing(pair, scale):
    pred, gt, spacing = pair
    scaled = tuple(s * scale for s in spacing)
    assert metrics.hd95(pred, gt, scaled) == pytest.approx(scale * metrics.hd95(pred, gt, spacing), rel=1e-9, abs=1e-12)


@SETTINGS
@given(mask_pairs(non_empty=True))
def test_hd95_is_zero_exactly_for_identical_surfaces(pair):
    pred, _, spacing = pair
    assert metrics.hd95(pred, pred.copy(), spacing) == 0.0
