"""`medseg segment`: outputs carry exactly the input's geometry, folder runs survive broken cases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.config import ModelConfig
from medseg.io import Geometry, load_volume, read_geometry, save_like

SHAPE = (24, 20, 16)
MODALITIES = ["t1", "t1ce", "t2", "flair"]


@pytest.fixture(scope="module")
def brats_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

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
        modalities=MODALITIES,
        dataset="brats2021",
        output_activation="sigmoid",
        class_names=["TC", "WT", "ET"],
        label_values=[0, 1, 2, 4],
        regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]},
        orientation="RAS",
        patch_size=[16, 16, 16],
        preprocessing={"preset": "brats", "config": _plain(dataclasses.asdict(preset))},
    )
    folder = tmp_path_factory.mktemp("model")
    save_model_folder(folder, model, config)
    return folder


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_case(folder: Path, case_id: str, affine: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    head = np.zeros(SHAPE, dtype=np.int16)
    head[4:20, 3:17, 2:14] = 1
    for name in MODALITIES:
        data = (head * rng.integers(200, 800, SHAPE)).astype(np.int16)
        save_like(data, Geometry.from_affine(affine, SHAPE, "int16"), folder / f"{case_id}_{name}.nii.gz", kind="image")


def _oblique() -> np.ndarray:
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.2, 2.5])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    return affine


AFFINES = {
    "RAS": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "LPS": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "oblique": _oblique(),
}


@pytest.mark.parametrize("orientation", sorted(AFFINES))
def test_output_has_exactly_the_input_geometry(orientation: str, brats_model: Path, tmp_path: Path) -> None:
    case = tmp_path / "in" / "case1"
    _write_case(case, "case1", AFFINES[orientation], seed=1)
    code = main(["segment", str(case), "--model", str(brats_model), "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0
    out = tmp_path / "out" / "case1.nii.gz"
    reference = read_geometry(case / "case1_t1.nii.gz")
    written = read_geometry(out)
    assert written.shape == reference.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-6)
    assert (written.qform_code, written.sform_code) == (reference.qform_code, reference.sform_code)
    labels = load_volume(out).array
    assert set(np.unique(labels)) <= {0, 1, 2, 4}


def test_folder_run_skips_a_broken_case_and_exits_1(brats_model: Path, tmp_path: Path) -> None:
    _write_case(tmp_path / "in" / "good", "good", AFFINES["RAS"], seed=2)
    broken = tmp_path / "in" / "broken"
    _write_case(broken, "broken", AFFINES["RAS"], seed=3)
    (broken / "broken_flair.nii.gz").unlink()
    code = main(["segment", str(tmp_path / "in"), "--model", str(brats_model), "--output", str(tmp_path / "out")])
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.nii.gz"]


def test_probabilities_are_float16_on_the_input_grid(brats_model: Path, tmp_path: Path) -> None:
    case = tmp_path / "in" / "c"
    _write_case(case, "c", AFFINES["LPS"], seed=4)
    assert main(["segment", str(case), "--model", str(brats_model), "--output", str(tmp_path / "o"), "--probabilities"]) == 0
    with np.load(tmp_path / "o" / "c_probabilities.npz", allow_pickle=False) as saved:
        probs = saved["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (3, *SHAPE)
        assert list(saved["class_names"]) == ["TC", "WT", "ET"]
        assert np.all((probs >= 0) & (probs <= 1))


def test_single_case_input_error_exits_2_and_writes_nothing(brats_model: Path, tmp_path: Path) -> None:
    case = tmp_path / "in" / "c"
    _write_case(case, "c", AFFINES["RAS"], seed=5)
    (case / "c_t2.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "o"
    assert main(["segment", str(case), "--model", str(brats_model), "--output", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_keep_largest_component_removes_small_islands() -> None:
    from medseg.pipelines.segment import keep_largest_components

    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 2
    labels[8, 8, 8] = 2
    labels[7:9, 1:3, 1:3] = 1
    kept = keep_largest_components(labels)
    assert kept[8, 8, 8] == 0
    assert (kept == 2).sum() == 64 and (kept == 1).sum() == 8


def test_case_ids_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    from medseg.errors import InputError
    from medseg.pipelines.segment import output_path

    with pytest.raises(InputError, match="outside the output folder"):
        output_path(tmp_path, "../evil", ".nii.gz")


def test_nonfinite_flag_turns_a_refused_case_into_a_segmented_one(brats_model: Path, tmp_path: Path) -> None:
    case = tmp_path / "in" / "c"
    _write_case(case, "c", AFFINES["RAS"], seed=6)
    import nibabel as nib

    t2 = nib.load(case / "c_t2.nii.gz")
    data = np.asarray(t2.dataobj, dtype=np.float32)
    data[10, 10, 8] = np.nan  # medseg never writes NaN, so the broken input is made with nibabel
    header = t2.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(data, t2.affine, header), case / "c_t2.nii.gz")
    args = ["segment", str(case), "--model", str(brats_model), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    assert main([*args, "--nonfinite", "replace"]) == 0
    assert (tmp_path / "o" / "c.nii.gz").is_file()
