"""Affines shared by the medseg.io tests (a plain module with a unique name, imported by the test files)."""

from __future__ import annotations

import numpy as np


def oblique_affine() -> np.ndarray:
    """A rotation about a tilted axis, anisotropic spacing and a non-round origin (RAS+ mm)."""
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    rotation = Rotation.from_euler("xyz", [12.0, -25.0, 33.0], degrees=True).as_matrix()
    affine[:3, :3] = rotation @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-11.5, 20.25, -30.125]
    return affine


def axis_affine(codes: str) -> np.ndarray:
    """An axis-aligned affine with spacing (1.5, 2, 3) and the given orientation code, e.g. "LPS"."""
    signs = {"R": 1.0, "L": -1.0, "A": 1.0, "P": -1.0, "S": 1.0, "I": -1.0}
    affine = np.diag([signs[c] * s for c, s in zip(codes, (1.5, 2.0, 3.0))] + [1.0])
    affine[:3, 3] = [10.0, -20.0, 30.5]
    return affine
