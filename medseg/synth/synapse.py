"""Write synthetic Synapse (BTCV) multi-organ CT datasets, raw or in TransUNet's preprocessed form.

Case numbers follow the real BTCV training set: 1 to 10, then 21 to 40 (then 41, 42, ... beyond 30
cases), so 30 cases carry exactly the real numbers. Case number ``n`` with seed ``s`` is drawn from
``default_rng([s, n])``: the same whatever the number of cases or the format.

``raw``::

    OUT/RawData/Training/img/img0001.nii.gz      CT, int16 Hounsfield units
    OUT/RawData/Training/label/label0001.nii.gz  uint8, BTCV labels 0..13

``transunet``::

    OUT/train_npz/case0005_slice000.npz   image float32 (H, W) in [0, 1], label uint8 0..8
    OUT/test_vol_h5/case0001.npy.h5       datasets image float32 and label uint8, (slices, H, W)
    OUT/lists/lists_Synapse/train.txt     one training slice name per line (no extension)
    OUT/lists/lists_Synapse/test_vol.txt  one test case name per line
    OUT/lists/lists_Synapse/all.lst       every case name, training and test, in case order

A volume ``(i, j, k)`` becomes ``(k, i, j)``: one slice per ``k`` (axial), ``H = i``, ``W = j``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data.labels import btcv_to_transunet, transunet_normalise
from medseg.errors import ConfigError, unknown_choice
from medseg.io import Geometry, atomic_write, atomic_write_text, save_like
from medseg.synth.abdomen import FIELD_OF_VIEW_MM, AbdomenPhantom, abdomen_phantom
from medseg.synth.output import checked_settings, prepare_output

SYNAPSE_FORMATS: tuple[str, ...] = ("raw", "transunet")
DEFAULT_SHAPE: tuple[int, int, int] = (256, 256, 64)

# TransUNet's official test cases (lists_Synapse/test_vol.txt); the other 18 of the 30 are training.
OFFICIAL_TEST_NUMBERS: frozenset[int] = frozenset({1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38})
OFFICIAL_TRAIN_FRACTION = 18 / 30


def case_numbers(cases: int) -> list[int]:
    """BTCV case numbers for a dataset of ``cases`` cases: 1..10, 21..40, then 41 onwards.

    Args:
        cases: number of cases.

    Returns:
        The case numbers in order.
    """
    real = list(range(1, 11)) + list(range(21, 41))
    return real[:cases] + list(range(41, 41 + max(0, cases - len(real))))


def transunet_split(numbers: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split case numbers into TransUNet training and test cases.

    The 30 real case numbers get the official split (18 training, 12 test). Any other set is split in
    the same 18:12 proportion, at least one case on each side: the last ``round(0.4 * n)`` cases are
    the test cases.

    Args:
        numbers: case numbers in order (at least two).

    Returns:
        ``(training numbers, test numbers)``, each in the given order.

    Raises:
        ConfigError: fewer than two numbers.
    """
    numbers = list(numbers)
    if len(numbers) < 2:
        raise ConfigError(f"a TransUNet split needs at least two cases, got {len(numbers)}")
    if sorted(numbers) == case_numbers(30):
        train = [n for n in numbers if n not in OFFICIAL_TEST_NUMBERS]
        return train, [n for n in numbers if n in OFFICIAL_TEST_NUMBERS]
    n_test = min(len(numbers) - 1, max(1, round(len(numbers) * (1.0 - OFFICIAL_TRAIN_FRACTION))))
    return numbers[:-n_test], numbers[-n_test:]


def synapse_affine(shape: Sequence[int], field_of_view_mm: Sequence[float] = FIELD_OF_VIEW_MM) -> np.ndarray:
    """The voxel-to-RAS+ affine of a synthetic Synapse CT volume.

    Args:
        shape: array shape ``(D, H, W)``.
        field_of_view_mm: physical extent along ``(D, H, W)``.

    Returns:
        ``(4, 4)`` matrix ``diag(-s_i, -s_j, s_k)`` (axis codes L, P, S) with the volume centre at the
        world origin.
    """
    spacing = np.array([float(f) / int(n) for f, n in zip(field_of_view_mm, shape)])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _phantom(number: int, shape: Sequence[int], seed: int) -> AbdomenPhantom:
    return abdomen_phantom(shape, np.random.default_rng([seed, number]), FIELD_OF_VIEW_MM)


