"""Geometry is never guessed: labels off the image grid by one voxel or half a millimetre are refused by
``medseg check`` and ``medseg evaluate``; disagreeing qform/sform are refused; anisotropic and single-slice
volumes are segmented onto exactly their own grid (or refused), never onto another shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from robust_helpers import ct_phantom, only_files, write_nifti

from medseg.io import Geometry, load_volume, read_geometry, save_like

CASE = "BraTS2021_00000"


@pytest.fixture(scope="module")
def brats_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.synth import write_brats

    root = tmp_path_factory.mktemp("robust_geometry") / "brats"
    write_brats(root, 1, shape=(16, 16, 12), seed=4)
    return root


def _shift_label(root: Path, change: str) -> Path:
    """Rewrite the case's label one voxel shorter along k, or with its origin moved 0.5 mm along x."""
    seg = root / CASE / f"{CASE}_seg.nii.gz"
    volume = load_volume(seg)
    affine, array = volume.geometry.affine.copy(), volume.array
    if change == "one-voxel-shape":
        array = array[:, :, :-1]
    else:
        affine[0, 3] += 0.5
    save_like(array, Geometry.from_affine(affine, array.shape, "uint8"), seg)
    return seg


EXPECTED = {"one-voxel-shape": "shape (16, 16, 12) vs (16, 16, 11)", "half-mm-origin": "origin"}


@pytest.mark.parametrize("change", sorted(EXPECTED))
def test_check_refuses_a_label_off_the_image_grid(change, brats_dataset, cli, tmp_path):
    root = tmp_path / "brats"
    shutil.copytree(brats_dataset, root)
    _shift_label(root, change)
    code, out, _ = cli("check", root)
    assert code == 2
    problem = [line for line in out.splitlines() if line.startswith(f"{CASE}: ")]
    assert len(problem) == 1
    assert f"label {CASE}_seg.nii.gz is not on the grid" in problem[0] and EXPECTED[change] in problem[0]


@pytest.mark.parametrize("change", sorted(EXPECTED))
def test_evaluate_refuses_a_prediction_off_the_reference_grid(change, brats_dataset, cli, tmp_path):
    root = tmp_path / "brats"
    shutil.copytree(brats_dataset, root)
    reference = tmp_path / "reference.nii.gz"
    shutil.copy(root / CASE / f"{CASE}_seg.nii.gz", reference)
    prediction = _shift_label(root, change)
    output = tmp_path / "results" / "scores.csv"
    code, _, err = cli("evaluate", prediction, reference, "--dataset", "brats2021", "--output", output)
    assert code == 2
    expected = "shape (16, 16, 11) vs (16, 16, 12)" if change == "one-voxel-shape" else "origin"
    assert "geometry differs" in err and expected in err
    assert only_files(tmp_path / "results") == []


def _oblique(spacing: tuple[float, float, float]) -> np.ndarray:
    angle = np.deg2rad(25.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-20.0, 14.0, 7.5]
    return affine


VOLUMES = {
    "anisotropic-0.5x0.5x7": ((24, 24, 5), np.diag([0.5, 0.5, 7.0, 1.0])),
    "anisotropic-7x0.5x0.5-LPS": ((5, 24, 24), np.diag([-7.0, -0.5, 0.5, 1.0])),
    "anisotropic-oblique": ((24, 24, 5), _oblique((0.5, 0.5, 7.0))),
    "single-axial-slice": ((24, 24, 1), np.diag([0.5, 0.5, 7.0, 1.0])),
    "single-sagittal-slice": ((1, 24, 20), np.diag([3.0, 0.8, 0.8, 1.0])),
    "two-voxel-thin": ((24, 2, 20), np.diag([0.7, 10.0, 0.7, 1.0])),
}


@pytest.mark.parametrize("name", sorted(VOLUMES))
def test_extreme_voxel_grids_get_an_output_on_exactly_their_grid(name, ct_model, cli, tmp_path):
    shape, affine = VOLUMES[name]
    source = write_nifti(tmp_path / "in" / "scan.nii.gz", ct_phantom(shape, seed=3), affine)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 0, err  # all of these are segmentable: resampling to 1 x 1 x 2 mm and back
    written = read_geometry(tmp_path / "out" / "scan.nii.gz")
    assert written.shape == shape
    np.testing.assert_allclose(written.affine, read_geometry(source).affine, atol=1e-5)
    labels = load_volume(tmp_path / "out" / "scan.nii.gz").array
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_disagreeing_qform_and_sform_are_refused_by_segment(ct_model, cli, tmp_path):
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    shifted = affine.copy()
    shifted[:3, 3] += [3.0, 0.0, 0.0]
    source = write_nifti(tmp_path / "scan.nii.gz", ct_phantom((20, 20, 10)), affine, qform=shifted)
    code, _, err = cli("segment", source, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert "qform (code 1) and sform (code 1) disagree by up to 3 mm" in err and "scan.nii.gz" in err
    assert only_files(tmp_path / "out") == []


@pytest.mark.parametrize("codes", [(0, 1), (1, 0)], ids=["sform-only-stale-qform", "qform-only-stale-sform"])
def test_the_coded_transform_is_the_one_the_output_carries_for_every_reader(codes, ct_model, cli, tmp_path):
    """With one code 0 its matrix is ignored; the output keeps the codes, so nibabel and ITK place it alike."""
    import SimpleITK as sitk

    qform_code, sform_code = codes
    valid = _oblique((1.5, 1.2, 2.5))
    stale = np.diag([1.0, 1.0, 1.0, 1.0])
    shape = (20, 20, 10)
    path = tmp_path / "scan.nii.gz"
    if sform_code:
        write_nifti(path, ct_phantom(shape), valid, qform=stale, qform_code=0, sform_code=1)
    else:
        # the valid transform as qform, a stale sform with code 0
        write_nifti(path, ct_phantom(shape), stale, qform=valid, qform_code=1, sform_code=0)
    code, _, err = cli("segment", path, "--model", ct_model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    out = tmp_path / "out" / "scan.nii.gz"
    header = nib.load(out).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == codes
    np.testing.assert_allclose(nib.load(out).affine, valid, atol=1e-4)
    # SimpleITK (ITK's own NIfTI reader) puts the output where the input's coded transform put the input.
    image = sitk.ReadImage(str(out))
    for index in [(0, 0, 0), (19, 0, 0), (0, 19, 9), (19, 19, 9)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = valid @ np.array([*index, 1.0])
        np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-3)
