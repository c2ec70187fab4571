"""Geometry: spacing, orientation, tolerant matching and messages that say what differs."""

from __future__ import annotations

import numpy as np
import pytest
from io_test_affines import axis_affine, oblique_affine

from medseg.errors import GeometryError, InputError
from medseg.io import Geometry


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "RPI", "ASR"])
def test_orientation_code_follows_the_affine(codes):
    if codes == "ASR":
        affine = np.zeros((4, 4))
        affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = 2.0, 3.0, 1.5, 1.0
    else:
        affine = axis_affine(codes)
    assert Geometry.from_affine(affine, (7, 6, 5)).orientation == codes


def test_spacing_of_an_oblique_affine_is_the_column_length():
    geometry = Geometry.from_affine(oblique_affine(), (7, 6, 5))
    np.testing.assert_allclose(geometry.spacing, (0.7, 1.3, 2.5))
    np.testing.assert_allclose(geometry.origin, (-11.5, 20.25, -30.125))
    np.testing.assert_allclose(geometry.direction.T @ geometry.direction, np.eye(3), atol=1e-12)


def test_matches_uses_an_absolute_tolerance():
    geometry = Geometry.from_affine(axis_affine("RAS"), (7, 6, 5))
    nudged = axis_affine("RAS")
    nudged[0, 3] += 1e-7
    assert geometry.matches(Geometry.from_affine(nudged, (7, 6, 5)))
    nudged[0, 3] += 1e-3
    assert not geometry.matches(Geometry.from_affine(nudged, (7, 6, 5)))
    assert geometry.matches(Geometry.from_affine(nudged, (7, 6, 5)), atol=1e-2)
    assert not geometry.matches(Geometry.from_affine(axis_affine("RAS"), (7, 6, 4)))


def test_require_match_names_what_and_every_difference():
    first = Geometry.from_affine(axis_affine("RAS"), (7, 6, 5))
    second = Geometry.from_affine(axis_affine("LPS"), (7, 6, 4))
    with pytest.raises(GeometryError) as raised:
        first.require_match(second, "label b.nii.gz vs image a.nii.gz")
    message = str(raised.value)
    assert message.startswith("label b.nii.gz vs image a.nii.gz: geometry differs:")
    assert "shape (7, 6, 5) vs (7, 6, 4)" in message
    assert "direction RAS" in message and "vs LPS" in message
    spaced = axis_affine("RAS") @ np.diag([2.0, 1.0, 1.0, 1.0])
    with pytest.raises(GeometryError, match=r"spacing \(1.5, 2, 3\) vs \(3, 2, 3\) mm"):
        first.require_match(Geometry.from_affine(spaced, (7, 6, 5)), "x")


def test_geometry_is_immutable_and_hashable():
    geometry = Geometry.from_affine(axis_affine("RAS"), (7, 6, 5))
    with pytest.raises(ValueError):
        geometry.affine[0, 0] = 5.0
    same = Geometry.from_affine(axis_affine("RAS"), (7, 6, 5))
    assert geometry == same and hash(geometry) == hash(same)
    assert geometry != Geometry.from_affine(axis_affine("LPS"), (7, 6, 5))


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"affine": np.eye(3), "shape": (2, 2, 2)}, "4x4"),
        ({"affine": np.diag([1.0, 0.0, 1.0, 1.0]), "shape": (2, 2, 2)}, "singular"),
        ({"affine": np.full((4, 4), np.nan), "shape": (2, 2, 2)}, "non-finite"),
        ({"affine": np.eye(4), "shape": (2, 2)}, "three positive sizes"),
        ({"affine": np.eye(4), "shape": (2, 0, 2)}, "three positive sizes"),
        ({"affine": np.eye(4), "shape": (2, 2, 2), "source_format": "png"}, "unknown source_format"),
    ],
)
def test_invalid_geometry_is_refused(kwargs, problem):
    with pytest.raises(InputError, match=problem):
        Geometry(**kwargs)


def test_from_affine_sets_qform_only_for_orthogonal_axes():
    assert Geometry.from_affine(oblique_affine(), (2, 2, 2)).qform_code == 1
    sheared = np.eye(4)
    sheared[0, 2] = 0.3
    made = Geometry.from_affine(sheared, (2, 2, 2))
    assert (made.qform, made.qform_code, made.sform_code) == (None, 0, 1)
