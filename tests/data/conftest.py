"""Small synthetic datasets in every supported layout, written once per test session (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.io import Geometry, save_like
from medseg.synth import brain_phantom, write_brats, write_synapse
from medseg.synth.brats import brats_affine

SHAPE = (32, 32, 24)


@pytest.fixture(scope="session")
def brats2021_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brats2021")
    write_brats(root, 3, shape=SHAPE, year=2021, seed=1)
    return root


@pytest.fixture(scope="session")
def brats2023_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brats2023")
    write_brats(root, 2, shape=SHAPE, year=2023, seed=1)
    return root


@pytest.fixture(scope="session")
def synapse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synapse")
    write_synapse(root, 3, shape=SHAPE, seed=1)
    return root


@pytest.fixture(scope="session")
def transunet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transunet")
    write_synapse(root, 3, shape=(16, 16, 8), seed=1, output_format="transunet")
    return root


def write_nnunet(root: Path, cases: int = 3) -> Path:
    """An nnU-Net v2 raw dataset of brain phantoms: 2 channels (T1ce, FLAIR), labels 0..3."""
    affine = brats_affine(SHAPE)
    geometry = Geometry.from_affine(affine, SHAPE, "int16")
    for n in range(cases):
        phantom = brain_phantom(SHAPE, np.random.default_rng([2, n]))
        case = f"BRAIN_{n:03d}"
        save_like(phantom.images["t1ce"], geometry, root / "imagesTr" / f"{case}_0000.nii.gz", kind="image")
        save_like(phantom.images["flair"], geometry, root / "imagesTr" / f"{case}_0001.nii.gz", kind="image")
        save_like(phantom.tumour, geometry, root / "labelsTr" / f"{case}.nii.gz", kind="label")
    dataset = {
        "channel_names": {"0": "T1ce", "1": "FLAIR"},
        "labels": {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 3},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": "Dataset901_Brain",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return root


@pytest.fixture(scope="session")
def nnunet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nnunet(tmp_path_factory.mktemp("Dataset901_Brain"))
