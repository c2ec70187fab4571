"""Helpers shared by the robustness tests (a plain module with a unique name, imported by the test files).

Files are written with nibabel directly, independently of ``medseg.io.save_like``, so that the header
fields a test sets (qform/sform codes, scaling, data type) are exactly the ones on disk.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np

BRATS_MODALITIES = ["t1", "t1ce", "t2", "flair"]
BRATS_SHAPE = (20, 18, 14)


def write_nifti(
    path: Path,
    array: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    qform: np.ndarray | None = None,
    qform_code: int = 1,
    sform_code: int = 1,
    slope: float | None = None,
    inter: float | None = None,
    on_disk_dtype: object = None,
) -> Path:
    """Write ``array`` as NIfTI-1 with the given header fields, through nibabel only.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        array: the data, any shape nibabel accepts (2D to 7D).
        affine: the sform (and qform unless ``qform`` is given); identity when ``None``.
        qform: a qform that differs from the sform.
        qform_code: code stored with the qform.
        sform_code: code stored with the sform.
        slope: ``scl_slope`` to store (the array is then written raw, unscaled).
        inter: ``scl_inter`` to store.
        on_disk_dtype: data type to store; default the array's.

    Returns:
        ``path``.
    """
    import nibabel as nib

    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    header = nib.Nifti1Header()
    header.set_data_dtype(on_disk_dtype or array.dtype)
    image = nib.Nifti1Image(array, affine, header=header)
    image.set_qform(affine if qform is None else qform, code=qform_code)
    image.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(str(path))
    if slope is not None or inter is not None:
        # Patch the stored scaling after writing (nibabel would choose its own): readers must apply it.
        raw = bytearray(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
        struct.pack_into("<ff", raw, 112, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
        path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


def head_phantom(shape: tuple[int, ...] = BRATS_SHAPE, seed: int = 0, low: int = 200, high: int = 800) -> np.ndarray:
    """A box of random positive intensities inside a zero background, ``int16``."""
    rng = np.random.default_rng(seed)
    head = np.zeros(shape, dtype=np.int16)
    inner = tuple(slice(max(1, n // 6), max(2, n - n // 6)) for n in shape)
    head[inner] = rng.integers(low, high, size=head[inner].shape)
    return head


def write_brats_case(
    folder: Path,
    case_id: str,
    affine: np.ndarray | None = None,
    seed: int = 0,
    names: list[str] | None = None,
    shape: tuple[int, int, int] = BRATS_SHAPE,
) -> dict[str, Path]:
    """Write one BraTS-style case folder ``<folder>/<case_id>_<modality>.nii.gz``; returns modality -> path."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    paths = {}
    for index, name in enumerate(names or BRATS_MODALITIES):
        paths[name] = write_nifti(folder / f"{case_id}_{name}.nii.gz", head_phantom(shape, seed + index), affine)
    return paths


def plain(value: object) -> object:
    """Tuples to lists, recursively (dataclasses.asdict output made JSON-like)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def make_brats_model(folder: Path) -> Path:
    """A random tiny 3D U-Net model folder for BraTS 2021 (4 modalities, sigmoid TC/WT/ET)."""
    import torch

    from medseg.config import ModelConfig
    from medseg.networks import create
    from medseg.pipelines.model_folder import save_model_folder
    from medseg.transforms import BratsTransformConfig

    torch.manual_seed(0)
    model = create("unet", 3, 4, 3, variant="tiny")
    preset = BratsTransformConfig(convention="brats2021", patch_size=(16, 16, 16), num_samples=1)
    config = ModelConfig(
        network="unet",
        spatial_dims=3,
        in_channels=4,
        out_channels=3,
        variant="tiny",
        modalities=list(BRATS_MODALITIES),
        dataset="brats2021",
        output_activation="sigmoid",
        class_names=["TC", "WT", "ET"],
        label_values=[0, 1, 2, 4],
        regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]},
        orientation="RAS",
        patch_size=[16, 16, 16],
        preprocessing={"preset": "brats", "config": plain(dataclasses.asdict(preset))},
    )
    save_model_folder(folder, model, config)
    return folder


def make_ct_model(folder: Path, label_values: list[int] | None = None, spacing: tuple | None = (1.0, 1.0, 2.0)) -> Path:
    """A random tiny 3D U-Net model folder for one CT channel (softmax over 3 classes), Synapse preset.

    Args:
        folder: where to write it.
        label_values: the label value of each of the 3 output channels (default ``[0, 1, 2]``).
        spacing: the preset's resampling target in mm, or ``None`` to keep the native grid.
    """
    import torch

    from medseg.config import ModelConfig
    from medseg.networks import create
    from medseg.pipelines.model_folder import save_model_folder
    from medseg.transforms import SynapseTransformConfig

    torch.manual_seed(1)
    model = create("unet", 3, 1, 3, variant="tiny")
    with torch.no_grad():  # a clear preference per voxel, so argmax ties never decide a test
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    preset = SynapseTransformConfig(spacing=spacing, patch_size=(16, 16, 16), num_samples=1)
    config = ModelConfig(
        network="unet",
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        variant="tiny",
        modalities=["ct"],
        dataset="synapse",
        output_activation="softmax",
        class_names=["background", "a", "b"],
        label_values=label_values or [0, 1, 2],
        orientation="RAS",
        patch_size=[16, 16, 16],
        preprocessing={"preset": "synapse", "config": plain(dataclasses.asdict(preset))},
    )
    save_model_folder(folder, model, config)
    return folder


def ct_phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-like int16 volume: air (-1000) around a body of soft tissue with brighter blobs."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -1000, dtype=np.int16)
    inner = tuple(slice(max(0, n // 8), max(1, n - n // 8)) for n in shape)
    ct[inner] = rng.integers(-50, 250, size=ct[inner].shape)
    return ct


def only_files(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden ones included), as sorted relative paths."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
