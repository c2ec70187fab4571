"""load_case stacks modalities that share one grid; gzip files made of several members still load."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from io_test_affines import axis_affine

from medseg.errors import ConfigError
from medseg.io import load_case, load_volume, read_geometry

SHAPE = (7, 6, 5)


def test_load_case_stacks_modalities_channel_first_with_names(tmp_path, write_nifti, rng):
    arrays = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(3)]
    paths = [write_nifti(tmp_path / f"m{i}.nii.gz", a, axis_affine("LPS")) for i, a in enumerate(arrays)]
    case = load_case(paths, names=["t1", "t2", "flair"])
    assert case.array.shape == (3, *SHAPE)
    np.testing.assert_array_equal(case.array, np.stack(arrays))
    assert case.channel_names == ("t1", "t2", "flair")
    assert case.geometry.orientation == "LPS" and case.path == paths[0]


def test_load_case_tolerates_float_noise_in_affines(tmp_path, write_nifti):
    nudged = axis_affine("RAS")
    nudged[0, 3] += 2e-5
    first = write_nifti(tmp_path / "a.nii", np.zeros(SHAPE, np.float32), axis_affine("RAS"))
    second = write_nifti(tmp_path / "b.nii", np.ones(SHAPE, np.float32), nudged)
    assert load_case([first, second]).array.shape == (2, *SHAPE)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"channels": True}, "'channels' cannot be passed"),
        ({"names": ["only-one"]}, "2 paths need 2 distinct names"),
        ({"names": ["same", "same"]}, "distinct names"),
    ],
)
def test_load_case_refuses_bad_arguments(tmp_path, write_nifti, kwargs, problem):
    path = write_nifti(tmp_path / "a.nii", np.zeros(SHAPE, np.float32), axis_affine("RAS"))
    with pytest.raises(ConfigError, match=problem):
        load_case([path, path], **kwargs)


def test_load_case_needs_a_path():
    with pytest.raises(ConfigError, match="at least one"):
        load_case([])


def test_multi_member_gzip_loads(tmp_path, write_nifti, rng):
    data = rng.normal(size=SHAPE).astype(np.float32)
    plain = write_nifti(tmp_path / "plain.nii", data, axis_affine("RAS"))
    raw = plain.read_bytes()
    joined = tmp_path / "joined.nii.gz"
    joined.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))  # size trailer = last member only
    np.testing.assert_array_equal(load_volume(joined).array, data)
    assert read_geometry(joined).shape == SHAPE
