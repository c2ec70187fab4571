"""Property-based checks (hypothesis) across random voxel grids: axis permutations, flips, spacings from 0.2
to 10 mm and oblique rotations.

* Writing with ``save_like``, reading with ``load_volume``, running an inference preset (reorientation to
  RAS and crop) and inverting with ``invert_to_input`` gives back exactly the original labels.
* ``evaluate`` scores do not depend on how the same masks are stored (axis order and direction).

Dice symmetry and range and the HD95 translation and spacing properties are checked on masks directly in
tests/metrics/test_metrics_properties.py.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.io import Geometry, load_volume, save_like

SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PERMUTATIONS = list(itertools.permutations(range(3)))


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()


@st.composite
def voxel_grids(draw) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A random voxel-to-RAS affine and shape: permuted, flipped, 0.2..10 mm, optionally oblique."""
    permutation = draw(st.sampled_from(PERMUTATIONS))
    signs = draw(st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3))
    spacing = draw(st.tuples(*[st.floats(0.2, 10.0, allow_nan=False)] * 3))
    oblique = draw(st.booleans())
    angles = draw(st.tuples(*[st.floats(-40.0, 40.0)] * 3)) if oblique else (0.0, 0.0, 0.0)
    columns = np.eye(3)[:, list(permutation)] * np.array(signs) * np.array(spacing)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(angles) @ columns
    affine[:3, 3] = draw(st.tuples(*[st.floats(-200.0, 200.0)] * 3))
    shape = draw(st.tuples(*[st.integers(2, 9)] * 3))
    return affine, shape


@st.composite
def label_maps(draw, shape: tuple[int, int, int]) -> np.ndarray:
    """Labels 1..5 in a random box (random values inside), background 0 elsewhere; never empty."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    low = [int(rng.integers(0, n)) for n in shape]
    high = [int(rng.integers(lo + 1, n + 1)) for lo, n in zip(low, shape)]
    labels = np.zeros(shape, np.uint8)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    labels[box] = rng.integers(1, 6, size=labels[box].shape)
    return labels


@SETTINGS
@given(data=st.data())
def test_save_load_preset_and_inversion_give_back_the_labels_exactly(data):
    from medseg.transforms import SynapseTransformConfig, invert_to_input, synapse_inference_transforms

    affine, shape = data.draw(voxel_grids())
    labels = data.draw(label_maps(shape))
    with tempfile.TemporaryDirectory() as folder:
        path = save_like(labels, Geometry.from_affine(affine, shape), Path(folder) / "labels.nii.gz")
        volume = load_volume(path)
    np.testing.assert_array_equal(volume.array, labels)
    np.testing.assert_allclose(volume.geometry.affine, affine, rtol=0, atol=1e-4)
    # A window of 0..64 "HU" maps label value v to v / 64 exactly; the crop keeps the labelled box.
    preset = synapse_inference_transforms(
        SynapseTransformConfig(spacing=None, hu_window=(0.0, 64.0), crop_foreground=True, patch_size=(16, 16, 16))
    )
    out = preset({"image": volume})
    in_preset_space = np.rint(np.asarray(out["image"][0]) * 64.0).astype(np.uint8)
    restored = invert_to_input(in_preset_space, out, kind="label")
    np.testing.assert_array_equal(restored, labels)


def _store(
    path: Path, array: np.ndarray, affine: np.ndarray, permutation: tuple[int, ...], flips: tuple[bool, ...]
) -> None:
    """Store the same mask with its axes permuted and flipped, the affine changed so world positions stay."""
    new = np.transpose(array, permutation)
    to_old = np.eye(4)  # new voxel index -> old voxel index
    to_old[:3, :3] = 0.0
    for axis, (old_axis, flip) in enumerate(zip(permutation, flips)):
        to_old[old_axis, axis] = -1.0 if flip else 1.0
        if flip:
            new = np.flip(new, axis)
            to_old[old_axis, 3] = array.shape[old_axis] - 1
    save_like(np.ascontiguousarray(new), Geometry.from_affine(affine @ to_old, new.shape), path)


@SETTINGS
@given(data=st.data())
def test_evaluate_scores_do_not_depend_on_how_the_masks_are_stored(data, tmp_path_factory):
    from medseg.pipelines.evaluate import EvaluationSettings, evaluate

    affine, shape = data.draw(voxel_grids())
    reference = (data.draw(label_maps(shape)) > 2).astype(np.uint8)
    prediction = (data.draw(label_maps(shape)) > 1).astype(np.uint8)
    permutation = data.draw(st.sampled_from(PERMUTATIONS))
    flips = data.draw(st.tuples(*[st.booleans()] * 3))
    root = tmp_path_factory.mktemp("stored")
    settings_ = EvaluationSettings(labels={"fg": 1})
    scores = []
    for name, perm, flip in (("as_is", (0, 1, 2), (False,) * 3), ("reordered", permutation, flips)):
        (root / name).mkdir()
        _store(root / name / "pred.nii.gz", prediction, affine, perm, flip)
        _store(root / name / "ref.nii.gz", reference, affine, perm, flip)
        rows = evaluate(root / name / "pred.nii.gz", root / name / "ref.nii.gz", settings_).rows
        scores.append({k: rows[0][k] for k in ("dice", "hd95", "nsd", "precision", "recall")})
    for metric in scores[0]:
        assert scores[1][metric] == pytest.approx(scores[0][metric], rel=1e-6, abs=1e-6, nan_ok=True), metric
