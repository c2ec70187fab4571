"""Inference presets + inversion keep world geometry: orientation, cropping and resampling are undone exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.io import Geometry, load_volume, save_like
from medseg.transforms import (
    BratsTransformConfig,
    SynapseTransformConfig,
    brats_inference_transforms,
    input_geometry,
    invert_to_input,
    synapse_inference_transforms,
)

SHAPE = (20, 17, 12)
# Anisotropic voxels (mm) and an origin away from zero, RAS+ axes.
RAS_AFFINE = np.array([[1.0, 0, 0, -9.5], [0, 1.2, 0, 4.0], [0, 0, 2.0, -7.0], [0, 0, 0, 1]])


def _lps_copy(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same world content stored the other way along i and j (LPS): data flipped, affine adjusted."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [SHAPE[0] - 1, SHAPE[1] - 1]
    return array[..., ::-1, ::-1, :].copy(), affine @ flip


def _blob(rng: np.random.Generator, low: float, high: float, background: float) -> np.ndarray:
    """A smooth bright blob plus noise inside a box, ``background`` outside the box."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"))
    centre = np.array([9.0, 8.0, 6.0])[:, None, None, None]
    blob = np.exp(-np.sum(((index - centre) / np.array([5.0, 4.0, 3.0])[:, None, None, None]) ** 2, axis=0))
    values = low + (high - low) * (0.8 * blob + 0.2 * rng.random(SHAPE))
    out = np.full(SHAPE, background, dtype=np.float32)
    out[2:18, 3:15, 1:11] = values[2:18, 3:15, 1:11]
    return out


def _write(folder: Path, name: str, array: np.ndarray, affine: np.ndarray) -> str:
    path = folder / f"{name}.nii.gz"
    save_like(array, Geometry.from_affine(affine, SHAPE), path, kind="image")
    return str(path)


def _segment(preset, item: object, threshold: float) -> tuple[np.ndarray, dict]:
    """Preset, a deterministic 'network' (threshold channel 0), then back to the input grid."""
    data = preset({"image": item, "case_id": "geometry"})
    mask = (data["image"][0] > threshold).numpy().astype(np.uint8)
    return invert_to_input(mask, data), data


def test_brats_preset_gives_identical_world_masks_for_ras_and_lps_copies(tmp_path, rng):
    modalities = [_blob(rng, 50.0, 400.0, 0.0) for _ in range(4)]
    ras = [_write(tmp_path, f"ras{c}", m, RAS_AFFINE) for c, m in enumerate(modalities)]
    lps_affine = _lps_copy(modalities[0], RAS_AFFINE)[1]
    lps = [_write(tmp_path, f"lps{c}", _lps_copy(m, RAS_AFFINE)[0], lps_affine) for c, m in enumerate(modalities)]
    preset = brats_inference_transforms(BratsTransformConfig(convention="brats2023"))
    mask_ras, data_ras = _segment(preset, ras, threshold=0.3)
    mask_lps, data_lps = _segment(preset, lps, threshold=0.3)
    assert load_volume(lps[0]).geometry.orientation == "LPS"
    assert mask_ras.shape == mask_lps.shape == SHAPE
    assert 0 < mask_ras.sum() < mask_ras.size
    assert np.array_equal(mask_lps[::-1, ::-1, :], mask_ras)
    assert input_geometry(data_lps).matches(load_volume(lps[0]).geometry)
    # The preset cropped to the brain box, so the inversion had to pad back.
    assert data_ras["image"].shape[1:] == (16, 12, 10)
    # Same result as thresholding the z-scored input directly (crop and orientation change nothing).
    first = modalities[0]
    inside = first != 0
    zscored = np.where(inside, (first - first[inside].mean()) / first[inside].std(), 0.0)
    assert np.array_equal(mask_ras, (zscored > 0.3).astype(np.uint8))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 3.0), (0.5, 2.4, 2.0)])
def test_synapse_preset_with_resampling_is_world_consistent_and_restores_shape(tmp_path, rng, spacing):
    ct = _blob(rng, -150.0, 300.0, -1000.0)
    lps_ct, lps_affine = _lps_copy(ct, RAS_AFFINE)
    ras_path = _write(tmp_path, "ct_ras", ct, RAS_AFFINE)
    lps_path = _write(tmp_path, "ct_lps", lps_ct, lps_affine)
    preset = synapse_inference_transforms(SynapseTransformConfig(spacing=spacing))
    mask_ras, data_ras = _segment(preset, ras_path, threshold=0.55)
    mask_lps, _ = _segment(preset, lps_path, threshold=0.55)
    assert data_ras["image"].shape[1:] != SHAPE  # it was resampled
    assert mask_ras.shape == mask_lps.shape == SHAPE
    assert 0 < mask_ras.sum() < mask_ras.size
    assert np.array_equal(mask_lps[::-1, ::-1, :], mask_ras)
    # Resampling blurs edges only: the mask agrees with thresholding the input directly almost everywhere.
    direct = (np.clip((ct + 125.0) / 400.0, 0, 1) > 0.55).astype(np.uint8)
    assert np.mean(mask_ras == direct) > 0.9


def test_upsampling_preset_inverts_exactly(tmp_path, rng):
    # Target spacing half the input's: every input voxel centre is a preset voxel centre, where linear
    # resampling returns the input value, so the round trip must reproduce direct thresholding exactly.
    ct = _blob(rng, -150.0, 300.0, -1000.0)
    path = _write(tmp_path, "ct", ct, RAS_AFFINE)
    preset = synapse_inference_transforms(SynapseTransformConfig(spacing=(0.5, 0.6, 1.0), crop_foreground=False))
    mask, data = _segment(preset, path, threshold=0.55)
    assert data["image"].shape[1:] == tuple(2 * n - 1 for n in SHAPE)
    direct = (np.clip((ct + 125.0) / 400.0, 0, 1) > 0.55).astype(np.uint8)
    assert np.array_equal(mask, direct)


def test_probabilities_invert_to_input_shape_with_background_fill(tmp_path, rng):
    ct = _blob(rng, -150.0, 300.0, -1000.0)
    preset = synapse_inference_transforms(SynapseTransformConfig(spacing=(1.5, 1.5, 3.0)))
    data = preset({"image": _write(tmp_path, "ct", ct, RAS_AFFINE)})
    foreground = data["image"].numpy()
    probabilities = np.concatenate([1.0 - foreground, foreground])
    back = invert_to_input(probabilities, data, kind="probabilities", fill=(1.0, 0.0))
    assert back.shape == (2, *SHAPE) and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(axis=0), 1.0, atol=1e-5)
    # Outside the body box the background probability is the fill value.
    assert np.all(back[0, :2] == 1.0) and np.all(back[1, :2] == 0.0)
