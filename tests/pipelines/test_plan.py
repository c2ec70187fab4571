"""``medseg plan``: nnU-Net's planning rules, and a configuration that ``medseg train --config`` accepts and trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.config import load_train_config
from medseg.data import BRATS2021, SYNAPSE
from medseg.errors import InputError
from medseg.pipelines.nnunet_fingerprint import Fingerprint, dataset_fingerprint
from medseg.pipelines.plan import (
    REFERENCE_BUDGET,
    activation_estimate,
    plan_dataset,
    plan_from_fingerprint,
    target_spacing,
    topology_for,
)


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan") / "brats"
    assert main(["synth", "brats", str(root), "--cases", "3", "--shape", "24", "24", "16"]) == 0
    return root


@pytest.mark.parametrize(("spacing", "patch"), [
    ((1.0, 1.0, 1.0), (128, 128, 128)),
    ((1.0, 1.0, 1.0), (128, 160, 112)),
    ((0.78, 0.78, 3.0), (192, 160, 64)),
    ((3.0, 0.7, 0.7), (40, 224, 192)),
    ((1.5, 1.0, 5.5), (96, 128, 24)),
    ((2.0, 2.0, 2.0), (14, 18, 14)),
])
def test_topology_matches_nnunets_pooling_and_kernel_rule(spacing: tuple, patch: tuple) -> None:
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pools, kernels, _, divisor = get_pool_and_conv_props(spacing, patch, 4, 999)
    topology = topology_for(patch, spacing)
    assert [list(s) for s in topology.strides] == [list(p) for p in pools]
    assert [list(k) for k in topology.kernel_sizes] == [list(k) for k in kernels]
    assert list(topology.divisor) == list(divisor)
    assert topology.features[0] == 32 and max(topology.features) <= 320


def test_target_spacing_is_the_median_unless_one_axis_is_much_coarser() -> None:
    iso = np.array([[1.0, 1.0, 1.2], [1.0, 1.0, 1.0], [0.9, 0.9, 1.0]])
    np.testing.assert_allclose(target_spacing(iso, np.full((3, 3), 100.0)), [1.0, 1.0, 1.0])
    thick = np.array([[0.8, 0.8, 5.0], [0.8, 0.8, 2.5], [0.8, 0.8, 5.0], [0.8, 0.8, 5.0], [0.8, 0.8, 1.25]])
    shapes = np.tile([512.0, 512.0, 60.0], (5, 1))
    np.testing.assert_allclose(target_spacing(thick, shapes), [0.8, 0.8, np.percentile([5, 2.5, 5, 5, 1.25], 10)])


def test_a_brats_sized_dataset_gets_six_stages_within_the_memory_budget() -> None:
    shapes = np.tile([140.0, 172.0, 137.0], (20, 1))
    fingerprint = Fingerprint(BRATS2021, tuple(map(str, range(20))), np.ones((20, 3)), shapes, np.full(20, 0.4), {})
    plan = plan_from_fingerprint(fingerprint)
    assert len(plan.topology.features) == 6 and plan.topology.features[-1] == 320
    assert all(p % d == 0 for p, d in zip(plan.patch_size, plan.topology.divisor))
    assert activation_estimate(plan.patch_size, plan.topology) * plan.batch_size <= REFERENCE_BUDGET
    assert not plan.resample and plan.batch_size == 2
    assert 96 <= min(plan.patch_size) and max(plan.patch_size) <= 176


def test_thick_slice_ct_keeps_in_plane_kernels_first() -> None:
    spacings = np.tile([0.78, 0.78, 3.0], (30, 1))
    shapes = np.tile([512.0, 512.0, 140.0], (30, 1))
    plan = plan_from_fingerprint(Fingerprint(SYNAPSE, tuple(map(str, range(30))), spacings, shapes, np.ones(30), {}))
    assert plan.topology.kernel_sizes[0] == (3, 3, 1)
    assert plan.topology.strides[1] == (2, 2, 1)
    assert plan.patch_size[0] > plan.patch_size[2]


def test_fingerprint_reads_spacing_shapes_and_foreground_intensities(brats: Path) -> None:
    fingerprint = dataset_fingerprint(brats)
    assert fingerprint.case_ids == ("BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002")
    np.testing.assert_allclose(fingerprint.spacings, np.tile([10.0, 10.0, 155 / 16], (3, 1)), rtol=1e-5)
    assert np.all(fingerprint.shapes_after_crop <= [24, 24, 16]) and np.all(fingerprint.shapes_after_crop >= 8)
    assert set(fingerprint.intensity) == {"t1", "t1ce", "t2", "flair"}
    stats = fingerprint.intensity["flair"]
    assert stats["percentile_00_5"] <= stats["median"] <= stats["percentile_99_5"] and stats["std"] > 0


def test_planned_brats_config_loads_and_trains(brats: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "plan.yaml"
    assert main(["plan", str(brats), "--output", str(config_path)]) == 0
    config = load_train_config(config_path)
    planned = plan_dataset(brats)
    assert config.model == "unet" and config.patch_size == planned["plan"]["patch_size"]
    assert config.network_kwargs["strides"] == planned["train_config"]["network_kwargs"]["strides"]
    run = tmp_path / "run"
    assert main(["train", str(brats), "--output", str(run), "--config", str(config_path), "--epochs", "1",
                 "--max-steps", "1", "--device", "cpu", "--num-workers", "0", "--n-folds", "3",
                 "--val-interval", "0", "--no-progress"]) == 0
    assert (run / "model" / "weights.safetensors").is_file()
    resolved = load_train_config(run / "config.yaml")
    assert resolved.patch_size == config.patch_size and resolved.network_kwargs == config.network_kwargs


def test_transunet_slices_cannot_be_planned(tmp_path: Path) -> None:
    assert main(["synth", "synapse", str(tmp_path / "tu"), "--cases", "2", "--shape", "16", "16", "8",
                 "--format", "transunet"]) == 0
    with pytest.raises(InputError, match="no voxel spacing"):
        plan_dataset(tmp_path / "tu")
