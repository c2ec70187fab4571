"""invert_to_input: walking recorded grids back, exactly for index maps, by interpolation for resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.transforms import GRIDS_KEY, Grid, invert_to_input
from medseg.transforms.inversion import to_earlier_grid


def _affine(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), flips=(1, 1, 1), order=(0, 1, 2)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, order] * np.asarray(spacing) * np.asarray(flips)
    affine[:3, 3] = origin
    return affine


def test_flip_permute_and_crop_are_undone_exactly(rng):
    earlier = Grid(_affine(spacing=(1, 2, 3), origin=(5, -4, 2)), (6, 5, 4))
    original = rng.integers(0, 9, size=(1, *earlier.shape))
    # The later grid: axes permuted (k, i, j), i flipped, then cropped by one voxel at each end of i.
    flipped = original[:, ::-1]
    later_values = np.transpose(flipped, (0, 3, 1, 2))[:, :, 1:-1, :]
    affine = earlier.affine @ np.array(
        [[0, -1, 0, 4], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    later = Grid(affine, later_values.shape[1:])
    back = to_earlier_grid(later_values, later, earlier, nearest=True, fill=np.array([-1]))
    expected = original.copy()
    expected[:, [0, -1]] = -1
    assert np.array_equal(back, expected)


def test_upsampling_by_two_inverts_exactly_with_nearest(rng):
    earlier = Grid(_affine(spacing=(2, 2, 2), origin=(1, 1, 1)), (4, 3, 5))
    later = Grid(_affine(spacing=(1, 1, 1), origin=(1, 1, 1)), (7, 5, 9))
    original = rng.integers(0, 5, size=(2, *earlier.shape))
    # Later voxel 2i is earlier voxel i; odd voxels hold anything.
    later_values = rng.integers(0, 5, size=(2, *later.shape))
    later_values[:, ::2, ::2, ::2] = original
    assert np.array_equal(to_earlier_grid(later_values, later, earlier, True, np.zeros(2)), original)


def test_linear_resampling_reproduces_a_linear_field():
    earlier = Grid(_affine(spacing=(1, 1, 1)), (9, 7, 5))
    later = Grid(_affine(spacing=(1.5, 2.0, 1.25), origin=(0, 0, 0)), (7, 4, 4))

    def field(grid: Grid) -> np.ndarray:
        index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")).reshape(3, -1)
        world = grid.affine[:3, :3] @ index + grid.affine[:3, 3:]
        return (0.3 * world[0] - 0.2 * world[1] + 0.1 * world[2]).reshape(1, *grid.shape).astype(np.float32)

    back = to_earlier_grid(field(later), later, earlier, nearest=False, fill=np.zeros(1, np.float32))
    # Inside the later grid's extent the field is reproduced; beyond it (within half a voxel) values clamp.
    inside = (slice(None), slice(0, 9), slice(0, 7), slice(0, 4))
    np.testing.assert_allclose(back[inside], field(earlier)[inside], atol=1e-5)


def test_oblique_resampling_matches_axis_aligned_on_a_rotated_copy(rng):
    # The same later grid once axis-aligned and once sheared by 1e-3 (so axes mix): the general path
    # must agree with the separable one up to the tiny shift the shear causes.
    earlier = Grid(_affine(spacing=(1, 1, 1)), (6, 6, 4))
    later_aligned = Grid(_affine(spacing=(1.7, 1.3, 1.1)), (4, 5, 4))
    values = rng.random((1, *later_aligned.shape)).astype(np.float32)
    separable = to_earlier_grid(values, later_aligned, earlier, False, np.zeros(1, np.float32))
    tilt = np.eye(4)
    tilt[0, 1] = 1e-3
    later_oblique = Grid(later_aligned.affine @ tilt, later_aligned.shape)
    general = to_earlier_grid(values, later_oblique, earlier, False, np.zeros(1, np.float32))
    np.testing.assert_allclose(general, separable, atol=5e-3)


def test_fill_per_channel_for_probabilities():
    earlier = Grid(_affine(), (5, 1, 1))
    later = Grid(_affine(origin=(1, 0, 0)), (3, 1, 1))
    cropped = MetaTensor(torch.zeros(1, 3, 1, 1), affine=torch.as_tensor(later.affine), meta={GRIDS_KEY: [earlier]})
    probabilities = np.stack([np.full((3, 1, 1), 0.2), np.full((3, 1, 1), 0.8)]).astype(np.float32)
    back = invert_to_input(probabilities, {"image": cropped}, kind="probabilities", fill=(1.0, 0.0))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[:, :, 0, 0], [[1, 0.2, 0.2, 0.2, 1], [0, 0.8, 0.8, 0.8, 0]])
    labels = invert_to_input(torch.tensor([[[3]], [[4]], [[5]]]), {"image": cropped})
    assert labels[:, 0, 0].tolist() == [0, 3, 4, 5, 0]


def test_bad_requests_raise_medseg_errors():
    earlier = Grid(_affine(), (4, 4, 4))
    tensor = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.as_tensor(earlier.affine), meta={GRIDS_KEY: [earlier]})
    with pytest.raises(GeometryError, match="batch"):
        invert_to_input(np.zeros((1, 1, 4, 4, 4), np.int64), {"image": tensor})
    with pytest.raises(GeometryError, match=r"expected \(4, 4, 4\)"):
        invert_to_input(np.zeros((4, 4, 3), np.int64), {"image": tensor})
    with pytest.raises(InputError, match="kind='probabilities'"):
        invert_to_input(np.zeros((4, 4, 4), np.float32), {"image": tensor})
    with pytest.raises(ConfigError, match="prediction kind"):
        invert_to_input(np.zeros((4, 4, 4), np.int64), {"image": tensor}, kind="logits")
    with pytest.raises(ConfigError, match="one per channel"):
        invert_to_input(np.zeros((2, 4, 4, 4), np.float32), {"image": tensor}, kind="probabilities", fill=(1, 0, 0))
    with pytest.raises(InputError, match="inference preset"):
        invert_to_input(np.zeros((4, 4, 4), np.int64), {"image": MetaTensor(torch.zeros(1, 4, 4, 4))})


def test_two_dimensional_grids_flip_and_crop_exactly(rng):
    earlier = Grid(np.diag([0.7, 0.9, 1.0, 1.0]), (5, 4))
    original = rng.integers(1, 9, size=(1, 5, 4))
    affine = earlier.affine @ np.array([[-1.0, 0, 0, 4], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    later_values = original[:, ::-1, 1:3]
    back = to_earlier_grid(later_values, Grid(affine, (5, 2)), earlier, nearest=True, fill=np.zeros(1))
    expected = original.copy()
    expected[:, :, [0, 3]] = 0
    assert np.array_equal(back, expected)


@pytest.mark.parametrize("seed", range(6))
def test_exact_index_maps_match_voxel_by_voxel_reference(seed):
    # Random signed axis permutation and integer shift (crops, pads, flips), checked voxel by voxel.
    rng = np.random.default_rng(seed)
    earlier = Grid(np.diag([1.1, 0.9, 1.3, 1.0]), tuple(int(n) for n in rng.integers(2, 6, size=3)))
    order = rng.permutation(3)
    signs = rng.choice([-1, 1], size=3)
    later_shape = tuple(int(n) for n in rng.integers(2, 7, size=3))
    # Voxel map later index u -> earlier index: earlier[order[b]] = signs[b] * u[b] + shift[b].
    shift = rng.integers(-3, 5, size=3)
    to_earlier = np.zeros((4, 4))
    to_earlier[order, range(3)] = signs
    to_earlier[order, 3] = shift
    to_earlier[3, 3] = 1
    later = Grid(earlier.affine @ to_earlier, later_shape)
    values = rng.integers(1, 100, size=(2, *later_shape))
    back = to_earlier_grid(values, later, earlier, nearest=True, fill=np.zeros(2))
    expected = np.zeros((2, *earlier.shape), dtype=values.dtype)
    for u in np.ndindex(*later_shape):
        target = [0, 0, 0]
        for b in range(3):
            target[order[b]] = signs[b] * u[b] + shift[b]
        if all(0 <= target[a] < earlier.shape[a] for a in range(3)):
            expected[(slice(None), *target)] = values[(slice(None), *u)]
    assert np.array_equal(back, expected)
