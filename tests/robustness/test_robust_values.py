"""Voxel values: NaN/inf follow the documented policy end to end and never empty a prediction; int16
extremes, scl_slope/scl_inter scaling and uint16 above 32767 give the same result as the same values stored
as float32; label values above 255 are written as uint16 and evaluated as such.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from robust_helpers import ct_phantom, make_ct_model, only_files, write_brats_case, write_nifti

import medseg.pipelines.segment as segment_module
from medseg.errors import ConfigError
from medseg.pipelines.segment import SegmentOptions, segment

SHAPE = (24, 24, 16)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
BAD_VOXELS = {(12, 12, 8): np.nan, (8, 14, 7): np.inf, (15, 9, 10): -np.inf}


def _mask(folder: Path, name: str = "c1.nii.gz") -> np.ndarray:
    return np.asarray(nib.load(folder / name).dataobj)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _brats_case_with_bad_t1(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A clean case, the same with NaN/+inf/-inf in t1, and the same with those replaced by hand as documented."""
    clean = tmp_path / "clean" / "c1"
    paths = write_brats_case(clean, "c1", seed=11, shape=SHAPE)
    t1 = np.asarray(nib.load(paths["t1"]).dataobj).astype(np.float32)
    finite_max, finite_min = float(t1.max()), float(t1.min())
    dirty_t1, by_hand_t1 = t1.copy(), t1.copy()
    for index, value in BAD_VOXELS.items():
        dirty_t1[index] = value
        by_hand_t1[index] = 0.0 if np.isnan(value) else (finite_max if value > 0 else finite_min)
    folders = []
    for name, data in (("dirty", dirty_t1), ("by_hand", by_hand_t1)):
        folder = write_brats_case(tmp_path / name / "c1", "c1", seed=11, shape=SHAPE)["t1"].parent
        write_nifti(folder / "c1_t1.nii.gz", data, np.eye(4))
        folders.append(folder)
    return clean, folders[0], folders[1]


