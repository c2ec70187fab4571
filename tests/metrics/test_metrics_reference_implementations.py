"""Agreement with independent implementations on random masks with anisotropic spacing.

- medpy.metric.binary (hd95, dc, precision, recall): same definition, must agree to float64 precision.
- MONAI compute_surface_dice(use_subvoxels=False): the same voxel-surface NSD; MONAI returns float32, so
  agreement is to 1e-6.
- MONAI compute_surface_dice(use_subvoxels=True) implements DeepMind's surfel-area NSD: our voxel-surface
  approximation is compared with it on smooth shapes, to the tolerance stated in docs/evaluation.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg import metrics

medpy_binary = pytest.importorskip("medpy.metric.binary")
# MONAI's own internals call a deprecated argument of its get_mask_edges; that is not ours to fix.
monai_deprecation = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")


def _random_pair(seed: int, ndim: int, kind: str):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 16, size=ndim))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 4.0, size=ndim))
    if kind == "noise":
        pair = [rng.random(shape) < rng.uniform(0.05, 0.5) for _ in range(2)]
    else:
        pair = [ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=int(rng.integers(1, 3)))
                for _ in range(2)]
    for mask in pair:  # never empty: the empty cases are the convention's, tested elsewhere
        mask[tuple(int(rng.integers(0, n)) for n in shape)] = True
    return pair[0], pair[1], spacing


CASES = [(seed, ndim, kind) for seed in range(6) for ndim in (2, 3) for kind in ("noise", "blobs")]


@pytest.mark.parametrize(("seed", "ndim", "kind"), CASES)
def test_hd95_dice_precision_recall_match_medpy(seed, ndim, kind):
    pred, gt, spacing = _random_pair(seed, ndim, kind)
    result = metrics.binary_metrics(pred, gt, spacing)
    assert result.hd95 == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=spacing), rel=1e-12, abs=1e-12)
    assert result.dice == pytest.approx(medpy_binary.dc(pred, gt), rel=1e-12)
    assert result.precision == pytest.approx(medpy_binary.precision(pred, gt), rel=1e-12)
    assert result.recall == pytest.approx(medpy_binary.recall(pred, gt), rel=1e-12)


@monai_deprecation
@pytest.mark.parametrize(("seed", "ndim", "kind"), [c for c in CASES if c[0] < 3])
def test_nsd_matches_monai_voxel_surface_dice(seed, ndim, kind):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_surface_dice

    pred, gt, spacing = _random_pair(seed, ndim, kind)
    tolerance = 1.7  # not a distance the grid can produce exactly, so float32 rounding cannot flip a count
    ours = metrics.normalized_surface_dice(pred, gt, spacing, tolerance)
    theirs = compute_surface_dice(
        torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float(),
        [tolerance], include_background=True, spacing=spacing, use_subvoxels=False,
    ).item()
    assert ours == pytest.approx(theirs, abs=1e-6)


@monai_deprecation
def test_voxel_nsd_is_within_001_of_deepmind_surfel_nsd_at_two_voxels_tolerance():
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_surface_dice

    grid = np.mgrid[:32, :32, :32].astype(np.float64)
    reference = ((grid - 16.0) ** 2).sum(axis=0) < 10.0**2
    prediction = ((grid - np.array([17.3, 15.6, 16.5])[:, None, None, None]) ** 2).sum(axis=0) < 9.5**2
    ours = metrics.normalized_surface_dice(prediction, reference, (1.0, 1.0, 1.0), 2.0)
    surfels = compute_surface_dice(
        torch.from_numpy(prediction)[None, None].float(), torch.from_numpy(reference)[None, None].float(),
        [2.0], include_background=True, spacing=(1.0, 1.0, 1.0), use_subvoxels=True,
    ).item()
    assert ours == pytest.approx(surfels, abs=0.01)


@monai_deprecation
@pytest.mark.parametrize(("seed", "ndim", "kind"), [c for c in CASES if c[0] < 2])
def test_directed_distances_give_monai_hd95_as_the_max_of_directed_percentiles(seed, ndim, kind):
    # MONAI (like DeepMind) reports max(p95(P->G), p95(G->P)) instead of the pooled p95: the documented
    # difference. Rebuilding MONAI's number from our directed distances checks both directions separately.
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

    pred, gt, spacing = _random_pair(seed, ndim, kind)
    to_gt, to_pred = metrics.surface_distances(pred, gt, spacing)
    theirs = compute_hausdorff_distance(
        torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float(),
        include_background=True, percentile=95, spacing=spacing,
    ).item()
    assert max(np.percentile(to_gt, 95), np.percentile(to_pred, 95)) == pytest.approx(theirs, rel=1e-6)
