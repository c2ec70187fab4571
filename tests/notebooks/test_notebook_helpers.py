"""The helper modules the notebooks import from their folder: label perturbations and slice views."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"notebook_{name}", NOTEBOOK_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


perturbations = _load("label_perturbations")
slice_views = _load("slice_views")


def _two_touching_boxes() -> np.ndarray:
    labels = np.zeros((12, 10, 8), dtype=np.uint8)
    labels[2:6, 2:8, 2:6] = 1
    labels[6:10, 2:8, 2:6] = 2  # touches label 1 along i
    return labels


def test_none_returns_an_equal_copy():
    labels = _two_touching_boxes()
    out = perturbations.perturb(labels, "none")
    assert out is not labels and np.array_equal(out, labels) and out.dtype == labels.dtype


def test_erode_removes_one_face_layer_from_each_label_including_where_labels_touch():
    out = perturbations.perturb(_two_touching_boxes(), "erode 1")
    assert np.array_equal(np.argwhere(out == 1).min(0), [3, 3, 3])
    assert np.array_equal(np.argwhere(out == 1).max(0), [4, 6, 4])  # the layer at i = 5 touching label 2 is gone
    assert np.array_equal(np.argwhere(out == 2).min(0), [7, 3, 3])
    assert (out == 1).sum() == 2 * 4 * 2


def test_dilate_grows_into_background_only_with_the_nearest_label():
    labels = _two_touching_boxes()
    out = perturbations.perturb(labels, "dilate 1")
    assert np.array_equal(out[labels > 0], labels[labels > 0])
    assert out[1, 4, 3] == 1 and out[10, 4, 3] == 2
    assert out[0, 4, 3] == 0  # two voxels away
    assert out.dtype == labels.dtype


def test_shift_moves_the_map_and_fills_with_background():
    labels = _two_touching_boxes()
    out = perturbations.perturb(labels, "shift 2 0 -1")
    assert np.array_equal(out[2:, :, :-1], labels[:-2, :, 1:])
    assert not out[:2].any() and not out[:, :, -1].any()


def test_relabel_changes_one_value():
    out = perturbations.perturb(_two_touching_boxes(), "relabel 2 0")
    assert set(np.unique(out)) == {0, 1}


@pytest.mark.parametrize("bad", ["grow 1", "erode", "erode -1", "shift 1 2", "erode one", ""])
def test_invalid_perturbations_are_config_errors(bad):
    with pytest.raises(ConfigError):
        perturbations.perturb(_two_touching_boxes(), bad)


def test_to_ras_flips_an_lps_volume_and_keeps_the_spacing_per_axis():
    array = np.zeros((4, 5, 6))
    array[0, 0, 0] = 1.0  # in an LPS volume voxel (0, 0, 0) is the most right, most anterior, most inferior
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])
    ras, spacing = slice_views.to_ras(array, affine, (2.0, 3.0, 4.0))
    assert ras.shape == (4, 5, 6)
    assert ras[3, 4, 0] == 1.0  # RAS axes grow towards right and anterior: the largest x and y
    assert np.array_equal(spacing, [2.0, 3.0, 4.0])


def test_to_ras_permutes_the_spacing_with_the_axes():
    affine = np.array([[0, 0, 3.0, 0], [2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])  # i -> A, j -> S, k -> R
    ras, spacing = slice_views.to_ras(np.zeros((4, 5, 6)), affine, (2.0, 1.0, 3.0))
    assert ras.shape == (6, 4, 5)
    assert np.array_equal(spacing, [3.0, 2.0, 1.0])


def test_views_are_radiological_with_superior_and_anterior_up_or_first():
    volume = np.zeros((6, 7, 8))
    volume[5, 0, 7] = 1.0  # far right (x max), posterior, superior
    axial, aspect = slice_views.view(volume, (1.0, 2.0, 3.0), "axial", (0, 0, 7))
    assert axial.shape == (7, 6) and axial[0, 0] == 1.0 and aspect == 2.0  # patient right on the image left
    coronal, aspect = slice_views.view(volume, (1.0, 2.0, 3.0), "coronal", (0, 0, 0))
    assert coronal.shape == (8, 6) and coronal[7, 0] == 1.0 and aspect == 3.0  # superior on the top row (origin lower)
    sagittal, aspect = slice_views.view(volume, (1.0, 2.0, 3.0), "sagittal", (5, 0, 0))
    assert sagittal.shape == (8, 7) and sagittal[7, 6] == 1.0 and aspect == 1.5  # posterior on the right
    with pytest.raises(ConfigError):
        slice_views.view(volume, (1.0, 1.0, 1.0), "oblique", (0, 0, 0))


def test_ct_window_maps_level_and_width_to_the_unit_range():
    out = slice_views.ct_window(np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0]), level=40, width=400)
    assert np.allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ConfigError):
        slice_views.ct_window(np.zeros(3), level=0, width=0)


def test_error_map_marks_agreement_misses_and_extras():
    reference = np.array([1, 1, 0, 0], dtype=bool)
    predicted = np.array([1, 0, 1, 0], dtype=bool)
    assert slice_views.error_map(reference, predicted).tolist() == [1, 2, 3, 0]