def test_nonfinite_voxels_are_refused_by_default_with_the_counts(brats_model, cli, tmp_path):
    _, dirty, _ = _brats_case_with_bad_t1(tmp_path)
    code, _, err = cli("segment", dirty, "--model", brats_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert "c1_t1.nii.gz: 3 non-finite voxel(s) (1 NaN, 2 infinite)" in err
    assert only_files(tmp_path / "out") == []


def test_replaced_nonfinite_voxels_follow_the_policy_and_keep_the_prediction(brats_model, tmp_path):
    clean, dirty, by_hand = _brats_case_with_bad_t1(tmp_path)
    options = SegmentOptions(device="cpu", nonfinite="replace")
    with pytest.warns(RuntimeWarning, match=r"replaced 3 non-finite voxel\(s\): 1 NaN -> 0"):
        segment(dirty, brats_model, tmp_path / "dirty_out", options)
    segment(by_hand, brats_model, tmp_path / "by_hand_out", options)
    segment(clean, brats_model, tmp_path / "clean_out", options)
    dirty_mask, clean_mask = _mask(tmp_path / "dirty_out"), _mask(tmp_path / "clean_out")
    # Exactly the documented replacement (NaN -> 0, +/-inf -> largest/smallest finite value), end to end.
    np.testing.assert_array_equal(dirty_mask, _mask(tmp_path / "by_hand_out"))
    # Three voxels out of 9216 change the prediction only slightly; they never empty it.
    assert np.count_nonzero(clean_mask) > 50
    assert _dice(dirty_mask, clean_mask) > 0.85
    assert np.count_nonzero(dirty_mask != clean_mask) < 0.02 * dirty_mask.size


def test_keeping_nonfinite_voxels_is_not_a_segmentation_option():
    with pytest.raises(ConfigError, match="valid: reject, replace"):
        SegmentOptions(nonfinite="keep")


def test_non_finite_network_output_fails_the_case_instead_of_writing_an_empty_mask(
    monkeypatch, ct_model, cli, tmp_path
):
    def nan_predictor(model, image, *args, **kwargs):
        return torch.full((3, *image.shape[1:]), float("nan"))

    monkeypatch.setattr(segment_module, "predict_probabilities", nan_predictor)
    source = write_nifti(tmp_path / "c1.nii.gz", ct_phantom(SHAPE), AFFINE)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert "non-finite probabilities" in err
    assert only_files(tmp_path / "out") == []


def _segment_both(model: Path, stored: Path, values: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    as_float = write_nifti(tmp_path / "float" / "c1.nii.gz", values.astype(np.float32), AFFINE)
    segment(stored, model, tmp_path / "out_stored", SegmentOptions(device="cpu"))
    segment(as_float, model, tmp_path / "out_float", SegmentOptions(device="cpu"))
    return _mask(tmp_path / "out_stored"), _mask(tmp_path / "out_float")


def test_int16_extremes_segment_like_the_same_values_as_float(ct_model, tmp_path):
    values = ct_phantom(SHAPE, seed=2)
    values[2:5, 2:5, 2:5] = np.iinfo(np.int16).max  # metal / saturated voxels
    values[0, :, :] = np.iinfo(np.int16).min  # padding value outside the scan's circle
    stored = write_nifti(tmp_path / "int16" / "c1.nii.gz", values, AFFINE)
    assert nib.load(stored).get_data_dtype() == np.int16
    from_int16, from_float = _segment_both(ct_model, stored, values, tmp_path)
    np.testing.assert_array_equal(from_int16, from_float)
    assert from_int16.shape == SHAPE and np.count_nonzero(from_int16) > 0


def test_scl_slope_and_inter_are_applied_before_segmenting(ct_model, tmp_path):
    raw = (ct_phantom(SHAPE, seed=3).astype(np.int32) + 1024) * 2  # stored as 2 * (HU + 1024)
    stored = write_nifti(tmp_path / "scaled" / "c1.nii.gz", raw.astype(np.int16), AFFINE, slope=0.5, inter=-1024.0)
    proxy = nib.load(stored).dataobj  # nibabel moves the stored scaling from the header to the data proxy
    assert (float(proxy.slope), float(proxy.inter)) == (0.5, -1024.0)
    hounsfield = raw * 0.5 - 1024.0
    from_scaled, from_float = _segment_both(ct_model, stored, hounsfield, tmp_path)
    np.testing.assert_array_equal(from_scaled, from_float)


def test_uint16_above_32767_is_not_wrapped(ct_model, tmp_path):
    # DICOM-style unsigned CT: stored value = HU + 32768, scl_inter = -32768; most stored values exceed 32767.
    hounsfield = ct_phantom(SHAPE, seed=4).astype(np.int32)
    stored_values = (hounsfield + 32768).astype(np.uint16)
    assert stored_values.max() > 32767
    stored = write_nifti(tmp_path / "uint16" / "c1.nii.gz", stored_values, AFFINE, slope=1.0, inter=-32768.0)
    assert nib.load(stored).get_data_dtype() == np.uint16 and float(nib.load(stored).dataobj.inter) == -32768.0
    from_uint16, from_float = _segment_both(ct_model, stored, hounsfield, tmp_path)
    np.testing.assert_array_equal(from_uint16, from_float)


def test_label_values_above_255_are_written_as_uint16_and_evaluated(cli, tmp_path):
    model = make_ct_model(tmp_path / "model", label_values=[0, 7, 300])
    source = write_nifti(tmp_path / "in" / "c1.nii.gz", ct_phantom(SHAPE, seed=5), AFFINE)
    assert cli("segment", source, "--model", model, "--output", tmp_path / "out", "--device", "cpu")[0] == 0
    out = tmp_path / "out" / "c1.nii.gz"
    assert nib.load(out).get_data_dtype() == np.uint16
    labels = _mask(tmp_path / "out")
    assert set(np.unique(labels)) <= {0, 7, 300} and 300 in labels
    code, stdout, err = cli("evaluate", out, out, "--labels", "big=300", "small=7")
    assert code == 0, err
    assert "big" in stdout and "1.0000" in stdout
