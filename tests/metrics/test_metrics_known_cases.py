"""Metrics on hand-made masks whose answers are worked out by hand in each test."""

from __future__ import annotations

import numpy as np
import pytest

from medseg import metrics
from medseg.errors import ConfigError, GeometryError, InputError


def _box(shape, *slices):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slices)] = True
    return mask


def test_identical_masks_score_perfectly():
    mask = _box((8, 9, 7), slice(2, 6), slice(1, 7), slice(3, 5))
    result = metrics.binary_metrics(mask, mask.copy(), (0.8, 1.0, 2.5), nsd_tolerance_mm=0.0)
    assert result.dice == 1.0
    assert result.hd95 == 0.0
    assert result.nsd == 1.0
    assert result.precision == 1.0 and result.recall == 1.0


def test_two_voxel_shift_along_z_at_5mm_gives_hd95_of_10mm():
    # A one-slice plate: every voxel is surface and its nearest partner is the voxel 2 slices (10 mm) away.
    reference = _box((8, 8, 10), slice(1, 7), slice(1, 7), slice(3, 4))
    prediction = np.roll(reference, 2, axis=2)
    assert metrics.hd95(prediction, reference, (1.0, 1.0, 5.0)) == pytest.approx(10.0, abs=1e-12)
    # The same two slices at 1 mm are 2 mm; the in-plane spacing plays no part.
    assert metrics.hd95(prediction, reference, (0.7, 3.0, 1.0)) == pytest.approx(2.0, abs=1e-12)


def test_dice_precision_recall_and_volume_of_overlapping_boxes():
    reference = _box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4))  # 64 voxels
    prediction = _box((8, 8, 8), slice(2, 6), slice(0, 4), slice(0, 2))  # 32 voxels, 16 of them inside
    spacing = (1.0, 2.0, 3.0)  # 6 mm^3 per voxel
    result = metrics.binary_metrics(prediction, reference, spacing)
    assert result.dice == pytest.approx(2 * 16 / (32 + 64))
    assert result.precision == pytest.approx(16 / 32)
    assert result.recall == pytest.approx(16 / 64)
    assert result.gt_volume_ml == pytest.approx(64 * 6 / 1000)
    assert result.pred_volume_ml == pytest.approx(32 * 6 / 1000)


def test_hd95_interpolates_the_pooled_distances_and_nsd_counts_within_tolerance():
    # A row of 4 voxels (reference) and its first 2 voxels (prediction), 3 mm apart along the row.
    # Every voxel is surface. pred -> gt distances: 0, 0; gt -> pred: 0, 0, 3, 6.
    # Pooled sorted [0, 0, 0, 0, 3, 6]: the 95th percentile sits at rank 0.95 * 5 = 4.75 -> 3 + 0.75 * 3.
    reference = _box((6, 3, 3), slice(0, 4), slice(1, 2), slice(1, 2))
    prediction = _box((6, 3, 3), slice(0, 2), slice(1, 2), slice(1, 2))
    spacing = (3.0, 1.0, 1.0)
    assert metrics.hd95(prediction, reference, spacing) == pytest.approx(5.25)
    assert metrics.normalized_surface_dice(prediction, reference, spacing, 3.0) == pytest.approx(5 / 6)
    assert metrics.normalized_surface_dice(prediction, reference, spacing, 2.9) == pytest.approx(4 / 6)
    assert metrics.normalized_surface_dice(prediction, reference, spacing, 6.0) == pytest.approx(1.0)


def test_nsd_tolerance_is_inclusive():
    reference = _box((8, 8, 10), slice(1, 7), slice(1, 7), slice(3, 4))
    prediction = np.roll(reference, 2, axis=2)  # every distance is exactly 10 mm
    assert metrics.normalized_surface_dice(prediction, reference, (1, 1, 5), 10.0) == 1.0
    assert metrics.normalized_surface_dice(prediction, reference, (1, 1, 5), 9.99) == 0.0


def test_surface_excludes_interior_voxels_and_includes_the_image_border():
    mask = np.ones((5, 5, 5), dtype=bool)
    surface = metrics.surface_voxels(mask)
    assert surface.sum() == 5**3 - 3**3  # the image border is surface, the 3x3x3 inside is not
    assert not surface[1:4, 1:4, 1:4].any()


def test_surface_distances_ignore_everything_outside_the_joint_bounding_box():
    # The crop used for speed must not change any distance: compare with a hand-computed case far from
    # the origin of a big canvas.
    canvas = (40, 40, 40)
    reference = _box(canvas, slice(30, 31), slice(30, 31), slice(30, 31))
    prediction = _box(canvas, slice(33, 34), slice(34, 35), slice(30, 31))
    to_gt, to_pred = metrics.surface_distances(prediction, reference, (2.0, 1.0, 1.0))
    assert to_gt.tolist() == pytest.approx([np.hypot(6.0, 4.0)])
    assert to_pred.tolist() == pytest.approx([np.hypot(6.0, 4.0)])


def test_image_diagonal_matches_the_brats_leaderboard_value():
    assert metrics.image_diagonal_mm((240, 240, 155), (1.0, 1.0, 1.0)) == pytest.approx(373.13, abs=0.005)


def test_two_dimensional_masks_are_supported():
    reference = _box((6, 6), slice(1, 3), slice(1, 3))
    prediction = _box((6, 6), slice(1, 3), slice(3, 5))
    result = metrics.binary_metrics(prediction, reference, (1.0, 2.0))
    assert result.dice == 0.0
    assert result.hd95 == pytest.approx(4.0)  # each column sits 2 columns (4 mm) from its partner


def test_mismatched_shapes_raise_geometry_error():
    with pytest.raises(GeometryError, match="shape"):
        metrics.dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0), (-1.0, 1.0, 1.0)])
def test_invalid_spacing_raises_input_error(spacing):
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(InputError, match="spacing"):
        metrics.hd95(mask, mask, spacing)


def test_invalid_tolerance_and_convention_raise_config_error():
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ConfigError, match="tolerance"):
        metrics.normalized_surface_dice(mask, mask, 1.0, -1.0)
    with pytest.raises(ConfigError, match="valid: brats, nnunet"):
        metrics.dice(mask, mask, convention="bratz")
