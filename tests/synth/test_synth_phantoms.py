"""The brain and abdomen phantoms: anatomy, contrasts and variation between cases."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.labels import BTCV_LABELS
from medseg.synth.abdomen import abdomen_phantom
from medseg.synth.brain import ENHANCING, NECROSIS, OEDEMA, brain_phantom
from medseg.synth.brats import brats_affine
from medseg.synth.synapse import synapse_affine

BRAIN_SHAPE = (64, 64, 48)
ABDOMEN_SHAPE = (96, 96, 40)


@pytest.fixture(scope="module")
def brains():
    # Seeds chosen only for variety; every assertion below must hold for any case with a necrotic core.
    return [brain_phantom(BRAIN_SHAPE, np.random.default_rng([7, n])) for n in range(3)]


@pytest.fixture(scope="module")
def abdomens():
    return [abdomen_phantom(ABDOMEN_SHAPE, np.random.default_rng([7, n])) for n in range(2)]


def _mean(image: np.ndarray, mask: np.ndarray) -> float:
    return float(image[mask].mean())


def test_brain_is_skull_stripped_style_zero_background(brains) -> None:
    for phantom in brains:
        head = phantom.images["t1"] > 0
        for image in phantom.images.values():
            assert image.dtype == np.int16
            corners = image[:4, :4, :4]
            assert not corners.any()
        fraction = head.mean()
        assert 0.1 < fraction < 0.45  # BraTS heads fill roughly a fifth of the volume


def test_brain_tumour_has_oedema_enhancing_rim_and_core(brains) -> None:
    for phantom in brains:
        values = set(np.unique(phantom.tumour).tolist())
        assert {OEDEMA, ENHANCING} <= values <= {0, NECROSIS, OEDEMA, ENHANCING}
        assert (phantom.tumour == OEDEMA).sum() > (phantom.tumour == ENHANCING).sum() * 0.3


def test_brain_modality_contrasts_follow_mr_physics(brains) -> None:
    for phantom in brains:
        t1ce, t2, flair = phantom.images["t1ce"], phantom.images["t2"], phantom.images["flair"]
        et, ed = phantom.tumour == ENHANCING, phantom.tumour == OEDEMA
        brain = (phantom.images["t1"] > 0) & (phantom.tumour == 0)
        assert _mean(t1ce, et) > 1.3 * _mean(t1ce, brain)  # enhancing tumour bright with contrast
        assert _mean(flair, ed) > 1.3 * _mean(flair, brain)  # oedema bright on FLAIR
        assert _mean(t2, ed) > 1.2 * _mean(t2, brain)  # and on T2
        necrosis = phantom.tumour == NECROSIS
        if necrosis.any():
            assert _mean(t1ce, necrosis) < 0.6 * _mean(t1ce, et)  # necrosis dark on T1 with contrast


def test_brain_cases_differ_in_tumour_size_and_position(brains) -> None:
    sizes = [int((p.tumour > 0).sum()) for p in brains]
    centres = [np.argwhere(p.tumour > 0).mean(axis=0) for p in brains]
    assert len(set(sizes)) == len(sizes)
    assert np.linalg.norm(centres[0] - centres[1]) > 2.0


def _moment_ellipsoid_dice(mask: np.ndarray, spacing) -> float:
    """Dice between a mask and the solid ellipsoid with the same centre and second moments (1 for ellipsoids)."""
    points = np.argwhere(mask) * np.asarray(spacing)
    centre = points.mean(axis=0)
    inverse = np.linalg.inv(5.0 * np.cov((points - centre).T))  # a solid ellipsoid has covariance r^2 / 5
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(mask.shape, spacing)], indexing="ij"), -1)
    grid -= centre
    ellipsoid = np.einsum("...i,ij,...j->...", grid, inverse, grid) <= 1.0
    return 2.0 * float((ellipsoid & mask).sum()) / float(ellipsoid.sum() + mask.sum())


def test_moment_ellipsoid_dice_is_one_for_an_ellipsoid() -> None:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in BRAIN_SHAPE], indexing="ij"), -1)
    ellipsoid = (((grid - [30, 30, 24]) / [12, 8, 6]) ** 2).sum(-1) <= 1.0
    assert _moment_ellipsoid_dice(ellipsoid, (1.0, 1.0, 1.0)) > 0.97


def test_brain_tumour_is_irregular_not_an_ellipsoid(brains) -> None:
    for phantom in brains:
        assert _moment_ellipsoid_dice(phantom.tumour > 0, phantom.spacing) < 0.9


def test_abdomen_is_in_hounsfield_units(abdomens) -> None:
    for phantom in abdomens:
        assert phantom.image.dtype == np.int16 and phantom.label.dtype == np.uint8
        assert np.median(phantom.image[:3, :3, :]) < -900  # air around the body
        liver = phantom.image[phantom.label == 6]
        assert 60 < np.median(liver) < 180
        aorta = phantom.image[phantom.label == 8]
        assert 150 < np.median(aorta) < 320  # arterial contrast
        assert phantom.image.max() > 400  # bone


def test_abdomen_has_all_13_organs(abdomens) -> None:
    for phantom in abdomens:
        assert set(np.unique(phantom.label).tolist()) == set(BTCV_LABELS)


def _world_centroid(label: np.ndarray, value: int, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(label == value).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def test_abdomen_organs_are_in_anatomical_order(abdomens) -> None:
    affine = synapse_affine(ABDOMEN_SHAPE)
    for phantom in abdomens:
        centre = {v: _world_centroid(phantom.label, v, affine) for v in range(1, 14)}
        # RAS+ world: x grows towards the patient's right, y towards anterior.
        right_x, anterior_y = 0, 1
        assert centre[6][right_x] > centre[1][right_x]  # liver on the right, spleen on the left
        assert centre[2][right_x] > centre[3][right_x]  # right kidney vs left kidney
        assert centre[9][right_x] > centre[8][right_x]  # inferior vena cava right of the aorta
        assert centre[12][right_x] > centre[13][right_x]  # right vs left adrenal gland
        assert centre[2][anterior_y] < centre[4][anterior_y]  # kidneys posterior to the gallbladder
        assert centre[7][anterior_y] > centre[1][anterior_y]  # stomach anterior to the spleen


def test_abdomen_cases_differ(abdomens) -> None:
    assert not np.array_equal(abdomens[0].label, abdomens[1].label)


def test_affines_have_brats_and_ct_orientation() -> None:
    import nibabel as nib

    assert "".join(nib.aff2axcodes(brats_affine((240, 240, 155)))) == "LPS"
    assert np.allclose(np.abs(np.diag(brats_affine((240, 240, 155)))[:3]), 1.0)
    assert "".join(nib.aff2axcodes(synapse_affine((256, 256, 64)))) == "LPS"
    np.testing.assert_allclose(np.abs(np.diag(synapse_affine((256, 256, 64)))[:3]), (1.40625, 1.40625, 3.0))
