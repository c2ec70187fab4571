"""Channels and dimensions: 2D/4D/5D inputs, missing or reordered modalities, channel-last and channel-first
4D files. Modalities are stacked by NAME in the model's order, never by file order; anything ambiguous is
refused with a message that says what was found and what is expected.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from robust_helpers import (
    BRATS_MODALITIES,
    BRATS_SHAPE,
    ct_phantom,
    head_phantom,
    only_files,
    write_brats_case,
    write_nifti,
)

import medseg.pipelines.segment as segment_module

CT_AFFINE = np.diag([1.5, 1.5, 2.5, 1.0])


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((20, 20), "2D image of shape (20, 20); a 3D volume"),
        ((12, 12, 8, 2, 3), "5D image of shape (12, 12, 8, 2, 3)"),
        ((12, 12, 8, 2), "4D image of shape (12, 12, 8, 2) (2 volumes); a 3D volume was expected"),
    ],
    ids=["2d", "5d", "4d-for-one-channel"],
)
def test_wrong_dimensions_are_refused_by_segment(shape, problem, ct_model, cli, tmp_path):
    source = write_nifti(tmp_path / "scan.nii.gz", np.full(shape, 40, np.int16), CT_AFFINE)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert problem in err and "scan.nii.gz" in err
    assert only_files(tmp_path / "out") == []


def test_trailing_singleton_dimensions_are_a_3d_volume(ct_model, cli, tmp_path):
    data = ct_phantom((20, 20, 12))
    source = write_nifti(tmp_path / "scan.nii.gz", data[..., None, None], CT_AFFINE)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    assert nib.load(tmp_path / "out" / "scan.nii.gz").shape == (20, 20, 12)


@pytest.mark.parametrize("layout", ["brats-names", "nnunet-names", "4d-file"])
def test_three_of_four_modalities_are_refused_naming_what_is_missing(layout, brats_model, cli, tmp_path):
    case = tmp_path / "in" / "c1"
    if layout == "brats-names":
        write_brats_case(case, "c1", names=["t1", "t1ce", "t2"])
        expected = "modality 'flair'"
    elif layout == "nnunet-names":
        for channel in range(3):
            write_nifti(case / f"c1_{channel:04d}.nii.gz", head_phantom(seed=channel), np.eye(4))
        expected = "needs 4 channels ['t1', 't1ce', 't2', 'flair'], got 3"
    else:
        stacked = np.stack([head_phantom(seed=c) for c in range(3)], axis=-1)
        case = write_nifti(tmp_path / "in" / "c1.nii.gz", stacked, np.eye(4))
        expected = "needs 4 channels ['t1', 't1ce', 't2', 'flair'], got 3"
    code, _, err = cli("segment", case, "--model", brats_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert expected in err
    assert only_files(tmp_path / "out") == []


def _slab_case(folder: Path, names: list[str]) -> None:
    """Modality ``names[m]`` is nonzero only in slab ``m`` along the first axis, so each channel shows its source."""
    for index, name in enumerate(names):
        data = np.zeros(BRATS_SHAPE, np.int16)
        data[2 + 4 * index : 5 + 4 * index, 3:15, 2:12] = 300 + 10 * (np.arange(12)[None, :, None] % 5) + index
        write_nifti(folder / f"case_{name}.nii.gz", data, np.eye(4))


def _captured_channel_slabs(monkeypatch, segment_args, cli) -> list[int]:
    captured = []
    real = segment_module.predict_probabilities

    def spy(model, image, *args, **kwargs):
        captured.append(image.detach().cpu().clone())
        return real(model, image, *args, **kwargs)

    monkeypatch.setattr(segment_module, "predict_probabilities", spy)
    code, _, err = cli(*segment_args)
    assert code == 0, err
    (image,) = captured
    assert image.shape[0] == 4
    slabs = []
    for channel in image:
        rows = torch.nonzero(channel.abs().sum(dim=(1, 2))).flatten()  # first-axis positions holding voxels
        assert rows.numel() == 3, rows
        slabs.append(int(rows.min()) // 4)  # the crop starts at row 2: slab m covers rows 4m .. 4m+2
    return slabs


@pytest.mark.parametrize(
    "file_names",
    [
        ["t1", "t1ce", "t2", "flair"],  # the model's names: sorted file order is flair, t1, t1ce, t2
        ["t1n", "t1c", "t2w", "t2f"],  # BraTS 2023 synonyms: sorted order is t1c, t1n, t2f, t2w
    ],
    ids=["brats2021-names", "brats2023-names"],
)
def test_modalities_are_stacked_by_name_in_the_models_order(file_names, monkeypatch, brats_model, cli, tmp_path):
    assert sorted(file_names) != file_names  # the files' own order would be wrong
    case = tmp_path / "in" / "case"
    _slab_case(case, file_names)  # file_names[m] is the synonym of the model's modality m
    args = ("segment", case, "--model", brats_model, "--output", tmp_path / "out", "--device", "cpu")
    assert _captured_channel_slabs(monkeypatch, args, cli) == [0, 1, 2, 3]


def test_channel_last_4d_file_segments_like_the_four_files(brats_model, cli, tmp_path):
    paths = write_brats_case(tmp_path / "in" / "c1", "c1", seed=7)
    stacked = np.stack([np.asarray(nib.load(paths[m]).dataobj) for m in BRATS_MODALITIES], axis=-1)
    four_d = write_nifti(tmp_path / "in4d" / "c1.nii.gz", stacked, np.eye(4))
    assert cli("segment", tmp_path / "in" / "c1", "--model", brats_model, "--output", tmp_path / "a")[0] == 0
    assert cli("segment", four_d, "--model", brats_model, "--output", tmp_path / "b")[0] == 0
    from_files = np.asarray(nib.load(tmp_path / "a" / "c1.nii.gz").dataobj)
    from_4d = np.asarray(nib.load(tmp_path / "b" / "c1.nii.gz").dataobj)
    assert from_4d.shape == BRATS_SHAPE
    np.testing.assert_array_equal(from_4d, from_files)
    assert from_files.any()  # a non-trivial mask, so equality means something


def test_channel_first_4d_file_is_refused_not_misread(brats_model, cli, tmp_path):
    stacked = np.stack([head_phantom(seed=c) for c in range(4)], axis=0)  # (4, I, J, K) on disk
    source = write_nifti(tmp_path / "c1.nii.gz", stacked, np.eye(4))
    code, _, err = cli("segment", source, "--model", brats_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert f"got {BRATS_SHAPE[-1]}" in err and "looks channels-first" in err and "(I, J, K, C)" in err
    assert only_files(tmp_path / "out") == []
