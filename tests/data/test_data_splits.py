"""K-fold splits by patient and TransUNet's list-file split."""

from __future__ import annotations

import pytest

from medseg.data import index, split, transunet_split
from medseg.errors import ConfigError

CASES = [f"case{n:03d}" for n in range(23)]


@pytest.mark.parametrize("n_folds", [2, 5])
def test_folds_are_disjoint_and_cover_every_case(n_folds: int) -> None:
    seen = []
    for fold in range(n_folds):
        train, val = split(CASES, n_folds=n_folds, fold=fold, seed=3)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(CASES)
        seen.extend(val)
    assert sorted(seen) == sorted(CASES)  # each case validated exactly once


def test_fold_sizes_differ_by_at_most_one() -> None:
    sizes = [len(split(CASES, n_folds=5, fold=f)[1]) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(CASES)


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    a = split(CASES, n_folds=5, fold=2, seed=7)
    b = split(list(reversed(CASES)), n_folds=5, fold=2, seed=7)
    assert a == split(CASES, n_folds=5, fold=2, seed=7)
    assert sorted(a[1]) == sorted(b[1])
    assert split(CASES, n_folds=5, fold=2, seed=8)[1] != a[1]


def test_split_keeps_all_slices_of_a_volume_together(transunet_dir) -> None:
    slices = index(transunet_dir)
    train, val = split(slices, n_folds=2, fold=0, seed=0)
    train_groups = {c["group"] for c in train}
    val_groups = {c["group"] for c in val}
    assert train_groups and val_groups and not train_groups & val_groups
    assert len(train) + len(val) == len(slices)


def test_split_accepts_index_dictionaries(brats2021_dir) -> None:
    cases = index(brats2021_dir)
    train, val = split(cases, n_folds=3, fold=1)
    assert len(val) == 1 and len(train) == 2 and val[0] in cases


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_folds": 1}, "at least 2"), ({"n_folds": 5, "fold": 5}, "between 0 and 4"), ({"n_folds": 30}, "30 folds")],
)
def test_split_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split(CASES, **kwargs)


def test_transunet_split_reads_the_list_files(transunet_dir) -> None:
    train, test = transunet_split(transunet_dir)
    assert {c["group"] for c in train} == {"case0001", "case0002"}
    assert [c["case_id"] for c in test] == ["case0003"]
