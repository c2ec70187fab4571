"""Deterministic train/validation splits that never separate the slices of one patient."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from medseg.data.indexing import index
from medseg.data.spec import TRANSUNET
from medseg.errors import ConfigError

Case = TypeVar("Case", Mapping, str)


def case_group(case: Mapping | str) -> str:
    """The patient a case belongs to: its ``"group"``, else its ``"case_id"``; a plain string is its own group.

    Args:
        case: a dictionary from :func:`~medseg.data.indexing.index`, or a case id.

    Returns:
        The group name.

    Raises:
        ConfigError: a dictionary with neither ``"group"`` nor ``"case_id"``.
    """
    if isinstance(case, str):
        return case
    if "group" in case:
        return str(case["group"])
    if "case_id" in case:
        return str(case["case_id"])
    raise ConfigError(f"a case dictionary needs a 'case_id' (or 'group') key to be split, got keys {sorted(case)}")


def split(cases: Sequence[Case], n_folds: int = 5, fold: int = 0, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """K-fold split by patient: one fold for validation, the rest for training.

    The distinct groups (see :func:`case_group`) are sorted, shuffled with ``seed`` and dealt into
    ``n_folds`` folds of sizes differing by at most one; all cases of a group land in the same fold.
    The result depends only on the set of groups, ``n_folds``, ``fold`` and ``seed``, not on the
    order of ``cases``; over ``fold = 0 .. n_folds - 1`` every case is validated exactly once.

    Args:
        cases: case dictionaries (from ``index``) or case ids.
        n_folds: number of folds, at least 2 and at most the number of groups.
        fold: which fold to hold out, ``0 <= fold < n_folds``.
        seed: shuffling seed.

    Returns:
        ``(train, val)``: the cases of the other folds and of fold ``fold``, each in input order.

    Raises:
        ConfigError: ``n_folds`` below 2 or above the number of groups, ``fold`` out of range, or
            cases without a ``case_id``.
    """
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= int(fold) < int(n_folds):
        raise ConfigError(f"fold must be between 0 and {int(n_folds) - 1}, got {fold}")
    keys = [case_group(c) for c in cases]
    groups = sorted(set(keys))
    if len(groups) < n_folds:
        raise ConfigError(f"{n_folds} folds need at least {n_folds} cases (patients), got {len(groups)}")
    order = np.random.default_rng(int(seed)).permutation(len(groups))
    held_out = {groups[i] for i in np.array_split(order, int(n_folds))[int(fold)]}
    train = [c for c, k in zip(cases, keys) if k not in held_out]
    val = [c for c, k in zip(cases, keys) if k in held_out]
    return train, val


def transunet_split(root: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """TransUNet's own split of a preprocessed Synapse folder, read from its list files.

    Args:
        root: the TransUNet dataset folder (``train_npz``, ``test_vol_h5``, ``lists/lists_Synapse``).

    Returns:
        ``(train, test)``: the training slices of ``train.txt`` and the test volumes of ``test_vol.txt``
        as :func:`~medseg.data.indexing.index` dictionaries (18 and 12 volumes in the official split).

    Raises:
        InputError: missing files or no cases (see ``index``).
    """
    return index(root, TRANSUNET, "train"), index(root, TRANSUNET, "test")
