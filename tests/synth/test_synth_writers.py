"""The dataset writers produce exactly the official layouts, deterministically."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from medseg.errors import ConfigError, InputError
from medseg.io import load_volume, read_geometry
from medseg.synth import write_brats, write_synapse
from medseg.synth.synapse import OFFICIAL_TEST_NUMBERS, case_numbers, transunet_split

SHAPE = (32, 32, 24)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("year", "names", "labels"),
    [
        (2021, ["BraTS2021_{n}/BraTS2021_{n}_{m}.nii.gz", ("t1", "t1ce", "t2", "flair", "seg")], {0, 1, 2, 4}),
        (2023, ["BraTS-GLI-{n}-000/BraTS-GLI-{n}-000-{m}.nii.gz", ("t1n", "t1c", "t2w", "t2f", "seg")], {0, 1, 2, 3}),
    ],
)
def test_brats_layout_dtypes_labels_and_shared_affine(tmp_path: Path, year: int, names, labels: set[int]) -> None:
    pattern, suffixes = names
    write_brats(tmp_path, 2, shape=SHAPE, year=year, seed=3)
    expected = sorted(pattern.format(n=f"{n:05d}", m=m) for n in range(2) for m in suffixes)
    assert _tree(tmp_path) == expected
    found_labels: set[int] = set()
    for n in range(2):
        files = [tmp_path / pattern.format(n=f"{n:05d}", m=m) for m in suffixes]
        geometries = [read_geometry(f) for f in files]
        assert all(g.shape == SHAPE for g in geometries)
        assert all(np.array_equal(g.affine, geometries[0].affine) for g in geometries)
        assert geometries[0].orientation == "LPS"
        assert [g.dtype for g in geometries] == ["int16"] * 4 + ["uint8"]
        found_labels |= set(np.unique(load_volume(files[-1]).array).tolist())
    assert found_labels <= labels
    assert labels - {0} - found_labels <= {1}  # a small case may lack necrosis, never oedema or enhancing


def test_brats_is_deterministic_and_cases_differ(tmp_path: Path) -> None:
    write_brats(tmp_path / "a", 2, shape=SHAPE, seed=11)
    write_brats(tmp_path / "b", 2, shape=SHAPE, seed=11)
    write_brats(tmp_path / "c", 1, shape=SHAPE, seed=12)
    first = "BraTS2021_00000/BraTS2021_00000_flair.nii.gz"
    second = "BraTS2021_00001/BraTS2021_00001_flair.nii.gz"
    a0, b0 = load_volume(tmp_path / "a" / first).array, load_volume(tmp_path / "b" / first).array
    np.testing.assert_array_equal(a0, b0)
    assert not np.array_equal(a0, load_volume(tmp_path / "a" / second).array)
    assert not np.array_equal(a0, load_volume(tmp_path / "c" / first).array)


def test_synapse_raw_layout(tmp_path: Path) -> None:
    write_synapse(tmp_path, 3, shape=SHAPE, seed=0)
    expected = sorted(
        [f"RawData/Training/img/img{n:04d}.nii.gz" for n in (1, 2, 3)]
        + [f"RawData/Training/label/label{n:04d}.nii.gz" for n in (1, 2, 3)]
    )
    assert _tree(tmp_path) == expected
    image = load_volume(tmp_path / "RawData/Training/img/img0002.nii.gz")
    label = load_volume(tmp_path / "RawData/Training/label/label0002.nii.gz")
    assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
    assert image.geometry.matches(label.geometry)
    # The field of view is fixed (360 x 360 x 192 mm); the default shape gives 1.41 x 1.41 x 3 mm voxels.
    np.testing.assert_allclose(image.geometry.spacing, (360 / 32, 360 / 32, 192 / 24))
    assert image.geometry.orientation == "LPS"
    assert set(np.unique(label.array).tolist()) <= set(range(14))
    assert image.array.min() <= -900


def test_synapse_transunet_layout(tmp_path: Path) -> None:
    write_synapse(tmp_path, 3, shape=SHAPE, seed=0, output_format="transunet")
    lists = tmp_path / "lists" / "lists_Synapse"
    train = (lists / "train.txt").read_text().split()
    test = (lists / "test_vol.txt").read_text().split()
    assert (lists / "all.lst").read_text().split() == ["case0001", "case0002", "case0003"]
    assert test == ["case0003"]
    assert train == [f"case{c:04d}_slice{k:03d}" for c in (1, 2) for k in range(SHAPE[2])]
    assert sorted(p.stem for p in (tmp_path / "train_npz").iterdir()) == sorted(train)
    assert [p.name for p in (tmp_path / "test_vol_h5").iterdir()] == ["case0003.npy.h5"]
    with np.load(tmp_path / "train_npz" / "case0001_slice010.npz") as data:
        assert sorted(data.files) == ["image", "label"]
        assert data["image"].dtype == np.float32 and data["image"].shape == SHAPE[:2]
        assert data["label"].dtype == np.uint8
        assert 0.0 <= data["image"].min() and data["image"].max() <= 1.0
    with h5py.File(tmp_path / "test_vol_h5" / "case0003.npy.h5", "r") as handle:
        image, label = handle["image"][()], handle["label"][()]
    assert image.shape == label.shape == (SHAPE[2], SHAPE[0], SHAPE[1])
    assert set(np.unique(label).tolist()) <= set(range(9))


def test_transunet_volumes_match_the_raw_cases(tmp_path: Path) -> None:
    from medseg.data.labels import btcv_to_transunet, transunet_normalise

    write_synapse(tmp_path / "raw", 2, shape=SHAPE, seed=4)
    write_synapse(tmp_path / "tu", 2, shape=SHAPE, seed=4, output_format="transunet")
    raw_image = load_volume(tmp_path / "raw/RawData/Training/img/img0002.nii.gz").array
    raw_label = load_volume(tmp_path / "raw/RawData/Training/label/label0002.nii.gz").array
    with h5py.File(tmp_path / "tu/test_vol_h5/case0002.npy.h5", "r") as handle:
        np.testing.assert_allclose(handle["image"][()], np.transpose(transunet_normalise(raw_image), (2, 0, 1)))
        np.testing.assert_array_equal(handle["label"][()], np.transpose(btcv_to_transunet(raw_label), (2, 0, 1)))
    with np.load(tmp_path / "tu/train_npz/case0001_slice005.npz") as data:
        raw1 = load_volume(tmp_path / "raw/RawData/Training/label/label0001.nii.gz").array
        np.testing.assert_array_equal(data["label"], btcv_to_transunet(raw1[:, :, 5]))


def test_thirty_cases_give_the_official_transunet_split(tmp_path: Path) -> None:
    write_synapse(tmp_path, 30, shape=(8, 8, 8), seed=0, output_format="transunet")
    test = (tmp_path / "lists/lists_Synapse/test_vol.txt").read_text().split()
    assert sorted(test) == sorted(f"case{n:04d}" for n in OFFICIAL_TEST_NUMBERS)
    train_cases = {name.split("_")[0] for name in (tmp_path / "lists/lists_Synapse/train.txt").read_text().split()}
    assert len(train_cases) == 18 and not train_cases & set(test)
    assert train_cases | set(test) == {f"case{n:04d}" for n in case_numbers(30)}


@pytest.mark.parametrize(("cases", "n_test"), [(2, 1), (3, 1), (5, 2), (10, 4), (29, 12)])
def test_smaller_sets_split_in_the_18_to_12_proportion(cases: int, n_test: int) -> None:
    train, test = transunet_split(case_numbers(cases))
    assert len(test) == n_test and len(train) == cases - n_test
    assert not set(train) & set(test)


def test_case_numbers_follow_btcv() -> None:
    assert case_numbers(12) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21, 22]
    assert case_numbers(31)[-2:] == [40, 41]


def test_writers_refuse_a_non_empty_folder_and_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_brats(tmp_path, 1, shape=SHAPE)
    with pytest.raises(ConfigError, match="year"):
        write_brats(tmp_path / "x", 1, shape=SHAPE, year=2022)
    with pytest.raises(ConfigError, match="--cases"):
        write_synapse(tmp_path / "y", 1, shape=SHAPE, output_format="transunet")
    with pytest.raises(ConfigError, match="format"):
        write_synapse(tmp_path / "z", 1, shape=SHAPE, output_format="nifti")
    with pytest.raises(ConfigError, match="--shape"):
        write_brats(tmp_path / "w", 1, shape=(32, 32))
    assert (tmp_path / "keep.txt").read_text() == "mine"
