"""BraTS label maps <-> TC/WT/ET region channels, for both label conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.transforms import LabelsToRegionsd, RegionsToLabelsd, labels_to_regions, regions_to_labels

ET = {"brats2021": 4, "brats2023": 3}
# Expected (TC, WT, ET) for each sub-region label.
EXPECTED = {"background": (0, 0, 0), "ncr": (1, 1, 0), "ed": (0, 1, 0), "et": (1, 1, 1)}


def _hand_made(convention: str) -> tuple[np.ndarray, dict[str, tuple[int, ...]]]:
    """A (3, 4) map with each label at a known voxel, plus their positions."""
    label = np.zeros((3, 4), dtype=np.uint8)
    positions = {"background": (0, 0), "ncr": (1, 2), "ed": (2, 1), "et": (0, 3)}
    label[positions["ncr"]] = 1
    label[positions["ed"]] = 2
    label[positions["et"]] = ET[convention]
    return label, positions


@pytest.mark.parametrize("convention", ["brats2021", "brats2023"])
def test_each_label_lands_in_its_regions(convention):
    label, positions = _hand_made(convention)
    regions = labels_to_regions(label, convention)
    assert regions.shape == (3, 3, 4) and regions.dtype == np.uint8
    for name, position in positions.items():
        assert tuple(regions[(slice(None), *position)]) == EXPECTED[name], name
    # Nothing else is set: the only nonzero voxels are the three tumour voxels.
    assert int(regions.sum()) == 2 + 1 + 3


@pytest.mark.parametrize("convention", ["brats2021", "brats2023"])
def test_round_trip_is_identity_for_valid_maps(convention, rng):
    values = np.array([0, 1, 2, ET[convention]], dtype=np.uint8)
    label = values[rng.integers(0, 4, size=(6, 5, 4))]
    assert np.array_equal(regions_to_labels(labels_to_regions(label, convention), convention), label)
    # Also through float probabilities and through torch tensors.
    probabilities = labels_to_regions(label, convention).astype(np.float32) * 0.8 + 0.1
    assert np.array_equal(regions_to_labels(probabilities, convention), label)
    back = regions_to_labels(labels_to_regions(torch.as_tensor(label), convention), convention)
    assert isinstance(back, torch.Tensor) and torch.equal(back, torch.as_tensor(label))


def test_conventions_differ_only_in_enhancing_value():
    label_2021 = np.array([0, 1, 2, 4])
    label_2023 = np.array([0, 1, 2, 3])
    assert np.array_equal(labels_to_regions(label_2021, "brats2021"), labels_to_regions(label_2023, "brats2023"))
    with pytest.raises(InputError, match=r"label values 4 are not valid; valid values: \[0, 1, 2, 3\]"):
        labels_to_regions(label_2021, "brats2023")
    with pytest.raises(InputError, match=r"label values 3 are not valid"):
        labels_to_regions(label_2023, "brats2021")


def test_bad_values_are_named():
    with pytest.raises(InputError, match=r"label values 5, 7 are not valid"):
        labels_to_regions(np.array([0, 5, 7, 1]), "brats2021")
    with pytest.raises(InputError, match=r"label values 1.5 are not valid"):
        labels_to_regions(np.array([0.0, 1.5]), "brats2021")
    with pytest.raises(ConfigError, match="brats2021"):
        labels_to_regions(np.zeros(3), "brats2022")


def test_inconsistent_regions_resolve_by_nesting():
    # Columns: TC only, ET only, ET+WT (no TC), TC+WT, everything, WT only, nothing.
    tc = [1, 0, 0, 1, 1, 0, 0]
    wt = [0, 0, 1, 1, 1, 1, 0]
    et = [0, 1, 1, 0, 1, 0, 0]
    regions = np.array([tc, wt, et], dtype=bool)
    assert regions_to_labels(regions, "brats2021").tolist() == [0, 0, 2, 1, 4, 2, 0]
    assert regions_to_labels(regions, "brats2023").tolist() == [0, 0, 2, 1, 3, 2, 0]


def test_threshold_is_strict():
    probabilities = np.array([[0.5, 0.9], [0.5, 0.51], [0.0, 0.0]])
    assert regions_to_labels(probabilities, "brats2021").tolist() == [0, 1]
    assert regions_to_labels(probabilities, "brats2021", threshold=0.4).tolist() == [1, 1]


def test_regions_need_three_channels():
    with pytest.raises(InputError, match=r"\(3, \*spatial\)"):
        regions_to_labels(np.zeros((2, 4, 4)), "brats2021")


def test_dictionary_transforms_keep_channel_layout():
    label, _ = _hand_made("brats2023")
    data = LabelsToRegionsd("label", "brats2023")({"label": torch.as_tensor(label)[None], "case_id": "c1"})
    assert data["label"].shape == (3, 3, 4)
    back = RegionsToLabelsd("label", "brats2023")(data)
    assert back["label"].shape == (1, 3, 4)
    assert np.array_equal(back["label"][0].numpy(), label)
    with pytest.raises(InputError, match="label of case c1"):
        LabelsToRegionsd("label", "brats2021")({"label": torch.as_tensor(label)[None], "case_id": "c1"})