def write_raw(folder: Path, numbers: Sequence[int], shape: Sequence[int], seed: int) -> list[Path]:
    """Write cases in the raw BTCV layout under ``folder/RawData/Training``.

    Args:
        folder: the dataset folder.
        numbers: case numbers to write.
        shape: array shape ``(D, H, W)``.
        seed: dataset seed.

    Returns:
        The image files written.
    """
    training = folder / "RawData" / "Training"
    affine = synapse_affine(shape)
    image_geometry = Geometry.from_affine(affine, tuple(shape), "int16")
    label_geometry = Geometry.from_affine(affine, tuple(shape), "uint8")
    written = []
    for number in numbers:
        phantom = _phantom(number, shape, seed)
        image = training / "img" / f"img{number:04d}.nii.gz"
        label = training / "label" / f"label{number:04d}.nii.gz"
        save_like(phantom.image, image_geometry, image, kind="image", dtype=np.int16)
        save_like(phantom.label, label_geometry, label, kind="label", dtype=np.uint8)
        written.append(image)
    return written


def _write_npz(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, image=image, label=label)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    import h5py

    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("image", data=image, compression="gzip", compression_opts=4)
            handle.create_dataset("label", data=label, compression="gzip", compression_opts=4)


def write_transunet(folder: Path, numbers: Sequence[int], shape: Sequence[int], seed: int) -> list[Path]:
    """Write cases in TransUNet's preprocessed layout: training slices, test volumes and list files.

    Args:
        folder: the dataset folder.
        numbers: case numbers to write (at least two; split by :func:`transunet_split`).
        shape: array shape ``(D, H, W)`` of the underlying CT volumes.
        seed: dataset seed.

    Returns:
        The files written (slices, volumes, lists).
    """
    test_numbers = set(transunet_split(numbers)[1])
    written: list[Path] = []
    slice_names: list[str] = []
    for number in numbers:
        phantom = _phantom(number, shape, seed)
        image = np.ascontiguousarray(np.transpose(transunet_normalise(phantom.image), (2, 0, 1)))
        label = np.ascontiguousarray(np.transpose(btcv_to_transunet(phantom.label), (2, 0, 1)))
        case = f"case{number:04d}"
        if number in test_numbers:
            path = folder / "test_vol_h5" / f"{case}.npy.h5"
            _write_h5(path, image, label)
            written.append(path)
            continue
        for k in range(image.shape[0]):
            name = f"{case}_slice{k:03d}"
            path = folder / "train_npz" / f"{name}.npz"
            _write_npz(path, image[k], label[k])
            slice_names.append(name)
            written.append(path)
    lists = folder / "lists" / "lists_Synapse"
    test_names = [f"case{n:04d}" for n in numbers if n in test_numbers]
    all_names = [f"case{n:04d}" for n in numbers]
    for name, lines in (("train.txt", slice_names), ("test_vol.txt", test_names), ("all.lst", all_names)):
        written.append(atomic_write_text(lists / name, "".join(f"{line}\n" for line in lines)))
    return written


def write_synapse(
    out: str | os.PathLike,
    cases: int,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    output_format: str = "raw",
) -> list[Path]:
    """Write a synthetic Synapse multi-organ CT dataset into a new or empty folder.

    Args:
        out: the dataset folder.
        cases: number of cases (``transunet`` needs at least two: one training, one test).
        shape: CT array shape ``(D, H, W)`` (patient left, posterior, superior); the physical field
            of view stays 360 x 360 x 192 mm, so the default is 1.41 x 1.41 x 3 mm voxels.
        seed: random seed; the same seed gives identical arrays.
        output_format: ``"raw"`` (BTCV NIfTI files) or ``"transunet"`` (TransUNet's npz slices and h5 volumes).

    Returns:
        The files written (raw: the image files; transunet: every file).

    Raises:
        ConfigError: unknown format, too few cases, a bad shape or a negative seed.
        InputError: ``out`` is not empty.
    """
    if output_format not in SYNAPSE_FORMATS:
        raise unknown_choice("Synapse format", output_format, SYNAPSE_FORMATS)
    shape = checked_settings(cases, shape, seed, minimum_cases=2 if output_format == "transunet" else 1)
    folder = prepare_output(out)
    numbers = case_numbers(int(cases))
    if output_format == "raw":
        return write_raw(folder, numbers, shape, seed)
    return write_transunet(folder, numbers, shape, seed)
