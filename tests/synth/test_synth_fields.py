"""Smooth random fields: unit variance, smoothness set by the correlation length, determinism."""

from __future__ import annotations

import numpy as np

from medseg.synth.fields import bias_field, smooth_field


def _neighbour_correlation(field: np.ndarray, axis: int) -> float:
    a = np.moveaxis(field, axis, 0)
    return float(np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1])


def test_smooth_field_has_unit_variance_and_zero_mean() -> None:
    field = smooth_field((64, 64, 48), np.random.default_rng(0), 4.0)
    assert field.shape == (64, 64, 48) and field.dtype == np.float32
    assert abs(float(field.std()) - 1.0) < 0.15
    assert abs(float(field.mean())) < 0.25


def test_longer_correlation_length_gives_smoother_field() -> None:
    short = smooth_field((48, 48, 48), np.random.default_rng(1), 2.0)
    long = smooth_field((48, 48, 48), np.random.default_rng(1), 12.0)
    assert _neighbour_correlation(long, 0) > 0.98
    assert _neighbour_correlation(short, 0) < _neighbour_correlation(long, 0) - 0.05


def test_anisotropic_length_follows_each_axis() -> None:
    field = smooth_field((40, 40, 40), np.random.default_rng(2), (16.0, 16.0, 2.0))
    assert _neighbour_correlation(field, 0) > _neighbour_correlation(field, 2) + 0.05


def test_fields_are_deterministic_for_a_seed_and_differ_between_seeds() -> None:
    a = smooth_field((20, 24, 16), np.random.default_rng(5), 5.0)
    b = smooth_field((20, 24, 16), np.random.default_rng(5), 5.0)
    c = smooth_field((20, 24, 16), np.random.default_rng(6), 5.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_bias_field_is_positive_and_centred_on_one() -> None:
    bias = bias_field((32, 32, 32), np.random.default_rng(3), 30.0, strength=0.15)
    assert bias.min() > 0.0
    assert 0.5 < float(np.median(bias)) < 1.5
